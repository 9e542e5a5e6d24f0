"""Why q must depend on x: a global q(z), the amortized q(z|x), and per-point SVI.

Three posteriors on the same kind of decoder, all trained or fitted to the ELBO:

- a **global** q(z), one Gaussian for the whole dataset (``model.encoder=global``).
  The ELBO's reconstruction term then averages log p(x|z) over the same z for
  every x, so the best decoder ignores z and outputs the data mean, and the best
  q is the prior: KL -> 0. The latent variable is useless.
- the **amortized** encoder q(z|x) of a standard VAE;
- a **free q_i per test point** (``studies.amortization.svi``), fitted with the decoder fixed,
  from the encoder's q ("refined") or from the prior ("SVI from scratch").

On test data it reports, after Cremer et al. 2018 ("Inference suboptimality in
variational autoencoders"), the amortization gap ELBO(refined) - ELBO(encoder)
(what sharing one network for all x costs) and the approximation gap
log p(x) - ELBO(refined) (what a diagonal Gaussian costs), with log p(x)
estimated by the IWAE bound.

``run_study`` trains (or reuses) the two runs in DIR/amortized and DIR/global and
writes DIR/amortization.{json,md} and PNGs, never replacing existing ones.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from studies.amortization import report
from studies.amortization import svi
from vae_jax import models
from vae_jax import progress
from vae_jax import validation
from vae_jax.core import distributions as D
from vae_jax.data import datasets
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.evaluation import saved_run as checkpoint_eval
from vae_jax.models import interface
from vae_jax.objectives import iwae
from vae_jax.training import loop as train
from vae_jax.training import workdir as workdir_lib

# What the study asks of a model beyond the interface: a diagonal-Gaussian q(z|x) and
# the decoder's log-likelihood of any z.
NEEDS = ("posterior", "log_likelihood")

RUNS = {"amortized": "mlp", "global": "global"}   # run directory -> model.encoder
# Keys of the per-example random streams (folded into study.seed, then the example id).
_ELBO_STREAM, _SVI_STREAM, _IWAE_STREAM = 0, 1, 2
STUDY_FIELDS = {"num_test": 1, "batch_size": 1, "svi_steps": 1, "svi_samples": 1,
                "elbo_samples": 1, "iwae_samples": 1, "iwae_chunk_size": 1, "seed": 0,
                "num_pictures": 1}   # integer fields and their minimum


def validate_study(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first bad config.study field."""
  if "study" not in config:
    raise validation.ConfigError("config.study is missing; start from "
                                 "studies/amortization/config.py.")
  for field, minimum in STUDY_FIELDS.items():
    value = config.study.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
      raise validation.ConfigError(
          f"config.study.{field}={value!r} is invalid: must be an integer >= {minimum}.")
  lr = config.study.get("svi_learning_rate")
  if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
    raise validation.ConfigError(
        f"config.study.svi_learning_rate={lr!r} is invalid: must be a number > 0.")


def run_config(config: ml_collections.ConfigDict, encoder: str) -> ml_collections.ConfigDict:
  """The training config of one run: the study's config without ``study``, this encoder."""
  out = ml_collections.ConfigDict(workdir_lib.config_dict(config))
  del out["study"]
  out.model.encoder = encoder
  return out


def _same_run(stored: dict, requested: dict, prefix: str = "") -> list[str]:
  """Fields that differ (where the data files live may differ: it is not the data)."""
  if isinstance(stored, dict) and isinstance(requested, dict):
    return [f for key in sorted(set(stored) | set(requested))
            for f in _same_run(stored.get(key), requested.get(key), f"{prefix}{key}.")]
  field = prefix.rstrip(".")
  return [] if stored == requested or field in ("data.manual_dir", "data.data_dir") else [field]


def train_runs(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains DIR/amortized and DIR/global (a finished one is reused if its config matches)."""
  runs = {}
  for name, encoder in RUNS.items():
    run_dir = os.path.join(workdir, name)
    cfg = run_config(config, encoder)
    if os.path.exists(os.path.join(run_dir, workdir_lib.RESULTS_FILE)):
      differ = _same_run(workdir_lib.read_json(os.path.join(run_dir, workdir_lib.CONFIG_FILE)),
                         workdir_lib.config_dict(cfg))
      if differ:
        raise workdir_lib.WorkdirError(
            f"{run_dir} holds a finished run with another config (fields differ: "
            f"{', '.join(differ)}). Use a new --workdir for this study.")
      logging.info("Reusing the finished run in %s.", run_dir)
    else:
      logging.info("Training the %s run (model.encoder=%s) in %s.", name, encoder, run_dir)
      train.train_and_evaluate(cfg, run_dir)
    runs[name] = checkpoint_eval.load_run(run_dir)
  return runs


def _keys(seed: int, stream: int, ids: jax.Array) -> jax.Array:
  base = jax.random.fold_in(jax.random.PRNGKey(seed), stream)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base, ids)


@functools.partial(jax.jit, static_argnums=(0, 6))
def _elbo(model: interface.Model, params: dict, x: jax.Array, mean: jax.Array,
          logvar: jax.Array, keys: jax.Array, num_samples: int) -> dict[str, jax.Array]:
  """Per-example ELBO, rate and distortion, each an average over num_samples draws."""
  sample_keys = svi.sample_keys(keys, num_samples)
  likelihood = svi.DecoderLikelihood(model)((params, x))
  terms = svi.elbo_estimate(mean, logvar, likelihood, sample_keys, chunk=10)
  return {k: terms[k] for k in ("elbo", "rate", "distortion")}


@functools.partial(jax.jit, static_argnums=0)
def _encode(model: interface.Model, params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  q = model.posterior(params, {"image": x})
  return q.mean, q.logvar


@functools.partial(jax.jit, static_argnums=(0, 6, 7))
def _iwae(model: interface.Model, params: dict, x: jax.Array, mean: jax.Array,
          logvar: jax.Array, keys: jax.Array, num_samples: int, chunk_size: int) -> jax.Array:
  """IWAE log p(x) with a given diagonal-Gaussian q (the encoder's or a refined one)."""
  log_weights = iwae.gaussian_log_weights(D.DiagonalGaussian(mean, logvar),
                                          model.log_likelihood(params, {"image": x}), keys)
  return iwae.log_px(log_weights, num_samples, chunk_size)


def _batch(runs: dict, study: ml_collections.ConfigDict, x: jax.Array,
           ids: jax.Array) -> dict[str, np.ndarray]:
  """Every per-example figure of the study for one batch of test inputs."""
  amortized, glob = runs["amortized"], runs["global"]
  model, params = amortized.model, amortized.params
  elbo_keys = _keys(study.seed, _ELBO_STREAM, ids)    # common random numbers for every q
  svi_keys = _keys(study.seed, _SVI_STREAM, ids)
  iwae_keys = _keys(study.seed, _IWAE_STREAM, ids)
  fit = functools.partial(svi.refine, model, params, x, keys=svi_keys,
                          num_steps=study.svi_steps, num_samples=study.svi_samples,
                          learning_rate=study.svi_learning_rate)
  enc_mean, enc_logvar = _encode(model, params, x)
  refined = fit(enc_mean, enc_logvar)
  zeros = jnp.zeros_like(enc_mean)
  scratch = fit(zeros, zeros)
  glob_mean, glob_logvar = _encode(glob.model, glob.params, x)
  out = {}
  for name, (m, p, mean, logvar) in {
      "global": (glob.model, glob.params, glob_mean, glob_logvar),
      "encoder": (model, params, enc_mean, enc_logvar),
      "refined": (model, params, refined.mean, refined.logvar),
      "from_prior": (model, params, scratch.mean, scratch.logvar)}.items():
    for key, value in _elbo(m, p, x, mean, logvar, elbo_keys, study.elbo_samples).items():
      out[f"{name}/{key}"] = value
  for name, (mean, logvar) in {"refined": (refined.mean, refined.logvar),
                               "encoder": (enc_mean, enc_logvar)}.items():
    out[f"log_px/{name}"] = _iwae(model, params, x, mean, logvar, iwae_keys,
                                  study.iwae_samples, study.iwae_chunk_size)
  out["trace/refined"], out["trace/from_prior"] = refined.elbo_trace.T, scratch.elbo_trace.T
  out["code/global"], out["code/encoder"], out["code/refined"] = glob_mean, enc_mean, refined.mean
  return {k: np.asarray(v) for k, v in out.items()}


def analyse(runs: dict, study: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """Per-example figures over the first study.num_test test images, as the model sees them."""
  run = runs["amortized"]
  test = run.dataset.test
  parts = []
  work = progress.Progress("amortization study", -(-study.num_test // study.batch_size),
                           "batches of test examples")
  for start in range(0, study.num_test, study.batch_size):
    ids = jnp.arange(start, min(start + study.batch_size, study.num_test), dtype=jnp.int32)
    x = evaluation.eval_inputs(jnp.asarray(test[start:start + len(ids)]), ids,
                               run.preprocessing, run.config.eval.seed)
    logging.info("Study batch of test examples %d-%d.", start, start + len(ids) - 1)
    batch = _batch(runs, study, x, ids)
    batch["x"] = np.asarray(x)
    parts.append(batch)
    work.update()
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _check_num_test(config: ml_collections.ConfigDict) -> None:
  """study.num_test against the test split, before minutes of training, not after."""
  dataset, _ = datasets.load_configured(config.data)
  if config.study.num_test > len(dataset.test):
    raise validation.ConfigError(
        f"config.study.num_test={config.study.num_test} exceeds the {len(dataset.test)} test "
        f"examples of {dataset.name!r}; use at most {len(dataset.test)}.")


def output_paths(workdir: str) -> dict[str, str]:
  return {name: os.path.join(workdir, f"amortization{suffix}") for name, suffix in (
      ("json", ".json"), ("md", ".md"), ("pictures", "_pictures.png"),
      ("grid", "_grid.png"), ("trace", "_svi_trace.png"))}


def run_study(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The whole study: train or reuse the runs, analyse, write the outputs; returns the record."""
  start = time.time()
  validate_study(config)
  validation.validate(run_config(config, "mlp"))
  interface.require(models.build(run_config(config, "mlp"), datasets.info(config.data.name)),
                    NEEDS, "The amortization study")
  workdir = os.path.abspath(workdir)
  paths = output_paths(workdir)
  existing = [p for p in paths.values() if os.path.exists(p)]
  if existing:
    raise workdir_lib.WorkdirError(
        f"{', '.join(existing)} exist: this study was already written in {workdir}. Move "
        f"them away to recompute (the trained runs in it are reused).")
  _check_num_test(config)
  with workdir_lib.lock(workdir):
    runs = train_runs(config, workdir)
    trained = time.time()
    per_example = analyse(runs, config.study)
    analysed = time.time()
    record = report.summarize(per_example, runs, config)
    record["seconds"] = {"train_or_reuse": trained - start, "analysis": analysed - trained}
    report.write_pictures(per_example, runs, config.study.num_pictures, paths)
    report.plot_trace(record, paths["trace"])
    record["seconds"]["total"] = time.time() - start
    with open(paths["md"], "w", encoding="utf-8") as f:
      f.write(report.markdown(record))
    workdir_lib.write_json(paths["json"], record)
  logging.info("Wrote %s", ", ".join(paths.values()))
  return record
