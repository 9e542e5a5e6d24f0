"""Pictures of a VAE's latent space: interpolations, traversals, manifold, arithmetic.

Each builder returns a uint8 image [H, W, C] (C = 1, or 3 where colour carries
meaning) whose size follows from its arguments, so the PNGs of two models line
up. Images show E[x|z] (``Model.decode``); codes of data are posterior means
(``Model.encode``). Codes only mean something where the model put information:
traversals are sorted by each dimension's KL and mark the inactive ones.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vae_jax.pictures import images
from vae_jax.models import interface

# Traversal rows of dimensions whose KL is below this are marked inactive.
INACTIVE_KL = 0.01


def _decode(model: interface.Model, params: dict, z) -> np.ndarray:
  """E[x|z] for codes of any leading shape [..., d], as a host array [..., H, W, C]."""
  z = jnp.asarray(z, jnp.float32)
  flat = z.reshape(-1, z.shape[-1])
  out = jax.jit(lambda p, z: model.decode(p, z))(params, flat)
  return np.asarray(out).reshape(*z.shape[:-1], *out.shape[1:])


def lerp(z0: np.ndarray, z1: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Points (1 - t) z0 + t z1: [N, d], [N, d], [T] -> [N, T, d]."""
  t = np.asarray(t)[None, :, None]
  return (1 - t) * z0[:, None] + t * z1[:, None]


def slerp(z0: np.ndarray, z1: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation [N, d], [N, d], [T] -> [N, T, d].

  Between two prior samples the straight line's midpoint has norm about
  sqrt(d/2) instead of the prior's typical sqrt(d): a region the prior (and the
  decoder) barely sees. Along the great circle the norm stays typical (White 2016).
  """
  z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
  unit = lambda z: z / np.linalg.norm(z, axis=-1, keepdims=True)
  omega = np.arccos(np.clip(np.sum(unit(z0) * unit(z1), -1), -1.0, 1.0))[:, None, None]
  t = np.asarray(t, np.float64)[None, :, None]
  sin = np.sin(omega)
  safe = np.where(sin > 1e-6, sin, 1.0)
  curve = (np.sin((1 - t) * omega) * z0[:, None] + np.sin(t * omega) * z1[:, None]) / safe
  return np.where(sin > 1e-6, curve, lerp(z0, z1, t[0, :, 0])).astype(np.float32)


def interpolation(model: interface.Model, params: dict, inputs_a: np.ndarray,
                  inputs_b: np.ndarray, steps: int) -> np.ndarray:
  """One row per pair: input a, E[x|z] along the line between their posterior means, input b."""
  mean_a = model.encode(params, {"image": jnp.asarray(inputs_a)})
  mean_b = model.encode(params, {"image": jnp.asarray(inputs_b)})
  path = _decode(model, params, lerp(np.asarray(mean_a), np.asarray(mean_b),
                                     np.linspace(0.0, 1.0, steps)))
  rows = np.concatenate([inputs_a[:, None], path, inputs_b[:, None]], axis=1)
  return images.grid(rows.reshape(-1, *rows.shape[2:]), steps + 2)


def prior_interpolation(model: interface.Model, params: dict, rng: jax.Array, num_rows: int,
                        steps: int) -> np.ndarray:
  """One row per pair of prior samples, decoded along the great circle between them."""
  z = np.asarray(model.sample_prior(rng, 2 * num_rows)).reshape(2, num_rows, -1)
  path = _decode(model, params, slerp(z[0], z[1], np.linspace(0.0, 1.0, steps)))
  return images.grid(path.reshape(-1, *path.shape[2:]), steps)


def _kl_tile(fraction: float, active: bool, shape: Sequence[int]) -> np.ndarray:
  """A bar filled from the bottom in proportion to a dimension's KL: blue, or red if inactive."""
  height, width = shape
  tile = np.ones((height, width, 3), np.float32)
  filled = int(round(np.clip(fraction, 0.0, 1.0) * height))
  colour = (0.2, 0.4, 0.9) if active else (0.9, 0.1, 0.1)
  tile[height - filled:, :] = colour
  if not active:  # a red frame, visible even when the KL bar is empty
    tile[[0, -1], :], tile[:, [0, -1]] = (0.9, 0.1, 0.1), (0.9, 0.1, 0.1)
  return tile


def traversals(model: interface.Model, params: dict, base_code: np.ndarray,
               kl_per_dim: np.ndarray, values: np.ndarray,
               inactive_kl: float = INACTIVE_KL) -> tuple[np.ndarray, list[int]]:
  """One row per latent dimension, by decreasing KL: z_d swept over ``values``, others fixed.

  The first tile of each row is a bar of that dimension's KL (relative to the
  largest), red-framed when the KL is below ``inactive_kl``: an inactive unit's
  row should not change along it. Returns (RGB image, the dimension order).
  """
  order = [int(d) for d in np.argsort(-np.asarray(kl_per_dim), kind="stable")]
  codes = np.repeat(np.asarray(base_code, np.float32)[None, None], len(order), 0)
  codes = np.repeat(codes, len(values), 1)  # [D, V, d]
  for row, d in enumerate(order):
    codes[row, :, d] = values
  decoded = _decode(model, params, codes)  # [D, V, H, W, C]
  decoded = np.broadcast_to(decoded, (*decoded.shape[:-1], 3)) if decoded.shape[-1] == 1 \
      else decoded
  top = max(float(np.max(kl_per_dim)), 1e-12)
  bars = np.stack([_kl_tile(kl_per_dim[d] / top, kl_per_dim[d] >= inactive_kl,
                            decoded.shape[2:4]) for d in order])
  rows = np.concatenate([bars[:, None], decoded], axis=1)
  return images.grid(rows.reshape(-1, *rows.shape[2:]), len(values) + 1), order


def manifold(model: interface.Model, params: dict, size: int,
             quantiles: tuple[float, float] = (0.05, 0.95)) -> np.ndarray:
  """A 2-D latent space decoded on a size x size grid of the prior's quantiles.

  Equal steps in probability, not in z (Kingma & Welling 2014, Fig. 4): each
  cell covers the same prior mass. Rows run from high z_2 (top) to low.
  """
  if model.latent_dim != 2:
    raise ValueError(f"The manifold grid needs a 2-D latent space; this model has "
                     f"latent_dim={model.latent_dim}.")
  axis = np.asarray(jax.scipy.stats.norm.ppf(jnp.linspace(*quantiles, size)))
  z1, z2 = np.meshgrid(axis, axis[::-1])
  decoded = _decode(model, params, np.stack([z1, z2], -1))
  return images.grid(decoded.reshape(-1, *decoded.shape[2:]), size, pad=0)


def scatter(means: np.ndarray, labels: Optional[np.ndarray], title: str,
            dims: tuple[int, int] = (0, 1), pixels: int = 640) -> np.ndarray:
  """Posterior means of the test set in two latent dimensions, coloured by label."""
  fig = Figure(figsize=(pixels / 100, pixels / 100), dpi=100, layout="constrained")
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  x, y = means[:, dims[0]], means[:, dims[1]]
  if labels is None:
    ax.scatter(x, y, s=2, alpha=0.5, color="k")
  else:
    points = ax.scatter(x, y, c=labels, s=2, alpha=0.6, cmap="tab10",
                        vmin=-0.5, vmax=9.5 if labels.max() < 10 else labels.max() + 0.5)
    fig.colorbar(points, ax=ax, label="label", ticks=np.unique(labels)[:20])
  ax.set_xlabel(f"E[z_{dims[0] + 1}|x]")
  ax.set_ylabel(f"E[z_{dims[1] + 1}|x]")
  ax.set_title(title, fontsize=9)
  ax.set_aspect("equal", adjustable="datalim")
  ax.grid(True, alpha=0.3)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def class_means(codes: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
  return {int(c): codes[labels == c].mean(0) for c in np.unique(labels)}


def arithmetic(model: interface.Model, params: dict, inputs: np.ndarray, input_labels: np.ndarray,
               means: dict[int, np.ndarray]) -> np.ndarray:
  """Rows: an input x of class c, its reconstruction, then E[x|z] at z_x - m_c + m_t per class t.

  m_c is the mean code of class c over the labelled data: subtracting it and
  adding another class's mean moves x to that class while (if the code
  separates content from style) keeping its stroke, slant and thickness.
  """
  codes = model.encode(params, {"image": jnp.asarray(inputs)})
  codes = np.asarray(codes)
  targets = sorted(means)
  moved = np.stack([[codes[i] - means[int(c)] + means[t] for t in targets]
                    for i, c in enumerate(input_labels)])
  decoded = _decode(model, params, np.concatenate([codes[:, None], moved], axis=1))
  rows = np.concatenate([inputs[:, None], decoded], axis=1)
  return images.grid(rows.reshape(-1, *rows.shape[2:]), len(targets) + 2)

