"""JAX's Threefry-2x32 hash compiled straight-line on CPU: the same bits, no loop.

Every random draw of a run (the permutations, the per-example keys of
``vae_jax.data.pipeline``, each example's noise) goes through the primitive
``threefry2x32``. On CPU, JAX lowers it as a 5-iteration ``while`` loop (the
20 rounds rolled up to compile faster); XLA:CPU runs each iteration of such a
loop as a dozen separate small operations (copies, two fused rounds, the loop
test) at a few microseconds each, whatever the size of the draw. A train step
of the MLP VAE hashes three times (the step's key, the examples' keys, their
noise): three loops, about 180 of the step's operations.

``install`` registers, for the CPU only, the straight-line form JAX already
uses on GPU and TPU: the same additions, rotations and xors of uint32 words in
the same order, so every bit of every draw stays what it was (the tests check
the hash against its published test vectors and JAX's draws against the rolled
loop's), and XLA fuses the hash into one loop over its elements. It changes how
a hash compiles, not which numbers a seed gives: runs, checkpoints and figures
made before it stay exact. Other platforms keep their own lowering.
"""

from __future__ import annotations

import jax
import numpy as np
from jax import lax
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

# Rotation constants of Threefry-2x32, 20 rounds (Salmon et al. 2011, Table 4),
# used in alternating groups of four; a key word is injected after each group.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: jax.Array, bits: int) -> jax.Array:
  return lax.shift_left(x, np.uint32(bits)) | lax.shift_right_logical(x, np.uint32(32 - bits))


def hash_2x32(key1: jax.Array, key2: jax.Array, count1: jax.Array,
              count2: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Threefry-2x32 of the counter words (count1, count2) under the key (key1, key2).

  uint32 arrays that broadcast together. Unrolled: 5 groups of 4 rounds.
  """
  keys = (key1, key2, key1 ^ key2 ^ _PARITY)
  x1, x2 = count1 + keys[0], count2 + keys[1]
  for group in range(5):
    for bits in _ROTATIONS[group % 2]:
      x1 = x1 + x2
      x2 = x1 ^ _rotate_left(x2, bits)
    x1 = x1 + keys[(group + 1) % 3]
    x2 = x2 + keys[(group + 2) % 3] + np.uint32(group + 1)
  return x1, x2


_installed = False


def install() -> None:
  """Lowers ``threefry2x32`` on CPU with ``hash_2x32`` (idempotent; programs compiled after)."""
  global _installed
  if not _installed:
    mlir.register_lowering(threefry2x32_p, mlir.lower_fun(hash_2x32, multiple_results=True),
                           platform="cpu")
    _installed = True
