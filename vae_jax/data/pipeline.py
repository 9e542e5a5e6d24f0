"""The on-device input pipeline: shuffling, batching and pixel preprocessing.

The uint8 dataset sits on every device. Each epoch has one global permutation,
drawn from (seed, epoch); global batch b is ``perm[b*G:(b+1)*G]`` and device d
takes its contiguous slice of it. Every random draw for an example is keyed by
(step, position in the global batch) or, in evaluation, by the example's index.
So a run's numbers depend on its seed and global batch size, never on how many
devices share the work, and never on the process history (exact resume).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vae_jax.core import threefry

# The hash under every key and draw below, compiled without its loop on CPU
# (the same bits; see vae_jax.core.threefry): programs that draw per example
# are built on this module.
threefry.install()

# How pixels become model inputs.
#   "binary":      the dataset is already {0, 1}; used as is (static binarization).
#   "dynamic":     x ~ Bernoulli(pixel / 255), redrawn every time an image is used.
#   "dequantize":  (pixel + u) / 256 with u ~ U[0, 1): continuous data for Gaussians.
PREPROCESSING = ("binary", "dynamic", "dequantize")

# Fixed stream ids folded into keys so the streams never overlap.
STREAM_PERMUTATION, STREAM_PIXELS, STREAM_LATENT, STREAM_IMPORTANCE = 0, 1, 2, 3
STREAM_AUXILIARY = 4   # an auxiliary network's draws (one key per step: FactorVAE's permutation)


def stream_key(rng: jax.Array, stream: int, counter: jax.Array) -> jax.Array:
  """The key of one random stream at one counter (a step, an epoch)."""
  return jax.random.fold_in(jax.random.fold_in(rng, stream), counter)


def example_keys(key: jax.Array, example_ids: jax.Array) -> jax.Array:
  """One key per example, so each draw is independent of the batch's device split."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, example_ids)


def epoch_permutation(rng: jax.Array, epoch: jax.Array, num_examples: int) -> jax.Array:
  return jax.random.permutation(stream_key(rng, STREAM_PERMUTATION, epoch), num_examples)


def local_batch_indices(perms: jax.Array, epoch_row: jax.Array, step_in_epoch: jax.Array,
                        global_batch: int, per_device: int, device_index: jax.Array):
  """This device's slice of global batch ``step_in_epoch`` of permutation ``epoch_row``.

  ``perms`` [epochs, N] holds the permutations of consecutive epochs.
  Returns (dataset indices [per_device], positions in the global batch [per_device]).
  """
  start = step_in_epoch * global_batch + device_index * per_device
  indices = jax.lax.dynamic_slice(perms, (epoch_row, start), (1, per_device))[0]
  positions = device_index * per_device + jnp.arange(per_device)
  return indices, positions


def preprocess(images: jax.Array, keys: jax.Array, mode: str) -> jax.Array:
  """uint8 [B, H, W, C] -> float32 model input, one key per example."""
  if mode == "binary":
    return images.astype(jnp.float32)
  if mode == "dynamic":
    probs = images.astype(jnp.float32) / 255.0
    draw = jax.vmap(lambda k, p: jax.random.bernoulli(k, p))
    return draw(keys, probs).astype(jnp.float32)
  if mode == "dequantize":
    noise = jax.vmap(lambda k, x: jax.random.uniform(k, x.shape))(keys, images)
    return (images.astype(jnp.float32) + noise) / 256.0
  raise ValueError(f"Unknown preprocessing {mode!r}; valid: {PREPROCESSING}.")
