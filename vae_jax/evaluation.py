"""Evaluation of the ELBO terms over a whole split, data-parallel.

The split is padded to a whole number of global batches and sharded once; each
device scans over its block. Every random draw (test-time binarization or
dequantization, the z sample) is keyed by the example's index and a fixed
evaluation seed, so the per-example numbers are identical from run to run and
on any device count, and models are compared on exactly the same test data.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import numpy as np

from vae_jax import input_pipeline as pipeline
from vae_jax import models
from vae_jax import objectives
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


def eval_inputs(images: jax.Array, ids: jax.Array, preprocessing: str,
                seed: int) -> tuple[jax.Array, jax.Array]:
  """Test images as the model sees them, and their z-sample keys, keyed by example id."""
  key = jax.random.PRNGKey(seed)
  pixel_keys = pipeline.example_keys(pipeline.stream_key(key, pipeline.STREAM_PIXELS, 0), ids)
  latent_keys = pipeline.example_keys(
      pipeline.stream_key(key, pipeline.STREAM_LATENT, 0), ids)
  return pipeline.preprocess(images, pixel_keys, preprocessing), latent_keys


def make_eval_fn(model: models.VAE, preprocessing: str, kl_estimator: str, seed: int):
  """Per-device fn(params, images, ids) -> per-example terms [batches, batch, ...]."""

  def eval_batch(params, images, ids):
    x, latent_keys = eval_inputs(images, ids, preprocessing, seed)
    return objectives.vae_terms(model, params, x, latent_keys, kl_estimator)

  def eval_fn(params, images, ids):
    return jax.lax.map(lambda b: eval_batch(params, *b), (images, ids))

  return eval_fn


class Evaluator:
  """Evaluates params (replicated on the devices) on one sharded split."""

  def __init__(self, model: models.VAE, preprocessing: str, kl_estimator: str,
               seed: int, images: np.ndarray, global_batch: int):
    self.split = shard_split(images, global_batch)
    self._fn = parallel.data_parallel(
        make_eval_fn(model, preprocessing, kl_estimator, seed))

  def per_example(self, params) -> dict[str, np.ndarray]:
    """Per-example terms in split order, padding removed (float32, host)."""
    terms = self._fn(params, self.split.images, self.split.ids)
    terms = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), parallel.unshard(terms))
    return {k: v[: self.split.num_examples] for k, v in terms.items()}

  def summary(self, params) -> dict[str, float]:
    return summarize(self.per_example(params))


def summarize(terms: dict[str, np.ndarray],
              keys: Optional[tuple[str, ...]] = None) -> dict[str, float]:
  """Means in float64; the loss papers quote is -elbo ('neg_elbo'), in nats."""
  out = {k: float(np.mean(terms[k], dtype=np.float64))
         for k in (keys or SUMMARY_KEYS) if k in terms}
  out["neg_elbo"] = -out["elbo"]
  return out
