"""Data with known generative factors: the factor grid, its index arithmetic, and the sampler.

A ground-truth dataset is a full grid of discrete factors (dSprites: shape 3,
scale 6, orientation 40, x 32, y 32) with one observation per combination.
Example ``i`` of the grid has the factor classes ``factors_of(i)``; the
inverse is ``index_of(factors) = factors . bases``, where ``bases`` are the
place values of a mixed-radix number, the first factor the slowest (what
disentanglement_lib's ``SplitDiscreteStateSpace`` / ``StateSpaceAtomIndex`` and
the official dSprites file use). The metrics never look at a split: like
disentanglement_lib they draw factors uniformly from the whole grid with a
seeded ``numpy.random.RandomState`` and ask for the observations of those
factors (``Sampler``), so their scores do not depend on a training set.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class FactorGrid:
  """Named discrete factors, each with ``sizes[k]`` values; one example per combination."""
  names: tuple[str, ...]
  sizes: tuple[int, ...]

  @property
  def num_factors(self) -> int:
    return len(self.sizes)

  @property
  def num_examples(self) -> int:
    return int(np.prod(self.sizes))

  @property
  def bases(self) -> np.ndarray:
    """Place values: index = sum_k factors[k] * bases[k]; the last factor varies fastest."""
    return (self.num_examples // np.cumprod(self.sizes)).astype(np.int64)

  def index_of(self, factors: np.ndarray) -> np.ndarray:
    """[..., K] factor classes -> [...] example indices."""
    return np.asarray(factors, np.int64) @ self.bases

  def factors_of(self, index: np.ndarray) -> np.ndarray:
    """[...] example indices -> [..., K] factor classes (the inverse of ``index_of``)."""
    index = np.asarray(index, np.int64)
    return (index[..., None] // self.bases) % np.asarray(self.sizes)

  def all_factors(self) -> np.ndarray:
    """Every combination, [num_examples, K] uint8, in index order."""
    return self.factors_of(np.arange(self.num_examples)).astype(np.uint8)

  def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
    """``num`` combinations drawn uniformly, one factor after another (disentanglement_lib's order)."""
    return np.stack([random_state.randint(size, size=num) for size in self.sizes], axis=1)


# (factor classes [B, K], a JAX key) -> observations [B, H, W, C] as float32 in [0, 1].
ObservationFn = Callable[[np.ndarray, jax.Array], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Sampler:
  """What the disentanglement metrics draw from: factors, and observations of given factors.

  ``observe`` renders (or looks up) the observations of factor classes; variants
  whose observations are random (colour, noise) take their randomness from the
  key, which the sampler derives from its own RandomState, so one seed fixes
  every draw of a metric.
  """
  grid: FactorGrid
  observe: ObservationFn
  observation_shape: tuple[int, int, int]

  @property
  def num_factors(self) -> int:
    return self.grid.num_factors

  @property
  def factor_sizes(self) -> tuple[int, ...]:
    return self.grid.sizes

  def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
    return self.grid.sample_factors(num, random_state)

  def observations(self, factors: np.ndarray,
                   random_state: np.random.RandomState) -> np.ndarray:
    """The observations of ``factors`` [B, K] (randomness of the variants from ``random_state``)."""
    key = jax.random.PRNGKey(random_state.randint(2**31 - 1))
    return np.asarray(self.observe(np.asarray(factors), key))

  def sample(self, num: int, random_state: np.random.RandomState
             ) -> tuple[np.ndarray, np.ndarray]:
    """(factors [num, K], observations [num, H, W, C]) drawn together."""
    factors = self.sample_factors(num, random_state)
    return factors, self.observations(factors, random_state)

  def fix_factor(self, factors: np.ndarray, index: int,
                 value: Optional[np.ndarray] = None) -> np.ndarray:
    """``factors`` with factor ``index`` set to ``value`` (default: the first row's) in every row."""
    fixed = np.array(factors, copy=True)
    fixed[:, index] = fixed[0, index] if value is None else value
    return fixed


def check_factors(grid: FactorGrid, factors: np.ndarray) -> None:
  """Raises ValueError naming the factor whose classes fall outside its range."""
  factors = np.asarray(factors)
  if factors.ndim < 1 or factors.shape[-1] != grid.num_factors:
    raise ValueError(f"factors must have {grid.num_factors} columns ({', '.join(grid.names)}), "
                     f"not shape {factors.shape}.")
  for k, (name, size) in enumerate(zip(grid.names, grid.sizes)):
    column = factors[..., k]
    if column.size and (column.min() < 0 or column.max() >= size):
      raise ValueError(f"factor {name!r} takes classes 0..{size - 1}, not "
                       f"{int(column.min())}..{int(column.max())}.")


def factor_names(grid: FactorGrid, order: Sequence[int]) -> list[str]:
  """The names of the factors at ``order`` (e.g. the factor each latent captures)."""
  return [grid.names[k] for k in order]
