"""Pictures of a conditional model (``interface.num_label_classes``): the class changed, the style kept.

- ``class_grid``: rows are classes, columns one code z ~ p(z) each, shared by
  the whole column: what z carries that the label does not (slant, thickness).
- ``analogy``: an input x of class a, then E[x | y = b, z] for every class b at
  x's own code z = E_q[z | x, a]: x's style written as every class.

Both ask the model only for the conditional capability (``decode`` with
``condition={"label": ...}``); codes come from ``sample_prior`` and ``encode``,
which for a conditional family do not depend on the class they are decoded as.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.models import interface
from vae_jax.pictures import images


def _decode_as(model: interface.Model, params, codes: jax.Array,
               classes: int) -> np.ndarray:
  """E[x | y, z] for every class y and code z: [classes, N, H, W, C]."""
  n = codes.shape[0]
  labels = jnp.repeat(jnp.arange(classes), n)
  tiled = jnp.tile(codes, (classes, 1))
  out = jax.jit(lambda p, z, y: model.decode(p, z, condition={"label": y}))(params, tiled, labels)
  return np.asarray(out).reshape(classes, n, *out.shape[1:])


def class_grid(model: interface.Model, params, rng: jax.Array, columns: int) -> np.ndarray:
  """Rows = classes 0..K-1, columns = one shared z ~ p(z) each."""
  classes = interface.num_label_classes(model)
  codes = model.sample_prior(rng, columns)
  decoded = _decode_as(model, params, codes, classes)
  return images.grid(decoded.reshape(-1, *decoded.shape[2:]), columns)


def analogy(model: interface.Model, params, batch: interface.Batch) -> np.ndarray:
  """One row per input: the input (class a), then its code decoded as classes 0..K-1."""
  classes = interface.num_label_classes(model)
  batch = jax.tree.map(jnp.asarray, batch)
  codes = jax.jit(model.encode)(params, batch)
  decoded = _decode_as(model, params, codes, classes)          # [K, N, H, W, C]
  rows = np.concatenate([np.asarray(batch["image"])[:, None],
                         np.moveaxis(decoded, 0, 1)], axis=1)  # [N, 1 + K, H, W, C]
  return images.grid(rows.reshape(-1, *rows.shape[2:]), classes + 1)


def first_of_each_class(labels: np.ndarray, classes: int) -> np.ndarray:
  """Indices of the first example of each class present in ``labels``, by class."""
  return np.array([int(np.flatnonzero(labels == c)[0]) for c in range(classes)
                   if np.any(labels == c)], dtype=np.int64)
