"""Pictures of a model: test reconstructions and prior samples, as PNG grids.

Images show what ``Model.decode`` shows, E[x|z] (Bernoulli probabilities or
the Gaussian mean), the convention of VAE papers; reconstructions decode the
posterior mean.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vae_jax.models import interface


def grid(images: np.ndarray, columns: int, pad: int = 1) -> np.ndarray:
  """[N, H, W, C] in [0, 1] -> one uint8 image [rows*(H+pad)+pad, cols*(W+pad)+pad, C]."""
  images = np.asarray(images, np.float32)
  n, h, w, c = images.shape
  columns = max(1, min(columns, n))
  rows = math.ceil(n / columns)
  out = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.float32)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    out[y:y + h, x:x + w] = image
  return np.round(np.clip(out, 0.0, 1.0) * 255).astype(np.uint8)


def interleave_rows(inputs: np.ndarray, outputs: np.ndarray, columns: int) -> np.ndarray:
  """Row of inputs, row of their reconstructions, and so on: easy to compare by eye."""
  pairs = []
  for start in range(0, len(inputs), columns):
    pairs += [inputs[start:start + columns], outputs[start:start + columns]]
  return np.concatenate(pairs)


def save_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 [H, W, C] array (C = 1 or 3) to ``path``."""
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path)


def load_png(path: str) -> np.ndarray:
  """A PNG as a uint8 [H, W, C] array, the inverse of ``save_png``."""
  image = np.asarray(Image.open(path))
  return image[..., None] if image.ndim == 2 else image


def model_pictures(model: interface.Model, params: dict, test_batch: interface.Batch,
                   num_samples: int, seed: int, columns: int = 8) -> dict[str, np.ndarray]:
  """{'reconstructions': grid, 'samples': grid} as uint8 arrays (empty ones omitted).

  ``test_batch``: test examples as the model sees them (a batch dict).
  """
  out = {}
  inputs = np.asarray(test_batch["image"])
  if len(inputs):
    recon = jax.jit(model.reconstruct)(params, jax.tree.map(jnp.asarray, test_batch))
    out["reconstructions"] = grid(interleave_rows(inputs, np.asarray(recon), columns), columns)
  if num_samples:
    rng = jax.random.PRNGKey(seed)
    samples = jax.jit(lambda p: model.sample(p, rng, num_samples))(params)
    out["samples"] = grid(np.asarray(samples), columns)
  return out
