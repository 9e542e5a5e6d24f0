"""A saved run's representation scored by every disentanglement metric: disentanglement.json.

The representation is the encoder mean (``Model.encode``) of the run's selected
checkpoint (results.json's ``selection.checkpoint_step``; the latest for a run
still going), on the images the model sees (the run's preprocessing, keyed per
image as in evaluation), jit-compiled over fixed batches of ``BATCH`` images.
Each metric gets its own ``RandomState(seed)`` (disentanglement_lib's
``evaluation.random_seed = 0``), so reruns agree to the last digit and
metrics do not depend on which others ran. ``scale`` multiplies every sample
count (1: disentanglement_lib's defaults); it is recorded, as is the time.
The file is written next to results.json and never replaced.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vae_jax.data import datasets
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.evaluation import saved_run
from vae_jax.evaluation.disentanglement import beta_vae
from vae_jax.evaluation.disentanglement import codes as codes_lib
from vae_jax.evaluation.disentanglement import dci
from vae_jax.evaluation.disentanglement import factor_vae
from vae_jax.evaluation.disentanglement import mig
from vae_jax.evaluation.disentanglement import modularity
from vae_jax.evaluation.disentanglement import sap
from vae_jax.evaluation.disentanglement import unsupervised
from vae_jax.training import workdir as workdir_lib

OUTPUT_FILE = "disentanglement.json"
BATCH = 1024

# name -> (score function, its sample-count arguments at disentanglement_lib's defaults).
METRICS: dict[str, tuple[Callable[..., dict], dict[str, int]]] = {
    "beta_vae": (beta_vae.score, {"num_train": 10_000, "num_eval": 5_000}),
    "factor_vae": (factor_vae.score, {"num_train": 10_000, "num_eval": 5_000,
                                      "num_variance_estimate": 10_000}),
    "mig": (mig.score, {"num_train": 10_000}),
    "dci": (dci.score, {"num_train": 10_000, "num_test": 5_000}),
    "sap": (sap.score, {"num_train": 10_000, "num_test": 5_000}),
    "modularity_explicitness": (modularity.score, {"num_train": 10_000, "num_test": 5_000}),
    "unsupervised": (unsupervised.score, {"num_train": 10_000}),
}

# The headline number of each metric: the columns sweep tables show.
HEADLINES = {"beta_vae": "eval_accuracy", "factor_vae": "eval_accuracy", "mig": "discrete_mig",
             "dci": "disentanglement", "sap": "SAP_score",
             "modularity_explicitness": "modularity_score",
             "unsupervised": "gaussian_total_correlation"}


def encoder_mean(model, params, preprocessing: str, seed: int) -> codes_lib.Representation:
  """uint8 images [B, H, W, C] -> encoder means [B, d] (numpy), compiled once per BATCH."""
  @jax.jit
  def encode(images: jax.Array) -> jax.Array:
    ids = jnp.arange(images.shape[0])
    return model.encode(params, {"image": evaluation.eval_inputs(images, ids, preprocessing,
                                                                   seed)})

  def represent(images: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(images), BATCH):
      chunk = images[start:start + BATCH]
      padded = np.concatenate([chunk, np.zeros((BATCH - len(chunk), *chunk.shape[1:]),
                                               chunk.dtype)])
      out.append(np.asarray(encode(padded))[:len(chunk)])
    return np.concatenate(out).astype(np.float64)
  return represent


def scaled(counts: dict[str, int], scale: float) -> dict[str, int]:
  return {k: max(2, int(round(v * scale))) for k, v in counts.items()}


def score_all(sampler, representation: codes_lib.Representation, *, seed: int = 0,
              scale: float = 1.0, metrics: Optional[list[str]] = None) -> dict[str, Any]:
  """{metric: {its scores..., "seconds", "sample_counts"}} for ``metrics`` (default: all)."""
  out = {}
  for name in metrics or list(METRICS):
    fn, counts = METRICS[name]
    counts = scaled(counts, scale)
    start = time.time()
    scores = fn(sampler, representation, np.random.RandomState(seed), **counts)
    out[name] = {**scores, "sample_counts": counts, "seconds": time.time() - start}
    logging.info("%s: %s (%.0f s)", name, {k: round(v, 4) for k, v in scores.items()},
                 out[name]["seconds"])
  return out


def selected_step(workdir: str) -> Optional[int]:
  """The checkpoint results.json says was selected; None (the latest) before it exists."""
  results = workdir_lib.read_json(os.path.join(workdir, workdir_lib.RESULTS_FILE))
  return None if not results else results["selection"].get("checkpoint_step")


def score_run(workdir: str, *, seed: int = 0, scale: float = 1.0,
              metrics: Optional[list[str]] = None) -> dict[str, Any]:
  """Scores the run in ``workdir`` and writes WORKDIR/disentanglement.json (refused if present)."""
  start = time.time()
  workdir = os.path.abspath(workdir)
  out_path = os.path.join(workdir, OUTPUT_FILE)
  if os.path.exists(out_path):
    raise workdir_lib.WorkdirError(f"{out_path} exists: this run was already scored (the "
                                   f"scores are deterministic). Move it away to rescore.")
  unknown = sorted(set(metrics or ()) - set(METRICS))
  if unknown:
    raise ValueError(f"--metrics: unknown {unknown}; valid: {', '.join(METRICS)}.")
  if not scale > 0:
    raise ValueError(f"--scale={scale}: the sample counts' factor must be > 0 (1: the defaults).")
  run = saved_run.load_run(workdir, selected_step(workdir))
  sampler = datasets.ground_truth_sampler(run.dataset.name, run.config.data.manual_dir)
  representation = encoder_mean(run.model, run.params, run.preprocessing, run.config.eval.seed)
  scores = score_all(sampler, representation, seed=seed, scale=scale, metrics=metrics)
  record = {"step": run.step, "checkpoint": run.checkpoint, "dataset": run.dataset.name,
            "representation": "encoder mean", "seed": seed, "scale": scale,
            "factors": list(sampler.grid.names), "scores": scores,
            "wall_time_s": time.time() - start, "versions": workdir_lib.versions()}
  workdir_lib.write_json(out_path, record)
  logging.info("Wrote %s", out_path)
  return record


def headline(record: dict[str, Any]) -> dict[str, float]:
  """{metric: its headline score} of a disentanglement.json (the tables' columns)."""
  return {name: record["scores"][name][key] for name, key in HEADLINES.items()
          if name in record.get("scores", {})}
