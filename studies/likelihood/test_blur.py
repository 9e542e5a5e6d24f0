"""Blur in numbers: edge energy's closed forms and Jensen bound, stats of tiny trained runs."""

import json
import math
import os

import numpy as np
import pytest

from tests.conftest import make_config
from studies.likelihood import blur
from vae_jax.evaluation import saved_run as checkpoint_eval
from vae_jax.data import datasets
from vae_jax.training import loop as train
from vae_jax.training import workdir as workdir_lib


def test_edge_energy_of_a_step_edge_and_of_its_blur():
  step = np.zeros((1, 6, 6, 1))
  step[:, :, 3:] = 1.0
  soft = np.zeros((1, 6, 6, 1))
  soft[:, :, 3] = 0.5
  soft[:, :, 4:] = 1.0
  # One jump of 1 per row of the 5 x 5 differences: 5 / 25; split in two halves: 2 * 0.25 * 5 / 25.
  np.testing.assert_allclose(blur.edge_energy(step), [1 / 5])
  np.testing.assert_allclose(blur.edge_energy(soft), [0.5 / 5])
  np.testing.assert_allclose(blur.edge_energy(np.full((2, 5, 5, 1), 0.3)), [0.0, 0.0])


def test_averaging_images_never_adds_edge_energy():
  """Jensen: G(mean of images) <= mean of G, the gap being the gradients' variance."""
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(50, 8, 8, 1))
  mean_image = images.mean(0, keepdims=True)
  assert blur.edge_energy(mean_image)[0] < 0.1 * blur.edge_energy(images).mean()
  same = np.repeat(images[:1], 5, axis=0)
  np.testing.assert_allclose(blur.edge_energy(same.mean(0, keepdims=True)),
                             blur.edge_energy(same[:1]))


def _train(workdir, **overrides):
  config = make_config(eval__num_importance_samples=0, num_train_steps=10, images__num_samples=0,
                       images__num_reconstructions=0, **overrides)
  train.train_and_evaluate(config, str(workdir))
  return config


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
  """A two-member 'sweep' of tiny runs on embedded digits: Bernoulli and a fixed Gaussian."""
  root = tmp_path_factory.mktemp("sweep")
  members = [{"model.likelihood": "bernoulli", "seed": 0},
             {"model.likelihood": "gaussian_fixed", "model.gaussian_scale": 0.5, "seed": 0}]
  entries = []
  for i, overrides in enumerate(members):
    name = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    _train(root / name, **{k.replace(".", "__"): v for k, v in overrides.items()})
    entries.append({"index": i, "name": name, "overrides": overrides})
  workdir_lib.write_json(str(root / "sweep.json"), {"config": "test", "extra_overrides": [],
                                                    "members": entries})
  return root


@pytest.mark.slow
def test_stats_of_a_run(sweep_dir):
  run = checkpoint_eval.load_run(str(sweep_dir / "model.likelihood=bernoulli,seed=0"))
  stats = blur.blur_stats(run, blur.BlurSpec(num_images=100, num_samples=50, seed=3))
  assert stats == blur.blur_stats(run, blur.BlurSpec(num_images=100, num_samples=50, seed=3))
  test = datasets.load("digits").test[:100] / 255.0
  assert stats["data_edge_energy"] == pytest.approx(blur.edge_energy(test).mean(), rel=1e-12)
  assert 0 < stats["recon_rmse"] < 1 and stats["num_images"] == 100
  for key in ("recon_edge_ratio", "sample_edge_ratio", "observation_edge_ratio"):
    assert 0 <= stats[key] < 1e3 and math.isfinite(stats[key])
  assert "scale_median" not in stats  # Bernoulli: no scale
  fixed = checkpoint_eval.load_run(
      str(sweep_dir / "model.gaussian_scale=0.5,model.likelihood=gaussian_fixed,seed=0"))
  stats = blur.blur_stats(fixed, blur.BlurSpec(num_images=100, num_samples=50))
  assert stats["scale_min"] == stats["scale_max"] == pytest.approx(0.5, rel=1e-6)
  # Draws of p(x|z) add independent noise of sigma 0.5 to the mean: more edge energy.
  assert stats["observation_edge_ratio"] > stats["sample_edge_ratio"] + 0.1


@pytest.mark.slow
def test_write_blur_pools_a_sweep_and_refuses_to_overwrite(sweep_dir):
  paths = blur.write_blur(str(sweep_dir), blur.BlurSpec(num_images=60, num_samples=30))
  assert [os.path.basename(p) for p in paths] == ["blur.json", "blur.md"]
  record = json.load(open(paths[0], encoding="utf-8"))
  assert len(record["runs"]) == 2 and record["spec"]["num_images"] == 60
  md = open(paths[1], encoding="utf-8").read()
  assert "| likelihood=bernoulli | 1 |" in md
  assert "| likelihood=gaussian_fixed, σ=0.5 | 1 |" in md and r"sample E[x\|z] edges" in md
  bern = record["runs"]["model.likelihood=bernoulli,seed=0"]
  assert f"| {bern['recon_rmse']:.4f} | {bern['recon_edge_ratio']:.3f} |" in md
  with pytest.raises(workdir_lib.WorkdirError, match="blur exists"):
    blur.write_blur(str(sweep_dir))
