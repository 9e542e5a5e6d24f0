r"""How a relaxation's temperature trades bias for gradient noise: one trained run, several tau.

  python -m studies.gradients.temperature --run=WORKDIR --output=DIR [--temperatures=0.1,0.5,1,2]

For a run of a family whose trainer differentiates relaxed terms at a
temperature (``Model.training_terms``; the config fields
``model.initial_temperature`` and ``model.min_temperature`` fix it when both are
set to tau), on the first ``--num_examples`` test images as the model sees
them and at the run's own parameters, per tau:
  relaxed_elbo   the relaxed objective's mean (what training maximizes at tau);
  honest_elbo    the ELBO with exact discrete codes (``Model.terms``): the bias
                 of the relaxation is relaxed_elbo - honest_elbo;
  total_variance E||g - E g||^2 of one minibatch gradient of the relaxed
                 objective over all parameters, from ``--repetitions`` draws of
                 the noise (``estimators.moments``), and relative_std =
                 sqrt(total_variance) / ||E g||.
Writes DIR/temperature.json and DIR/temperature.md (refused if they exist).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only reads data here.

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from studies.gradients import estimators
from vae_jax import models
from vae_jax.evaluation import evaluator
from vae_jax.evaluation import saved_run
from vae_jax.models import interface
from vae_jax.training import loop as train

_RUN = flags.DEFINE_string("run", None, "A trained run's workdir.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write (created).", required=True)
_TEMPERATURES = flags.DEFINE_list("temperatures", ["0.1", "0.25", "0.5", "1.0", "2.0"],
                                  "The temperatures tau.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 100, "Test images in the minibatch.")
_REPETITIONS = flags.DEFINE_integer("repetitions", 200, "Gradient draws per temperature.")
_NUM_BOUND = flags.DEFINE_integer("num_bound_draws", 20, "Noise draws averaged per bound.")
OUTPUTS = ("temperature.json", "temperature.md")


def at_temperature(run: saved_run.Run, tau: float) -> interface.Model:
  """The run's model with its relaxation held at ``tau`` (a config of the same family)."""
  config = run.config.copy_and_resolve_references()
  config.model.initial_temperature = config.model.min_temperature = tau
  model = models.build(config, run.dataset.info)
  interface.require(model, ("training_terms",), "The temperature study")
  return model


def measure(run: saved_run.Run, tau: float, batch: interface.Batch, repetitions: int,
            num_bound_draws: int, seed: int = 0) -> dict:
  model, params = at_temperature(run, tau), run.params
  n = len(batch["image"])
  keys_for = lambda key: jax.random.split(key, n)

  # The parameters and images go through an optimization barrier: closed over as they are,
  # XLA would constant-fold the encoder's forward pass at compile time, slowly.
  def relaxed(p, key):
    p, b = jax.lax.optimization_barrier((p, batch))
    return jnp.mean(model.training_terms(p, b, keys_for(key), jnp.int32(0))["elbo"])

  def honest(p, key):
    return jnp.mean(model.terms(p, batch, keys_for(key))["elbo"])

  bound_keys = jax.random.split(jax.random.PRNGKey(seed + 1), num_bound_draws)
  relaxed_elbo = float(jnp.mean(jax.jit(jax.vmap(relaxed, (None, 0)))(params, bound_keys)))
  honest_elbo = float(jnp.mean(jax.jit(jax.vmap(honest, (None, 0)))(params, bound_keys)))
  mean, var = estimators.moments(lambda key: jax.grad(relaxed)(params, key),
                                 jax.random.PRNGKey(seed), repetitions)
  total = float(np.sum(estimators.flat(var)))
  norm = float(np.linalg.norm(estimators.flat(mean)))
  return {"temperature": tau, "relaxed_elbo": relaxed_elbo, "honest_elbo": honest_elbo,
          "relaxation_bias": relaxed_elbo - honest_elbo, "total_variance": total,
          "mean_gradient_norm": norm, "relative_std": math.sqrt(total) / norm}


def markdown(record: dict) -> str:
  lines = [f"Run `{record['run']}` (step {record['step']}), {record['num_examples']} test images, "
           f"{record['repetitions']} gradient draws per τ; nats per example.", "",
           "| τ | relaxed ELBO | honest ELBO (discrete z) | relaxed − honest | "
           "total gradient variance | √var / ‖E g‖ |", "|---|---|---|---|---|---|"]
  for r in record["rows"]:
    lines.append(f"| {r['temperature']:g} | {r['relaxed_elbo']:.2f} | {r['honest_elbo']:.2f} | "
                 f"{r['relaxation_bias']:+.2f} | {r['total_variance']:.4g} | "
                 f"{r['relative_std']:.3g} |")
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  paths = [os.path.join(_OUTPUT.value, name) for name in OUTPUTS]
  if any(os.path.exists(p) for p in paths):
    sys.exit(f"FATAL {_OUTPUT.value} holds {', '.join(OUTPUTS)} already; move them away.")
  start = time.time()
  try:
    run = saved_run.load_run(_RUN.value)
    temperatures = [float(t) for t in _TEMPERATURES.value]
    data = {k: v[:_NUM_EXAMPLES.value] for k, v in run.dataset.arrays("test").items()}
    batch = jax.tree.map(jnp.asarray, evaluator.eval_batch(
        data, np.arange(len(data["image"])), run.preprocessing, run.config.eval.seed))
    rows = [measure(run, tau, batch, _REPETITIONS.value, _NUM_BOUND.value)
            for tau in temperatures]
  except (*train.USER_ERRORS, ValueError) as e:
    sys.exit(f"FATAL {type(e).__name__}: {e}")
  record = {"run": _RUN.value, "step": run.step, "num_examples": len(batch["image"]),
            "repetitions": _REPETITIONS.value, "rows": rows,
            "wall_time_s": time.time() - start}
  os.makedirs(_OUTPUT.value, exist_ok=True)
  with open(paths[0], "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  with open(paths[1], "w", encoding="utf-8") as f:
    f.write(markdown(record))
  print(markdown(record))
  print(f"Wrote {', '.join(paths)} in {record['wall_time_s']:.0f} s.")


if __name__ == "__main__":
  app.run(main)
