"""The code-prior study (studies/code_prior/config.py): fit, evaluate, sample, write."""

from __future__ import annotations

import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import serialization

from studies.code_prior import prior as prior_lib
from vae_jax import parallel
from vae_jax.core import checks
from vae_jax.core import likelihoods
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.evaluation import saved_run
from vae_jax.pictures import images
from vae_jax.training import workdir as workdir_lib

OUTPUTS = ("code_prior.json", "code_prior.md", "prior_samples.png", "uniform_samples.png",
           "prior_params.msgpack")


def validate(config: ml_collections.ConfigDict) -> None:
  for field, minimum in (("width", 1), ("batch_size", 1), ("num_samples", 0),
                         ("encode_batch", 1)):
    checks.number(config, field, minimum=minimum, integer=True)
  steps = checks.number(config, "steps", minimum=100, integer=True)
  if steps % 100:
    checks.fail("steps", steps, "must be a multiple of 100 (steps are scanned 100 at a time)")
  checks.number(config, "learning_rate", minimum=0, strict=True)


def require_code_grid(model) -> tuple[int, tuple[int, int]]:
  """(K, grid shape) of a model whose codes are integer grids; ConfigError otherwise."""
  if not isinstance(getattr(model, "num_codes", None), int) or not hasattr(model, "grid_shape"):
    raise checks.ConfigError(
        f"config.run: the code prior needs a model whose codes are grids of discrete codes "
        f"(num_codes and grid_shape); {type(model).__name__} has none.")
  return model.num_codes, tuple(model.grid_shape)


def encode_split(run: saved_run.Run, split: str, batch: int) -> tuple[np.ndarray, np.ndarray]:
  """(codes [N, P], the data's ids) of a split, images as the evaluation sees them."""
  data = run.dataset.arrays(split)
  encode = jax.jit(lambda p, b: run.model.encode(p, b))
  out = []
  for start in range(0, len(data["image"]), batch):
    ids = np.arange(start, min(start + batch, len(data["image"])))
    part = evaluation.eval_batch({k: v[ids] for k, v in data.items()}, ids, run.preprocessing,
                                 run.config.eval.seed)
    out.append(np.asarray(encode(run.params, part)).reshape(len(ids), -1))
  return np.concatenate(out)


def usage(codes: np.ndarray, num_codes: int) -> dict[str, float]:
  counts = np.bincount(codes.ravel(), minlength=num_codes).astype(np.float64)
  p = counts / counts.sum()
  entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
  return {"perplexity": float(np.exp(entropy)), "dead_codes": int(np.sum(counts == 0))}


def run_study(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  start = time.time()
  validate(config)
  for name in OUTPUTS:
    if os.path.exists(os.path.join(workdir, name)):
      raise workdir_lib.WorkdirError(f"{os.path.join(workdir, name)} exists; use a new --workdir.")
  run = saved_run.load_run(config.run, None if config.step == -1 else config.step)
  num_codes, grid = require_code_grid(run.model)
  positions = math.prod(grid)
  train_codes = encode_split(run, "train", config.encode_batch)
  logging.info("Encoded %d training images to %s grids of %d codes.", len(train_codes), grid,
               num_codes)
  prior = prior_lib.CodePrior(positions, num_codes, config.width)
  params = prior_lib.train(
      prior, train_codes, steps=config.steps, batch_size=config.batch_size,
      learning_rate=config.learning_rate, seed=config.seed,
      report=lambda s, loss: logging.info("prior step %d: -log p(codes) %.2f nats", s, loss)
      if s % 500 == 0 else None)

  # The test split, last: the model's terms (the uniform prior's bound) and the codes.
  evaluator = evaluation.Evaluator(run.model, run.preprocessing, run.config.eval.seed,
                                   run.dataset.arrays("test"), run.config.eval.batch_size)
  terms = evaluator.per_example(parallel.replicate(run.params))
  test_codes = encode_split(run, "test", config.encode_batch)
  log_prior = np.asarray(jax.jit(lambda p, c: prior_lib.log_prob(prior, p, c))(
      params, jnp.asarray(test_codes)), np.float64)
  distortion = np.asarray(terms["distortion"], np.float64)
  neg_elbo = {"uniform": float(np.mean(-np.asarray(terms["elbo"], np.float64))),
              "learned": float(np.mean(distortion - log_prior))}
  dims = math.prod(run.dataset.image_shape)
  record = {
      "run": os.path.abspath(config.run), "step": run.step, "dataset": run.dataset.name,
      "num_codes": num_codes, "grid": list(grid), "neg_elbo_nats": neg_elbo,
      "code_nll_bits_per_position": {"uniform": math.log2(num_codes),
                                     "learned": float(-np.mean(log_prior) / positions
                                                      / math.log(2))},
      "distortion_nats": float(np.mean(distortion)),
      "test_codebook_usage": usage(test_codes, num_codes),
      "train_codebook_usage": usage(train_codes, num_codes),
      "config": config.to_dict(),
  }
  if run.preprocessing == "dequantize":
    record["bits_per_dim"] = {k: float(likelihoods.bits_per_dim(v, dims))
                              for k, v in neg_elbo.items()}
  os.makedirs(workdir, exist_ok=True)
  rng = jax.random.PRNGKey(config.seed)
  if config.num_samples:
    codes = prior_lib.sample(prior, params, rng, config.num_samples).reshape(-1, *grid)
    decoded = jax.jit(lambda p, c: run.model.decode(p, c))
    images.save_png(os.path.join(workdir, "prior_samples.png"),
                    images.grid(np.asarray(decoded(run.params, codes)), 8))
    uniform = run.model.sample_prior(rng, config.num_samples)
    images.save_png(os.path.join(workdir, "uniform_samples.png"),
                    images.grid(np.asarray(decoded(run.params, uniform)), 8))
  with open(os.path.join(workdir, "prior_params.msgpack"), "wb") as f:
    f.write(serialization.to_bytes(params))
  record["wall_time_s"] = time.time() - start
  workdir_lib.write_json(os.path.join(workdir, "code_prior.json"), record)
  with open(os.path.join(workdir, "code_prior.md"), "w", encoding="utf-8") as f:
    f.write(markdown(record))
  return record


def markdown(record: dict[str, Any]) -> str:
  bpd = record.get("bits_per_dim", {})
  rows = [f"| {name} prior | {record['neg_elbo_nats'][name]:.2f} | "
          + (f"{bpd[name]:.4f} | " if bpd else "")
          + (f"{record['code_nll_bits_per_position'][name]:.3f} |")
          for name in ("uniform", "learned")]
  header = ("| prior | test -ELBO (nats) | " + ("bits/dim | " if bpd else "")
            + "code NLL (bits/position) |")
  usage_ = record["test_codebook_usage"]
  return "\n".join([
      f"Run {record['run']} (step {record['step']}, {record['dataset']}): "
      f"{record['grid'][0]}x{record['grid'][1]} grid of {record['num_codes']} codes; "
      f"test codebook perplexity {usage_['perplexity']:.1f}, dead codes {usage_['dead_codes']}.",
      "", header, "|" + "---|" * (header.count("|") - 1), *rows, ""])
