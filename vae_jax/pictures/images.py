"""Pictures of a model: test reconstructions and prior samples, as PNG grids.

Images show E[x|z] (Bernoulli probabilities or the Gaussian mean), the
convention of VAE papers; reconstructions decode the posterior mean.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vae_jax.core import likelihoods
from vae_jax.models import gaussian_vae as models


def decoded_mean(model: models.VAE, params: dict, z: jax.Array,
                 rng: jax.Array | None = None) -> jax.Array:
  """E[x|z] in [0, 1], the image every picture shows for a code z.

  For the autoregressive decoder E[x|z] is intractable (each pixel's mean
  depends on the pixels before it); it shows instead p(x_i = 1 | x_<i, z)
  along one ancestral sample x ~ p(x|z), drawn with ``rng`` (default: key 0,
  so pictures are reproducible).
  """
  if model.decoder == "autoregressive":
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return models.sample_autoregressive(model, params, z, rng)[1]
  loc, _ = models.decode(model, params, z)
  return likelihoods.mean(model.likelihood, loc)


def sample_observation(model: models.VAE, params: dict, z: jax.Array,
                       rng: jax.Array) -> jax.Array:
  """x ~ p(x|z) in [0, 1]: binary pixels, or the mean plus per-pixel Gaussian noise.

  What the model actually generates; the mean E[x|z] hides the noise (and, for a
  Gaussian, the blur it is averaging over). The autoregressive decoder draws
  its pixels one by one (ancestral sampling).
  """
  if model.decoder == "autoregressive":
    return models.sample_autoregressive(model, params, z, rng)[0]
  loc, log_scale = models.decode(model, params, z)
  if model.likelihood == "bernoulli":
    return jax.random.bernoulli(rng, jax.nn.sigmoid(loc)).astype(jnp.float32)
  noise = jax.random.normal(rng, loc.shape) * jnp.exp(log_scale)
  return jnp.clip(loc + noise, 0.0, 1.0)


def reconstruct(model: models.VAE, params: dict, x: jax.Array) -> jax.Array:
  mean, _ = models.encode(model, params, x)
  return decoded_mean(model, params, mean)


def sample_prior(model: models.VAE, params: dict, rng: jax.Array, num: int) -> jax.Array:
  return decoded_mean(model, params, jax.random.normal(rng, (num, model.latent_dim)))


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


def model_pictures(model: models.VAE, params: dict, test_inputs: np.ndarray,
                   num_samples: int, seed: int, columns: int = 8) -> dict[str, np.ndarray]:
  """{'reconstructions': grid, 'samples': grid} as uint8 arrays (empty ones omitted)."""
  out = {}
  if len(test_inputs):
    recon = jax.jit(lambda p, x: reconstruct(model, p, x))(params, jnp.asarray(test_inputs))
    out["reconstructions"] = grid(
        interleave_rows(test_inputs, np.asarray(recon), columns), columns)
  if num_samples:
    rng = jax.random.PRNGKey(seed)
    samples = jax.jit(lambda p: sample_prior(model, p, rng, num_samples))(params)
    out["samples"] = grid(np.asarray(samples), columns)
  return out
