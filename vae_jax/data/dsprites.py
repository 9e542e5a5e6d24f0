"""dSprites (Matthey et al. 2017): the official file, and a procedural copy rendered on the device.

The factors: shape 3 (square, ellipse, heart), scale 6 (linspace 0.5..1),
orientation 40 (linspace 0..2pi), x 32 and y 32 (linspace 0..1): 737,280 binary
64x64 images, example i having the factor classes ``GRID.factors_of(i)`` (the
official file's order, its constant colour factor left out as disentanglement_lib's
``dsprites_full`` does).

``dsprites`` reads the official ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``
from ``data.manual_dir`` as it is (checked against the grid); its images are
kept bit-packed (377 MB instead of 3 GB) and unpacked after each batch is
gathered. It cannot be downloaded here, so every run in this repository uses

``dsprites_procedural``: the same factor grid drawn from analytic shapes, a
pure jnp function of the factor classes (``render``), so a training batch is
drawn on the device from the classes of its examples and no image is stored. Its
conventions follow the original: sprites white on black, placed by their
centre, which moves over the middle of the image (x along columns, y down rows)
with a margin that keeps the largest rotated sprite inside; the heart is the
algebraic curve (x^2 + y^2 - 1)^3 = x^2 y^3. Its images are not the official
ones, and its name says so; results.json records which was used.

The variants of disentanglement_lib's ``ground_truth/dsprites.py``:
``color_dsprites_procedural`` multiplies the sprite by one colour per image drawn
from U(0.5, 1)^3; ``noisy_dsprites_procedural`` adds U(0, 1) noise per pixel and
channel to the background (min(x + noise, 1)). Their randomness is drawn anew
each time an image is used, keyed like every other draw. The ``scream`` variant
needs a painting that is not here; it is left out.
"""

from __future__ import annotations

import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.data import ground_truth

GRID = ground_truth.FactorGrid(("shape", "scale", "orientation", "x", "y"),
                               (3, 6, 40, 32, 32))
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2 * np.pi, 40)
POSITIONS = np.linspace(0.0, 1.0, 32)
SIZE = 64
OFFICIAL_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"

# Geometry of the procedural sprites, in pixels: a sprite of scale 1 has unit length
# UNIT; its centre runs from MARGIN to SIZE - MARGIN as x (or y) goes from 0 to 1, so
# a position step is 32/31 = 1.03 pixels and the largest sprite (radius <= UNIT) stays
# inside at every orientation. Every step of position or scale moves a sprite's edge
# by more than a pixel, so it changes the image (tests/data/test_dsprites.py).
UNIT = 15.0
MARGIN = 16.0
SQUARE_HALF_SIDE = 0.7     # in units: a 21-pixel square at scale 1, 10.5 at scale 0.5
ELLIPSE_AXES = (1.0, 0.5)  # semi-axes in units: 30 x 15 pixels at scale 1
HEART_ZOOM, HEART_SHIFT = 1.2, 0.1  # the heart curve spans x in +-1.14, y in -1..1.24

# The variants draw their colour or noise from the example's key folded with this.
RENDER_STREAM = 7

VARIANTS = ("plain", "color", "noisy")


def centre(position: jax.Array) -> jax.Array:
  """Pixel coordinate of a sprite's centre at position value 0..1."""
  return MARGIN + position * (SIZE - 2 * MARGIN)


# Angles reduced modulo 2 pi in float64, so orientation 2 pi draws exactly orientation 0
# (float32 cos and sin of 2 pi would move edges lying on pixel centres by a row).
_ANGLES = np.mod(ORIENTATIONS, 2 * np.pi).astype(np.float32)


@jax.jit
def render_masks(factors: jax.Array) -> jax.Array:
  """Factor classes [..., 5] -> bool [..., 64, 64]: the pixels whose centre the sprite covers.

  Each pixel centre is taken into the sprite's frame (translated, rotated by
  -orientation, divided by scale * UNIT) and tested against the shape's
  inequality; pure jnp, so it jits, vmaps and runs inside the train step.
  """
  factors = jnp.asarray(factors, jnp.int32)
  shape, scale_class, angle_class = factors[..., 0], factors[..., 1], factors[..., 2]
  scale = jnp.asarray(SCALES, jnp.float32)[scale_class] * UNIT
  angle = jnp.asarray(_ANGLES)[angle_class]
  positions = jnp.asarray(POSITIONS, jnp.float32)
  cx, cy = centre(positions[factors[..., 3]]), centre(positions[factors[..., 4]])
  grid = jnp.arange(SIZE, dtype=jnp.float32) + 0.5
  expand = lambda a: a[..., None, None]
  dx = grid[None, :] - expand(cx)            # [..., 1, 64]: columns
  dy = grid[:, None] - expand(cy)            # [..., 64, 1]: rows, downwards
  cos, sin = expand(jnp.cos(angle)), expand(jnp.sin(angle))
  u = (cos * dx + sin * dy) / expand(scale)
  v = (cos * dy - sin * dx) / expand(scale)
  square = jnp.maximum(jnp.abs(u), jnp.abs(v)) <= SQUARE_HALF_SIDE
  ellipse = (u / ELLIPSE_AXES[0]) ** 2 + (v / ELLIPSE_AXES[1]) ** 2 <= 1.0
  hx, hy = u * HEART_ZOOM, -v * HEART_ZOOM + HEART_SHIFT   # y up: the point at the bottom
  heart = (hx**2 + hy**2 - 1.0) ** 3 - hx**2 * hy**3 <= 0.0
  shape = expand(shape)
  return jnp.where(shape == 0, square, jnp.where(shape == 1, ellipse, heart))


def render(factors: jax.Array) -> jax.Array:
  """Factor classes [..., 5] -> uint8 [..., 64, 64, 1] images in {0, 1} (dSprites' pixels)."""
  return render_masks(factors).astype(jnp.uint8)[..., None]


def vary(images: jax.Array, keys: jax.Array, variant: str) -> jax.Array:
  """Binary images [B, 64, 64, 1] -> uint8 [B, 64, 64, C] of a variant (0..255 unless plain).

  One key per image: colour or noise comes from ``fold_in(key, RENDER_STREAM)``.
  """
  if variant == "plain":
    return images
  keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, RENDER_STREAM)
  sprite = jnp.repeat(images.astype(jnp.float32), 3, axis=-1)
  if variant == "color":
    colour = jax.vmap(lambda k: jax.random.uniform(k, (1, 1, 3), minval=0.5, maxval=1.0))(keys)
    pixels = sprite * colour
  elif variant == "noisy":
    noise = jax.vmap(lambda k: jax.random.uniform(k, sprite.shape[1:]))(keys)
    pixels = jnp.minimum(sprite + noise, 1.0)
  else:
    raise ValueError(f"Unknown dSprites variant {variant!r}; valid: {', '.join(VARIANTS)}.")
  return jnp.round(pixels * 255.0).astype(jnp.uint8)


def renderer(variant: str):
  """The dataset's ``render(rows, keys)``: rows of factor classes -> uint8 images."""
  if variant not in VARIANTS:
    raise ValueError(f"Unknown dSprites variant {variant!r}; valid: {', '.join(VARIANTS)}.")
  def render_rows(rows: jax.Array, keys: jax.Array) -> jax.Array:
    return vary(render(rows), keys, variant)
  return render_rows


def channels(variant: str) -> int:
  return 1 if variant == "plain" else 3


# ----------------------------------------------------------------------------- the official file


class OfficialFileError(ValueError):
  """The official npz is missing or not what its name says."""


def official_path(manual_dir: Optional[str]) -> str:
  """The official file in ``manual_dir``; OfficialFileError (saying what is needed) if absent."""
  path = os.path.join(os.path.expanduser(manual_dir or ""), OFFICIAL_FILE)
  if not manual_dir or not os.path.isfile(path):
    raise OfficialFileError(
        f"dataset 'dsprites' reads {OFFICIAL_FILE} (github.com/deepmind/dsprites-dataset) from "
        f"config.data.manual_dir ({manual_dir!r} has no such file); or use "
        f"--config.data.name=dsprites_procedural, drawn offline from the same factor grid.")
  return path


def load_official(path: str, grid: ground_truth.FactorGrid = GRID
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(images bit-packed [N, 512] uint8, factor classes [N, 5] uint8) of the official npz.

  Reads the arrays ``imgs`` [N, 64, 64] and ``latents_classes`` [N, 6] (never the
  pickled ``metadata``) and checks them against the grid: N combinations, one per
  row, in index order, colour constant, pixels in {0, 1}. ``grid``: the official
  one; tests pass a small grid of the same layout.
  """
  with np.load(path, allow_pickle=False) as npz:
    missing = {"imgs", "latents_classes"} - set(npz.files)
    if missing:
      raise OfficialFileError(f"{path} lacks the arrays {sorted(missing)}; the official file "
                              f"holds imgs, latents_classes, latents_values, metadata.")
    images, classes = npz["imgs"], npz["latents_classes"]
  if images.shape[1:] != (SIZE, SIZE) or classes.shape != (len(images), 6):
    raise OfficialFileError(f"{path}: imgs {images.shape} and latents_classes {classes.shape} "
                            f"are not [N, 64, 64] and [N, 6].")
  factors = classes[:, 1:]
  if (len(images) != grid.num_examples or (classes[:, 0] != 0).any()
      or not np.array_equal(grid.index_of(factors), np.arange(len(images)))):
    raise OfficialFileError(f"{path}: latents_classes are not the {grid.num_examples} "
                            f"combinations of the dSprites grid {grid.sizes} in index order.")
  if images.max(initial=0) > 1:
    raise OfficialFileError(f"{path}: imgs should hold 0/1 pixels, not up to {images.max()}.")
  return np.packbits(images.reshape(len(images), -1), axis=1), factors.astype(np.uint8)


def unpack(rows: jax.Array, keys: Optional[jax.Array] = None) -> jax.Array:
  """Bit-packed rows [..., 512] -> uint8 [..., 64, 64, 1] (the official file's ``render``)."""
  del keys
  bits = jnp.unpackbits(jnp.asarray(rows, jnp.uint8), axis=-1)
  return bits.reshape((*rows.shape[:-1], SIZE, SIZE, 1))


# ----------------------------------------------------------------------------- splits

# dSprites has no official test split. A fixed, seeded set of TEST_SIZE combinations
# is the test split (the validation hold-out is then drawn from the rest by splits.py),
# the same on every machine; the metrics sample the whole grid, as disentanglement_lib does.
TEST_SIZE = 5_000
TEST_SEED = 26


def test_indices() -> tuple[np.ndarray, np.ndarray]:
  """(train indices, test indices) into the grid, both sorted."""
  perm = np.random.default_rng(TEST_SEED).permutation(GRID.num_examples)
  return np.sort(perm[TEST_SIZE:]), np.sort(perm[:TEST_SIZE])


# ----------------------------------------------------------------------------- distinctness

# Rotational symmetry of each shape: a square repeats every pi/2, an ellipse every pi.
SYMMETRY_PERIOD = (np.pi / 2, np.pi, 2 * np.pi)


def image_hashes(factors: np.ndarray, batch_size: int = 8192) -> np.ndarray:
  """A 64-bit hash of each procedural image [N] (equal images, equal hashes).

  Two random 32-bit weights per pixel, summed over the lit pixels modulo 2^32:
  distinct images collide with chance 2^-64 per pair, so counting distinct
  hashes counts distinct images, without keeping any image.
  """
  weights = jnp.asarray(np.random.default_rng(0).integers(0, 2**32, (SIZE * SIZE, 2),
                                                          dtype=np.uint64).astype(np.uint32))
  @jax.jit
  def hash_batch(f):
    lit = render_masks(f).reshape(f.shape[0], -1).astype(jnp.uint32)
    return lit @ weights  # uint32 products and sums wrap modulo 2^32
  parts = [np.asarray(hash_batch(jnp.asarray(factors[i:i + batch_size])))
           for i in range(0, len(factors), batch_size)]
  h = np.concatenate(parts).astype(np.uint64)
  return (h[:, 0] << np.uint64(32)) | h[:, 1]
