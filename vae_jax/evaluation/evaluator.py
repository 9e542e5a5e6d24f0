"""Evaluation over a whole split, data-parallel: ELBO terms, IWAE NLL, diagnostics.

The split is padded to a whole number of global batches and sharded once; each
device scans over its block. Every random draw (test-time binarization or
dequantization, the z sample) is keyed by the example's index and a fixed
evaluation seed, so the per-example numbers are identical from run to run and
on any device count, and models are compared on exactly the same test data.

With several processes (hosts), the split is sharded over the devices of all
of them: each process evaluates its block on its local devices, and
``parallel.unshard`` gathers the per-example results, so every process gets
the whole split's numbers (the summary needs all examples: the mutual
information and active units are statistics over the split, not means of
per-device means). Evaluating the whole split on every host instead would
need no gather but take as long on a pod as on one host.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

import jax
import numpy as np

from vae_jax.evaluation import diagnostics
from vae_jax.data import pipeline
from vae_jax.objectives import iwae
from vae_jax.core import likelihoods
from vae_jax.models import gaussian_vae as models
from vae_jax.objectives import elbo as objectives
from vae_jax import parallel

SUMMARY_KEYS = ("elbo", "rate", "distortion", "bits_per_dim")


@dataclasses.dataclass
class ShardedSplit:
  """A split laid out for evaluation: [devices, batches, per-device batch, ...]."""
  images: jax.Array
  ids: jax.Array
  num_examples: int


def shard_split(images: np.ndarray, global_batch: int) -> ShardedSplit:
  """Pads to whole global batches (padding is dropped again after evaluation)."""
  per_device = parallel.per_device(global_batch, "eval.batch_size")
  num = len(images)
  padded = -(-num // global_batch) * global_batch
  pad = np.zeros((padded - num, *images.shape[1:]), images.dtype)
  ids = np.arange(padded, dtype=np.int32)
  # parallel.shard gives each device a contiguous run of these batches.
  def layout(x):
    return x.reshape((padded // per_device, per_device, *x.shape[1:]))
  sharded = parallel.shard({"images": layout(np.concatenate([images, pad])),
                            "ids": layout(ids)})
  return ShardedSplit(sharded["images"], sharded["ids"], num)


def eval_keys(seed: int, stream: int, ids: jax.Array) -> jax.Array:
  """Per-example keys of one evaluation stream, keyed by example id."""
  return pipeline.example_keys(pipeline.stream_key(jax.random.PRNGKey(seed), stream, 0), ids)


def eval_inputs(images: jax.Array, ids: jax.Array, preprocessing: str, seed: int) -> jax.Array:
  """Test images as the model sees them (fixed binarization / dequantization)."""
  return pipeline.preprocess(images, eval_keys(seed, pipeline.STREAM_PIXELS, ids),
                             preprocessing)


def make_eval_fn(model: models.VAE, preprocessing: str, kl_estimator: str, seed: int,
                 num_importance_samples: int = 0, iwae_chunk_size: int = 20):
  """Per-device fn(params, images, ids) -> per-example terms [batches, batch, ...].

  Terms: the ELBO terms, the posterior parameters ("posterior_mean",
  "posterior_logvar") and, when num_importance_samples > 0, the IWAE estimate
  "log_px" with that many samples.
  """

  def eval_batch(params, images, ids):
    x = eval_inputs(images, ids, preprocessing, seed)
    terms = objectives.vae_terms(model, params, x,
                                 eval_keys(seed, pipeline.STREAM_LATENT, ids), kl_estimator)
    if num_importance_samples:
      terms["log_px"] = iwae.vae_iwae_log_px(
          model, params, x, terms["posterior_mean"], terms["posterior_logvar"],
          eval_keys(seed, pipeline.STREAM_IMPORTANCE, ids), num_importance_samples,
          iwae_chunk_size)
    return terms

  def eval_fn(params, images, ids):
    return jax.lax.map(lambda b: eval_batch(params, *b), (images, ids))

  return eval_fn


class Evaluator:
  """Evaluates params (replicated on the devices) on one sharded split."""

  def __init__(self, model: models.VAE, preprocessing: str, kl_estimator: str,
               seed: int, images: np.ndarray, global_batch: int,
               iwae_chunk_size: int = 20, collapse_rate_floor: float = 0.0):
    self.split = shard_split(images, global_batch)
    self._model, self._seed = model, seed
    self._make = functools.partial(make_eval_fn, model, preprocessing, kl_estimator, seed,
                                   iwae_chunk_size=iwae_chunk_size)
    self._fns = {}  # one compiled function per number of importance samples
    self._rate_floor = collapse_rate_floor

  def per_device_fn(self, num_importance_samples: int = 0):
    """The per-device evaluation program (see ``make_eval_fn``), e.g. to count its work."""
    return self._make(num_importance_samples=num_importance_samples)

  def per_example(self, params, num_importance_samples: int = 0) -> dict[str, np.ndarray]:
    """Per-example terms in split order, padding removed (float32, host)."""
    if num_importance_samples not in self._fns:
      self._fns[num_importance_samples] = parallel.data_parallel(
          self.per_device_fn(num_importance_samples))
    terms = self._fns[num_importance_samples](params, self.split.images, self.split.ids)
    terms = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), parallel.unshard(terms))
    return {k: v[: self.split.num_examples] for k, v in terms.items()}

  def evaluate(self, params, num_importance_samples: int = 0) -> dict[str, Any]:
    """ELBO terms, latent diagnostics and (k > 0) the IWAE NLL, summarised."""
    start = time.time()
    terms = self.per_example(params, num_importance_samples)
    out = summarize(terms, self._model, self._seed, self._rate_floor)
    if num_importance_samples:
      out["num_importance_samples"] = num_importance_samples
    out["eval_seed"] = self._seed
    out["eval_seconds"] = time.time() - start
    return out


def summarize(terms: dict[str, np.ndarray], model: models.VAE, seed: int,
              rate_floor: float) -> dict[str, Any]:
  """Means over the split (float64) and diagnostics; every figure in nats per example.

  neg_elbo is the loss papers quote; nll = -mean log p_k(x) (IWAE) when present, and
  gap = nll - neg_elbo (<= 0 in expectation: how loose the ELBO is).
  """
  mean = lambda v: float(np.mean(v, dtype=np.float64))
  out = {k: mean(terms[k]) for k in SUMMARY_KEYS if k in terms}
  out["neg_elbo"] = -out["elbo"]
  out["kl_per_dim"] = [mean(v) for v in terms["kl_per_dim"].T]
  out["active_units"], activity = diagnostics.active_units(terms["posterior_mean"])
  out["activity_per_dim"] = [float(a) for a in activity]
  out["mutual_information"] = diagnostics.mutual_information(
      terms["posterior_mean"], terms["posterior_logvar"], seed)
  if "log_px" in terms:
    out["nll"] = -mean(terms["log_px"])
    out["gap"] = out["nll"] - out["neg_elbo"]
    if likelihoods.is_continuous(model.likelihood):
      out["nll_bits_per_dim"] = float(likelihoods.bits_per_dim(
          out["nll"], math.prod(model.image_shape)))
  out["posterior_collapse"] = diagnostics.collapse_alarm(
      out["active_units"], out["rate"], rate_floor)
  return out


def scalars(summary: dict[str, Any]) -> dict[str, float]:
  """The summary's numbers as flat scalars for metric writers (per-dim KL included)."""
  out = {k: v for k, v in summary.items()
         if isinstance(v, (int, float)) and not isinstance(v, bool)}
  out.update({f"kl_dim_{d:03d}": v for d, v in enumerate(summary.get("kl_per_dim", []))})
  out["posterior_collapse"] = float(summary.get("posterior_collapse") is not None)
  return out
