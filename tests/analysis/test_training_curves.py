"""Training-curve plots of a sweep: drawn from metrics.jsonl, mean over seeds, only when logged."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from vae_jax.analysis import plots
from vae_jax.analysis import tables

STEPS = (100, 200, 300)  # periodic evaluations (k = 50); the final one at 390 uses k = 1000


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def _fake_sweep(root, with_metrics=True):
  """2 free-bits settings x 2 seeds; each run's rate curve is (seed + 1) * lambda * step / 100."""
  members, rng = [], np.random.default_rng(0)
  for free_bits in (0.0, 0.5):
    for seed in (0, 1):
      name = f"objective.free_bits={free_bits},seed={seed}"
      members.append({"index": len(members), "name": name,
                      "overrides": {"objective.free_bits": free_bits, "seed": seed}})
      test = {"neg_elbo": 90.0, "elbo": -90.0, "rate": 5.0, "distortion": 85.0, "nll": 88.0,
              "num_importance_samples": 1000, "active_units": 3, "kl_per_dim": [1.0] * 5}
      _write(os.path.join(root, name, "results.json"), json.dumps({
          "test": test, "unit": "nats per example", "steps": 390, "epochs": 1.0,
          "batch_size": 128, "seed": seed, "eval_seed": 0,
          "dataset": {"used": "binarized_mnist", "preprocessing": "binary",
                      "test_split": "test", "num_test": 10000}}))
      if not with_metrics:
        continue
      lines = [{"step": 50, "train/loss": 100.0}]  # train records are not test evaluations
      for step, k in [(s, 50) for s in STEPS] + [(390, 1000)]:
        lines.append({"step": step, "test/rate": (seed + 1) * free_bits * step / 100,
                      "test/active_units": float(seed), "test/nll": 100.0 - step / 100,
                      "test/neg_elbo": 101.0, "test/num_importance_samples": float(k),
                      "test/kl_dim_000": rng.uniform()})
      _write(os.path.join(root, name, "metrics.jsonl"),
             "".join(json.dumps(line) + "\n" for line in lines))
  _write(os.path.join(root, "sweep.json"), json.dumps(
      {"config": "studies/collapse/config.py", "extra_overrides": [], "members": members}))


def test_training_curves_are_means_over_seeds_and_drawn(tmp_path):
  root = str(tmp_path / "sweep")
  _fake_sweep(root)
  ab = tables.summarize(root)
  curves = plots.training_curves(ab)
  assert len(curves) == 2
  fb = curves["free bits λ=0.5"]  # tables.FIELD_NAMES spells the field
  assert sorted(fb["eval/rate"]) == [*STEPS, 390]
  for step in STEPS:  # seeds 0 and 1: rates 0.5 * step / 100 and 1.0 * step / 100
    assert np.mean(fb["eval/rate"][step]) == pytest.approx(0.75 * step / 100)
  assert "train/loss" not in fb and 50 not in fb["eval/rate"]

  paths = plots.write_plots(ab)
  assert [os.path.basename(p) for p in paths] == ["training_curves.png"]
  with Image.open(paths[0]) as image:
    image.verify()
  with Image.open(paths[0]) as image:
    assert image.format == "PNG" and 1000 <= image.size[0] <= 2000 and 300 <= image.size[1] <= 800
  assert 10_000 < os.path.getsize(paths[0]) < 1_000_000


def test_no_curves_without_two_logged_evaluations(tmp_path):
  root = str(tmp_path / "sweep")
  _fake_sweep(root, with_metrics=False)
  ab = tables.summarize(root)
  assert not plots.has_training_curves(ab) and plots.write_plots(ab) == []
  one = os.path.join(root, "objective.free_bits=0.0,seed=0", "metrics.jsonl")
  _write(one, json.dumps({"step": 390, "test/rate": 1.0}) + "\n")  # one evaluation only
  assert not plots.has_training_curves(tables.summarize(root))


def test_curves_of_runs_with_validation_are_the_validation_evaluations(tmp_path):
  """Runs since validation splits: periodic evaluations on validation, test once at the end."""
  root = str(tmp_path / "sweep")
  _fake_sweep(root)
  for name in os.listdir(root):
    path = os.path.join(root, name, "metrics.jsonl")
    if not os.path.exists(path):
      continue
    with open(path, encoding="utf-8") as f:
      lines = [json.loads(line) for line in f]
    renamed = [{k.replace("test/", "validation/"): v for k, v in r.items()} for r in lines
               if r["step"] != 390]
    renamed.append({"step": 390, "test/rate": 99.0, "test/nll": 1.0})  # the final test
    _write(path, "".join(json.dumps(r) + "\n" for r in renamed))
  fb = plots.training_curves(tables.summarize(root))["free bits λ=0.5"]
  assert sorted(fb["eval/rate"]) == list(STEPS)  # the test evaluation is not on the curve
  assert np.mean(fb["eval/rate"][200]) == pytest.approx(0.75 * 2)
