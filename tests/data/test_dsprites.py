"""dSprites: the factor grid's arithmetic, the procedural images, the variants, the official file.

Distinctness is checked on every combination of shape, scale and orientation at
four positions (2,880 images) and on 20,000 random combinations: two
combinations give the same image only when they differ in orientation alone, by
less than 7 degrees from a symmetry of the shape (a square repeats every 90
degrees, an ellipse every 180, and orientation 2*pi is orientation 0): the
40-step orientation grid comes within 4.6 degrees of those symmetries, which a
sprite a few pixels wide cannot show. docs/disentanglement.md gives the count
over all 737,280 combinations.
"""

import collections
import itertools

import jax
import numpy as np
import pytest

from vae_jax.data import datasets
from vae_jax.data import dsprites
from vae_jax.data import ground_truth
from vae_jax.training import step as step_lib

GRID = dsprites.GRID


def test_index_arithmetic_round_trips():
  assert GRID.num_examples == 737_280
  assert list(GRID.bases) == [245_760, 40_960, 1_024, 32, 1]  # the official file's order
  index = np.arange(GRID.num_examples)
  factors = GRID.all_factors()
  assert np.array_equal(GRID.index_of(factors), index)
  assert np.array_equal(GRID.factors_of(index), factors)
  assert np.array_equal(factors[-1], [2, 5, 39, 31, 31])


def _symmetric_pairs_only(factors: np.ndarray) -> int:
  """Asserts equal images differ in orientation alone, near a symmetry; returns the pairs."""
  groups = collections.defaultdict(list)
  for i, h in enumerate(dsprites.image_hashes(factors)):
    groups[h].append(i)
  pairs = 0
  for members in groups.values():
    for a, b in itertools.combinations(members, 2):
      fa, fb = factors[a], factors[b]
      assert np.array_equal(np.delete(fa, 2), np.delete(fb, 2)), (fa, fb)
      period = dsprites.SYMMETRY_PERIOD[fa[0]]
      gap = abs(dsprites.ORIENTATIONS[fa[2]] - dsprites.ORIENTATIONS[fb[2]]) % period
      assert np.degrees(min(gap, period - gap)) < 7.0, (fa, fb)
      pairs += 1
  return pairs


def test_combinations_map_to_distinct_images_up_to_symmetry():
  positions = [(0, 0), (7, 19), (16, 16), (31, 31)]
  factors = np.array([(s, c, o, x, y) for s in range(3) for c in range(6) for o in range(40)
                      for x, y in positions])
  assert _symmetric_pairs_only(factors) > 0  # the square's near-symmetric orientations
  sample = GRID.factors_of(np.random.default_rng(0).choice(GRID.num_examples, 20_000,
                                                           replace=False))
  _symmetric_pairs_only(sample)


def test_orientation_two_pi_is_orientation_zero():
  f = GRID.factors_of(np.random.default_rng(1).choice(GRID.num_examples, 50))
  zero, full = f.copy(), f.copy()
  zero[:, 2], full[:, 2] = 0, 39
  assert np.array_equal(dsprites.render(zero), dsprites.render(full))


def _centroid(images):
  images = np.asarray(images)[..., 0].astype(float)
  rows, cols = np.indices(images.shape[1:]) + 0.5
  mass = images.sum(axis=(1, 2))
  return (images * rows).sum(axis=(1, 2)) / mass, (images * cols).sum(axis=(1, 2)) / mass


def test_fixing_a_factor_fixes_what_it_should():
  rs = np.random.RandomState(0)
  sampler_factors = GRID.sample_factors(400, rs)
  sampler_factors[:, 0] = rs.randint(2, size=400)   # square, ellipse: point-symmetric
  sampler_factors[:, 3] = 9                         # x fixed
  row, col = _centroid(dsprites.render(sampler_factors))
  centre_x = dsprites.centre(dsprites.POSITIONS[9])
  assert np.abs(col - centre_x).max() < 0.5                  # x fixes the column ...
  centre_y = dsprites.centre(dsprites.POSITIONS[sampler_factors[:, 4]])
  assert np.abs(row - centre_y).max() < 0.5                  # ... y the row
  # Scale fixes the area (analytic, up to the pixel edge), whatever the position.
  for shape, area in ((0, lambda s: (2 * dsprites.SQUARE_HALF_SIDE * s * dsprites.UNIT)**2),
                      (1, lambda s: np.pi * np.prod(dsprites.ELLIPSE_AXES) * (s * dsprites.UNIT)**2)):
    f = GRID.sample_factors(200, rs)
    f[:, 0] = shape
    pixels = np.asarray(dsprites.render(f)).sum(axis=(1, 2, 3))
    expected = area(dsprites.SCALES[f[:, 1]])
    assert np.abs(pixels - expected).max() < 0.12 * expected.max()
  # Each scale step grows every sprite.
  f = GRID.sample_factors(100, rs)
  areas = [np.asarray(dsprites.render(np.column_stack([f[:, 0], np.full(100, c), f[:, 2:]])))
           .sum(axis=(1, 2, 3)) for c in range(6)]
  assert (np.diff(np.stack(areas), axis=0) > 0).all()


def test_variants_as_disentanglement_lib_defines_them():
  f = GRID.sample_factors(8, np.random.RandomState(2))
  keys = jax.random.split(jax.random.PRNGKey(0), 8)
  mask = np.asarray(dsprites.render(f))[..., 0].astype(bool)
  colour = np.asarray(dsprites.renderer("color")(f, keys))
  assert colour.shape == (8, 64, 64, 3) and (colour[~mask] == 0).all()
  for i in range(8):  # one colour per image, each channel in U(0.5, 1)
    lit = colour[i][mask[i]]
    assert (lit == lit[0]).all() and (lit >= 127).all()
  noisy = np.asarray(dsprites.renderer("noisy")(f, keys))
  assert (noisy[mask] == 255).all() and noisy[~mask].std() > 60  # U(0, 1) background
  assert np.array_equal(noisy, np.asarray(dsprites.renderer("noisy")(f, keys)))  # keyed


def test_rendered_dataset_through_make_batch():
  dataset = datasets.load("dsprites_procedural")
  assert dataset.image_shape == (64, 64, 1) and dataset.binary
  assert len(dataset.train) + len(dataset.test) == GRID.num_examples
  assert not set(GRID.index_of(dataset.test)) & set(GRID.index_of(dataset.train[:50_000]))
  data = {"image": dataset.train[:100]}
  indices = np.array([3, 50, 7])
  batch = step_lib.make_batch(data, indices, jax.random.split(jax.random.PRNGKey(0), 3),
                              "binary", dataset.render)
  assert np.array_equal(np.asarray(batch["image"]),
                        np.asarray(dsprites.render(dataset.train[indices])).astype(np.float32))


def _tiny_official(path, grid, *, drop=None, shuffle=False):
  factors = grid.all_factors()
  if shuffle:
    factors = factors[::-1]
  classes = np.column_stack([np.zeros(len(factors), np.int64), factors]).astype(np.int64)
  images = np.asarray(dsprites.render(np.column_stack([factors[:, :3], factors[:, 3:] * 10])))
  arrays = {"imgs": images[..., 0], "latents_classes": classes,
            "latents_values": classes.astype(np.float64),
            "metadata": np.array(["metadata"])}
  arrays.pop(drop, None)
  np.savez(path, **arrays)
  return images


def test_official_file_loader_on_a_tiny_file(tmp_path):
  grid = ground_truth.FactorGrid(GRID.names, (3, 2, 2, 2, 2))
  path = str(tmp_path / dsprites.OFFICIAL_FILE)
  images = _tiny_official(path, grid)
  packed, factors = dsprites.load_official(path, grid)
  assert packed.shape == (grid.num_examples, 512)
  assert np.array_equal(factors, grid.all_factors())
  assert np.array_equal(np.asarray(dsprites.unpack(packed)), images)
  _tiny_official(path, grid, shuffle=True)
  with pytest.raises(dsprites.OfficialFileError, match="index order"):
    dsprites.load_official(path, grid)
  _tiny_official(path, grid, drop="latents_classes")
  with pytest.raises(dsprites.OfficialFileError, match="latents_classes"):
    dsprites.load_official(path, grid)
  with pytest.raises(dsprites.OfficialFileError, match="combinations"):  # not the full grid
    dsprites.load_official(_tiny_path(tmp_path, grid))
  with pytest.raises(datasets.DatasetUnavailableError, match=dsprites.OFFICIAL_FILE):
    datasets.load("dsprites", manual_dir=str(tmp_path / "nothing"))


def _tiny_path(tmp_path, grid):
  path = str(tmp_path / "full_layout.npz")
  _tiny_official(path, grid)
  return path


def test_sampler_observations_of_fixed_factors():
  sampler = datasets.ground_truth_sampler("dsprites_procedural")
  rs = np.random.RandomState(0)
  factors = sampler.fix_factor(sampler.sample_factors(16, rs), 0)
  assert (factors[:, 0] == factors[0, 0]).all()
  images = sampler.observations(factors, rs)
  assert images.shape == (16, 64, 64, 1) and images.dtype == np.uint8
  assert np.array_equal(images, np.asarray(dsprites.render(factors)))
  with pytest.raises(ValueError, match="'scale' takes classes 0..5"):
    sampler.observations(np.array([[0, 6, 0, 0, 0]]), rs)
