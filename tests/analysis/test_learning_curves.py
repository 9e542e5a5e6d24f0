"""Learning-curve tables of a sweep (training loss per setting over steps) and per-layer rates."""

import json
import os

import numpy as np
import pytest

from vae_jax.analysis import learning_curves
from vae_jax.analysis import table_formats
from vae_jax.analysis import tables

SEEDS = (0, 1, 2)
STEPS = tuple(range(100, 1001, 100))  # 10 logged steps: more than MAX_COLUMNS


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def _loss(layers, seed, step):
  """One layer falls to a plateau; two layers start higher and are still falling at the end."""
  if layers == 1:
    return 100.0 + 50.0 * np.exp(-step / 200) + seed
  return 300.0 - 0.15 * step + 2 * seed


def _sweep(root, *, logged=STEPS):
  members = []
  for layers in (1, 2):
    for seed in SEEDS:
      name = f"model.name={layers},seed={seed}"
      members.append({"index": len(members), "name": name,
                      "overrides": {"model.name": f"m{layers}", "seed": seed}})
      test = {"neg_elbo": 90.0, "elbo": -90.0, "rate": 5.0 + seed, "distortion": 85.0}
      if layers == 2:  # the two-layer family reports each layer's rate
        test.update(rate_z1=4.0 + seed, rate_z2=1.0)
      _write(os.path.join(root, name, "results.json"), json.dumps({
          "test": test, "unit": "nats per example", "steps": 1000, "epochs": 1.0,
          "batch_size": 20, "seed": seed, "eval_seed": 0,
          "dataset": {"used": "binarized_mnist", "preprocessing": "binary",
                      "test_split": "test", "num_test": 10000}}))
      lines = []
      for step in logged:
        lines.append({"step": step, "train/loss": _loss(layers, seed, step),
                      "train/objective": -_loss(layers, seed, step)})
        lines.append({"step": step, "train/steps_per_sec": 50.0})
      _write(os.path.join(root, name, "metrics.jsonl"),
             "".join(json.dumps(line) + "\n" for line in lines))
  _write(os.path.join(root, "sweep.json"), json.dumps(
      {"config": "configs/iwae.py", "extra_overrides": [], "members": members}))


def _row(text, label):
  return next(line for line in text.splitlines() if line.startswith(f"| {label} |"))


def test_each_settings_loss_is_its_seeds_mean_and_std_at_spread_steps(tmp_path):
  root = str(tmp_path / "sweep")
  _sweep(root)
  ab = tables.summarize(root)
  paths = learning_curves.write(ab)
  assert paths == [os.path.join(root, "tables", "learning_curves.md")]
  text = open(paths[0], encoding="utf-8").read()
  header = next(line for line in text.splitlines() if line.startswith("| model.name |"))
  shown = [int(c.split()[1]) for c in header.split(" | ") if c.startswith("step ")]
  assert len(shown) == learning_curves.MAX_COLUMNS and shown[0] == 100 and shown[-1] == 1000
  assert shown == sorted(set(shown))
  for layers in (1, 2):
    cells = _row(text, f"m{layers}").strip("| ").split(" | ")
    assert cells[1] == "3"
    for step, cell in zip(shown, cells[2:]):
      losses = [_loss(layers, seed, step) for seed in SEEDS]
      assert cell == f"{np.mean(losses):.2f} ± {np.std(losses, ddof=1):.2f}"
    falls = [_loss(layers, s, 900) - _loss(layers, s, 1000) for s in SEEDS]
    assert cells[-1] == f"{np.mean(falls):.2f} ± {np.std(falls, ddof=1):.2f}"
  # The reason the table exists: the two-layer curve is still falling fast, the other is flat.
  assert np.mean(falls) == pytest.approx(15.0)


def test_no_table_without_a_curve(tmp_path):
  root = str(tmp_path / "sweep")
  _sweep(root, logged=(1000,))  # one logged step is a point, not a curve
  assert learning_curves.write(tables.summarize(root)) == []
  assert not os.path.exists(os.path.join(root, "tables", "learning_curves.md"))


def test_a_seed_missing_a_step_leaves_that_step_out_of_its_setting(tmp_path):
  root = str(tmp_path / "sweep")
  _sweep(root)
  path = os.path.join(root, "model.name=2,seed=1", "metrics.jsonl")
  lines = [line for line in open(path, encoding="utf-8")
           if json.loads(line)["step"] != 1000]
  _write(path, "".join(lines))
  rows = dict((r.setting["model.name"], c) for r, c in learning_curves.curves(
      tables.summarize(root)))
  assert 1000 in rows["m1"] and 1000 not in rows["m2"] and len(rows["m2"][900]) == 3


def test_per_layer_rates_are_columns_where_a_model_reports_them(tmp_path):
  root = str(tmp_path / "sweep")
  _sweep(root)
  ab = tables.summarize(root)
  assert {"rate_z1", "rate_z2"} <= set(ab.metrics)
  md = table_formats.to_markdown(ab)
  assert "| rate z1 | rate z2 |" in md
  two = _row(md, "m2").split(" | ")
  assert "5.00 ± 1.00" in two and "1.00 ± 0.00" in two
  assert _row(md, "m1").count("—") == 2  # the one-layer model has no per-layer rates
