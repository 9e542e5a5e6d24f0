"""JAX's Threefry-2x32 hash compiled straight-line on CPU: the same bits, no loop.

Every random draw of a run (the permutations, the per-example keys of
``vae_jax.data.pipeline``, each example's noise) goes through the primitive
``threefry2x32``. On CPU, JAX lowers it as a 5-iteration ``while`` loop (the
20 rounds rolled up to compile faster); XLA:CPU runs each iteration of such a
loop as a dozen separate small operations (copies, two fused rounds, the loop
test) at a few microseconds each, whatever the size of the draw. A train step
of the MLP VAE hashes three times (the step's key, the examples' keys, their
noise): three loops, about 180 of the step's operations.

``install`` registers, for the CPU only, JAX's own unrolled lowering of the
hash, the one it uses on GPU and TPU: the same additions, rotations and xors in
the same order, so every bit of every draw stays what it was (the tests check
the hash against its published test vectors and JAX's draws against the rolled
loop's), and XLA fuses the hash into one loop over its elements. It changes how
a hash compiles, not which numbers a seed gives: runs, checkpoints and figures
made before it stay exact. If a JAX version moves that rule, nothing is
registered and draws keep JAX's default lowering (slower, the same bits).
"""

from __future__ import annotations

from absl import logging
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

_installed = False


def _unrolled_rule():
  """JAX's own loop-free lowering of ``threefry2x32``, or None where it cannot be found."""
  try:
    from jax._src.random import threefry2x32 as jax_threefry  # pylint: disable=g-import-not-at-top
    return jax_threefry._threefry2x32_lowering_rule  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return None


def install() -> bool:
  """Lowers ``threefry2x32`` on CPU without a loop (idempotent; programs compiled after).

  Returns whether the loop-free lowering is in place.
  """
  global _installed
  if not _installed:
    rule = _unrolled_rule()
    if rule is None:
      logging.warning("JAX's unrolled Threefry lowering was not found; random draws keep the "
                      "default CPU lowering (the same numbers, slower).")
      return False
    mlir.register_lowering(threefry2x32_p, rule, platform="cpu")
    _installed = True
  return True
