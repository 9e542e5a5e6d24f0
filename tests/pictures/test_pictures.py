"""Pictures of a model: the latent-space builders' geometry, and the command end to end."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from tensorboard.backend.event_processing import event_accumulator

from tests.conftest import REPO, make_config
from vae_jax.analysis import gallery as pictures
from vae_jax.evaluation import saved_run as checkpoint_eval
from vae_jax.models import gaussian_vae
from vae_jax.pictures import images
from vae_jax.pictures import latent as lp
from vae_jax.training import loop as train
from vae_jax.training import workdir as workdir_lib

H = W = 8  # the digits dataset


def _model(latent_dim=2):
  model = gaussian_vae.GaussianVAE(
      gaussian_vae.VAE(latent_dim=latent_dim, image_shape=(H, W, 1), width=16))
  return model, model.init(jax.random.PRNGKey(0))


def _grid_size(rows, cols, pad=1):
  return rows * (H + pad) + pad, cols * (W + pad) + pad


def _tile(picture, row, col, pad=1):
  y, x = pad + row * (H + pad), pad + col * (W + pad)
  return picture[y:y + H, x:x + W]


def _as_uint8(image):
  return np.round(np.clip(np.asarray(image), 0, 1) * 255).astype(np.uint8)


def test_slerp_keeps_the_norm_that_lerp_loses():
  rng = np.random.default_rng(0)
  z0, z1 = rng.normal(size=(2, 4, 512))
  t = np.linspace(0, 1, 5)
  curve = lp.slerp(z0, z1, t)
  np.testing.assert_allclose(curve[:, 0], z0, atol=1e-5)
  np.testing.assert_allclose(curve[:, -1], z1, atol=1e-5)
  # Nearly orthogonal equal-norm endpoints: the great circle keeps the norm, the line's
  # midpoint shrinks it by about 1/sqrt(2).
  norms = np.linalg.norm(curve, axis=-1) / np.linalg.norm(z0, axis=-1)[:, None]
  np.testing.assert_allclose(norms[:, 2], 1.0, atol=0.08)
  mid = np.linalg.norm(lp.lerp(z0, z1, t)[:, 2], axis=-1) / np.linalg.norm(z0, axis=-1)
  np.testing.assert_allclose(mid, 1 / np.sqrt(2), atol=0.08)


def test_interpolation_rows_start_and_end_at_their_inputs():
  model, params = _model()
  x = np.random.default_rng(0).uniform(size=(6, H, W, 1)).astype(np.float32)
  picture = lp.interpolation(model, params, x[:3], x[3:], steps=5)
  assert picture.shape == (*_grid_size(3, 7), 1)
  for r in range(3):
    np.testing.assert_array_equal(_tile(picture, r, 0), _as_uint8(x[r]))
    np.testing.assert_array_equal(_tile(picture, r, 6), _as_uint8(x[3 + r]))
  mean = model.encode(params, {"image": jnp.asarray(x[:1])})
  np.testing.assert_array_equal(_tile(picture, 0, 1), _as_uint8(model.decode(params, mean)[0]))


def test_manifold_decodes_the_prior_quantiles():
  model, params = _model()
  picture = lp.manifold(model, params, size=5)
  assert picture.shape == (5 * H, 5 * W, 1)
  q = scipy.stats.norm.ppf([0.05, 0.95])
  top_left = model.decode(params, jnp.array([[q[0], q[1]]]))[0]
  bottom_right = model.decode(params, jnp.array([[q[1], q[0]]]))[0]
  np.testing.assert_allclose(picture[:H, :W], _as_uint8(top_left), atol=1)
  np.testing.assert_allclose(picture[-H:, -W:], _as_uint8(bottom_right), atol=1)
  with pytest.raises(ValueError, match="latent_dim=3"):
    lp.manifold(*_model(3), size=5)


def test_traversals_sorted_by_kl_with_inactive_rows_marked_and_flat():
  model, params = _model(latent_dim=3)
  # Dimension 1 is cut off from the decoder: its row must not change along the sweep.
  kernel = params["dec"]["hidden_0"]["kernel"]
  params = {**params, "dec": {**params["dec"], "hidden_0": {
      **params["dec"]["hidden_0"], "kernel": kernel.at[1].set(0.0)}}}
  kl = np.array([0.5, 0.001, 2.0])
  values = np.linspace(-3, 3, 7)
  picture, order = lp.traversals(model, params, np.zeros(3), kl, values)
  assert order == [2, 0, 1]
  assert picture.shape == (*_grid_size(3, 8), 3)
  is_red = lambda t: (t[..., 0] > 200) & (t[..., 1] < 40) & (t[..., 2] < 40)
  assert is_red(_tile(picture, 2, 0)[0]).all()        # inactive: framed in red
  assert not is_red(_tile(picture, 0, 0)).any()       # active rows: no red
  flat = [_tile(picture, 2, c) for c in range(1, 8)]
  assert all((t == flat[0]).all() for t in flat)
  moving = [_tile(picture, 0, c) for c in range(1, 8)]
  assert not all((t == moving[0]).all() for t in moving)


def test_arithmetic_to_its_own_class_is_the_reconstruction():
  model, params = _model()
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(20, H, W, 1)).astype(np.float32)
  labels = np.arange(20) % 3
  codes = np.asarray(model.encode(params, {"image": jnp.asarray(x)}))
  means = lp.class_means(codes, labels)
  np.testing.assert_allclose(means[1], codes[labels == 1].mean(0))
  picture = lp.arithmetic(model, params, x[:3], labels[:3], means)
  assert picture.shape == (*_grid_size(3, 5), 1)
  for r in range(3):  # column 2 + c is class c; row r has class r
    np.testing.assert_array_equal(_tile(picture, r, 1), _tile(picture, r, 2 + r))


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory):
  """A short run with 2 latents on the labelled 8x8 digits."""
  workdir = str(tmp_path_factory.mktemp("run") / "digits2d")
  train.train_and_evaluate(make_config(model__latent_dim=2), workdir)
  return workdir


EXPECTED = {  # name -> (rows, columns) of tiles, from PictureSpec's defaults
    "reconstructions": (4 * 2, 8), "samples": (8, 8), "samples_from_likelihood": (8, 8),
    "interpolation_linear": (8, 12), "interpolation_prior_spherical": (8, 10),
    "traversals": (2, 12), "latent_arithmetic": (10, 12)}


@pytest.mark.slow
def test_pictures_command_writes_every_picture_and_tensorboard(run_2d):
  out = subprocess.run([sys.executable, "-m", "experiments.pictures", f"--workdir={run_2d}"],
                       cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  directory = pictures.output_dir(run_2d, 20)
  for name, (rows, cols) in EXPECTED.items():
    picture = images.load_png(os.path.join(directory, f"{name}.png"))
    assert picture.shape[:2] == _grid_size(rows, cols), name
  assert images.load_png(os.path.join(directory, "manifold.png")).shape == (160, 160, 1)
  scatter = images.load_png(os.path.join(directory, "latent_scatter.png"))
  assert scatter.shape == (640, 640, 3) and scatter.std() > 10  # drawn, not blank
  events = [f for f in os.listdir(directory) if f.startswith("events.out.tfevents")]
  acc = event_accumulator.EventAccumulator(os.path.join(directory, events[0]),
                                           size_guidance={"tensors": 0})
  acc.Reload()
  assert set(acc.Tags()["tensors"]) == set(EXPECTED) | {"manifold", "latent_scatter"}
  # Made once: a second call is refused and leaves the pictures alone.
  before = os.path.getmtime(os.path.join(directory, "samples.png"))
  again = subprocess.run([sys.executable, "-m", "experiments.pictures", f"--workdir={run_2d}"],
                         cwd=REPO, capture_output=True, text=True, check=False)
  assert again.returncode == 1 and "FATAL WorkdirError" in again.stderr
  assert "exists" in again.stderr
  assert os.path.getmtime(os.path.join(directory, "samples.png")) == before


@pytest.mark.slow
def test_unlabelled_models_borrow_labels_of_the_same_shape_only(run_2d, tmp_path):
  run = checkpoint_eval.load_run(run_2d)
  with pytest.raises(Exception, match="mnist_5k.*shape"):
    pictures.labelled_data(run, pictures.PictureSpec(), borrow="mnist_5k")
  unlabelled = pictures.make_pictures(run, pictures.PictureSpec(num_samples=4), labelled=None)
  assert "latent_arithmetic" not in unlabelled and "latent_scatter" in unlabelled


@pytest.mark.slow
def test_sweep_pictures_compare_members(run_2d, tmp_path):
  sweep = tmp_path / "sweep"
  sweep.mkdir()
  os.symlink(run_2d, sweep / "model.latent_dim=2")
  train.train_and_evaluate(make_config(model__latent_dim=3, model__likelihood="gaussian_learned"),
                           str(sweep / "model.latent_dim=3"))
  (sweep / "sweep.json").write_text(json.dumps({"members": [
      {"index": 0, "name": "model.latent_dim=2", "overrides": {"model.latent_dim": 2}},
      {"index": 1, "name": "model.latent_dim=3", "overrides": {"model.latent_dim": 3}},
      {"index": 2, "name": "model.latent_dim=4", "overrides": {"model.latent_dim": 4}}]}))
  path = pictures.pictures_of_sweep(str(sweep))
  comparison = images.load_png(path)
  assert comparison.shape == (880, 1260, 3)  # two finished members, three columns
  assert os.path.isdir(pictures.output_dir(str(sweep / "model.latent_dim=3"), 20))
  with pytest.raises(workdir_lib.WorkdirError, match="comparison.png exists"):
    pictures.pictures_of_sweep(str(sweep))
