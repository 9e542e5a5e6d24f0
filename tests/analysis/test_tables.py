"""Ablation tables and plots of synthetic sweeps: rows, statistics, files, refusals."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from vae_jax.analysis import plots
from vae_jax.analysis import table_formats
from vae_jax.analysis import tables

METRICS = ("neg_elbo", "nll", "rate", "distortion", "active_units", "mutual_information")


def _results(rng, seed, *, k=5000, dataset="binarized_mnist", latent_dim=20):
  rate, distortion = rng.uniform(5, 40), rng.uniform(60, 100)
  test = {"neg_elbo": rate + distortion, "elbo": -(rate + distortion), "rate": rate,
          "distortion": distortion, "active_units": int(rng.integers(1, latent_dim + 1)),
          "mutual_information": rng.uniform(1, 9), "kl_per_dim": [0.5] * latent_dim,
          "eval_seed": 0, "posterior_collapse": None}
  if k:
    test.update(nll=rate + distortion - rng.uniform(1, 8), num_importance_samples=k)
  return {"test": test, "unit": "nats per example", "steps": 390, "epochs": 1.0,
          "batch_size": 128, "seed": seed, "eval_seed": 0,
          "dataset": {"requested": dataset, "used": dataset, "preprocessing": "binary",
                      "num_train": 50000, "num_test": 10000, "train_split": "train",
                      "test_split": "test", "fallback_reason": None}}


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f)


def _sweep(root, field, values, seeds=(0, 1), *, failed=(), missing=(), special=None):
  """Writes DIR/sweep.json and results.json per member; returns {name: results}.

  ``failed`` members get a failure.json, ``missing`` ones nothing; ``special``
  maps a member name to keyword arguments of _results (e.g. another k).
  """
  rng = np.random.default_rng(0)
  members, written = [], {}
  for value in values:
    for seed in seeds:
      name = f"{field}={value},seed={seed}"
      members.append({"index": len(members), "name": name,
                      "overrides": {field: value, "seed": seed}})
      if name in failed:
        _write(os.path.join(root, name, "failure.json"), {
            "returncode": 1, "log": os.path.join(root, name, "log.txt"),
            "tail": "I1121 step 10\nTraceback (most recent call last):\n  File \"x.py\"\n"
                    "ValueError: boom at step 10\n"})
      elif name not in missing:
        latent_dim = value if field == "model.latent_dim" else 20
        written[name] = _results(rng, seed, latent_dim=latent_dim,
                                 **(special or {}).get(name, {}))
        _write(os.path.join(root, name, "results.json"), written[name])
  _write(os.path.join(root, "sweep.json"), {"config": "configs/beta.py",
                                            "extra_overrides": ["--config.num_epochs=1"],
                                            "members": members})
  return written


def _expected(written, field, value):
  """{metric: (numpy mean, numpy sample std)} over the members with field=value."""
  runs = [r for name, r in written.items() if name.startswith(f"{field}={value},")]
  return {m: (np.mean([r["test"][m] for r in runs]), np.std([r["test"][m] for r in runs], ddof=1))
          for m in METRICS}


def _listing(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root) for f in files)


def _assert_png(path):
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0


@pytest.mark.parametrize("field, values, pngs", [
    ("objective.beta", (10.0, 0.5, 2.0), ("rate_distortion.png", "active_units_vs_beta.png")),
    ("model.latent_dim", (32, 4), ("nll_vs_latent_dim.png", "active_units_vs_latent_dim.png"))])
def test_rows_statistics_and_files(tmp_path, field, values, pngs):
  root = str(tmp_path / "sweep")
  written = _sweep(root, field, values)
  os.makedirs(os.path.join(root, "tables"))
  _write(os.path.join(root, "tables", "mine.json"), {"user": "file"})  # not ours: kept
  before = _listing(root)
  ab = tables.summarize(root)
  paths = table_formats.write_tables(ab) + plots.write_plots(ab)

  # One row per setting, sorted numerically (0.5 < 2 < 10, not as text); 2 seeds each.
  assert ab.swept == (field,)
  assert [r.setting[field] for r in ab.rows] == sorted(values)
  assert [r.n for r in ab.rows] == [2] * len(values) and not ab.failed and not ab.missing
  for row in ab.rows:
    for metric, (mean, std) in _expected(written, field, row.setting[field]).items():
      assert row.stats[metric].mean == pytest.approx(mean, rel=1e-12)
      assert row.stats[metric].std == pytest.approx(std, rel=1e-12)

  # CSV: the same numbers back, full precision, separate mean and std columns.
  with open(os.path.join(root, "tables", "ablation.csv"), encoding="utf-8") as f:
    parsed = list(csv.DictReader(f))
  assert len(parsed) == len(values)
  for line, row in zip(parsed, ab.rows):
    assert float(line[field]) == row.setting[field] and int(line["n"]) == 2
    assert line["seeds"] == "0 1"
    for metric in METRICS:
      assert float(line[f"{metric}_mean"]) == row.stats[metric].mean
      assert float(line[f"{metric}_std"]) == row.stats[metric].std

  # Markdown and LaTeX: the caption, the headers, every row.
  md = open(os.path.join(root, "tables", "ablation.md"), encoding="utf-8").read()
  tex = open(os.path.join(root, "tables", "ablation.tex"), encoding="utf-8").read()
  assert "binarized_mnist" in md and "k = 5000" in md and "390 steps (1 epoch)" in md
  assert "nats per example, mean ± std over seeds" in md
  assert ("| β |" if field == "objective.beta" else "| latent dim |") in md
  assert "NLL (IWAE, k=5000)" in md and r"NLL (IWAE, $k=5000$)" in tex
  assert r"\toprule" in tex and r"\bottomrule" in tex and r"\begin{tabular}" in tex
  for row in ab.rows:
    s = row.stats["neg_elbo"]
    value = f"{row.setting[field]:g}"
    assert f"| {value} | 2 | {s.mean:.2f} ± {s.std:.2f} |" in md
    assert f"{value} & 2 & {s.mean:.2f} $\\pm$ {s.std:.2f} &" in tex

  # PNGs for the swept field only; nothing else in DIR changed.
  assert sorted(os.path.basename(p) for p in paths if p.endswith(".png")) == sorted(pngs)
  for name in pngs:
    _assert_png(os.path.join(root, "plots", name))
  made = {os.path.join("tables", f"ablation.{e}") for e in ("md", "csv", "tex")}
  made |= {os.path.join("plots", name) for name in pngs}
  assert _listing(root) == sorted(set(before) | made)
  table_formats.write_tables(ab)  # regenerating is allowed
  assert json.load(open(os.path.join(root, "tables", "mine.json"))) == {"user": "file"}


def test_failed_and_missing_members_are_reported(tmp_path):
  root = str(tmp_path / "sweep")
  failed, missing = "objective.beta=1.0,seed=1", "objective.beta=4.0,seed=0"
  written = _sweep(root, "objective.beta", (1.0, 4.0), failed=[failed], missing=[missing])
  ab = tables.summarize(root)
  assert [m.name for m in ab.failed] == [failed] and [m.name for m in ab.missing] == [missing]
  assert ab.failed[0].failure_reason() == "returncode 1: ValueError: boom at step 10"
  assert [(r.setting["objective.beta"], r.n) for r in ab.rows] == [(1.0, 1), (4.0, 1)]
  only = written["objective.beta=1.0,seed=0"]["test"]
  assert ab.rows[0].stats["rate"].mean == only["rate"] and ab.rows[0].stats["rate"].std is None
  table_formats.write_tables(ab)
  md = open(os.path.join(root, "tables", "ablation.md"), encoding="utf-8").read()
  assert f"| 1 | 1 | {only['neg_elbo']:.2f} |" in md  # n = 1: the mean only, no ±
  assert "n = 1" in md and "±" not in md.split("\n\n")[1]
  assert f"  - {failed}: returncode 1: ValueError: boom at step 10" in md
  assert "Missing (1 of 4 members" in md and missing in md
  tex = open(os.path.join(root, "tables", "ablation.tex"), encoding="utf-8").read()
  assert failed in tex and missing in tex
  with open(os.path.join(root, "tables", "ablation.csv"), encoding="utf-8") as f:
    assert [line["rate_std"] for line in csv.DictReader(f)] == ["", ""]


def test_a_sweep_without_finished_members_is_refused(tmp_path):
  root = str(tmp_path / "sweep")
  _sweep(root, "objective.beta", (1.0,), failed=["objective.beta=1.0,seed=0"],
         missing=["objective.beta=1.0,seed=1"])
  with pytest.raises(tables.TableError, match="1 failed, 1 missing"):
    tables.summarize(root)
  with pytest.raises(tables.TableError, match="no sweep.json"):
    tables.summarize(str(tmp_path))


@pytest.mark.parametrize("special, field, value", [
    ({"dataset": "mnist"}, "dataset.used", "mnist"),
    ({"k": 100}, "test.num_importance_samples", "100"),
    ({"k": 0}, "test.num_importance_samples", "absent")])
def test_mixed_protocols_are_refused(tmp_path, special, field, value):
  root = str(tmp_path / "sweep")
  odd = "objective.beta=2.0,seed=1"
  _sweep(root, "objective.beta", (1.0, 2.0), special={odd: special})
  with pytest.raises(tables.MixedResultsError) as e:
    tables.summarize(root)
  assert f"{field} differs" in str(e.value) and f"{value} in {odd}" in str(e.value)
  assert "objective.beta=1.0,seed=0" in str(e.value)
  assert not os.path.exists(os.path.join(root, "tables"))


@pytest.mark.slow
def test_entry_point(tmp_path):
  good, mixed = str(tmp_path / "good"), str(tmp_path / "mixed")
  _sweep(good, "model.latent_dim", (2, 8), missing=["model.latent_dim=8,seed=1"])
  _sweep(mixed, "model.latent_dim", (2, 8), special={"model.latent_dim=8,seed=1": {"k": 10}})

  def run(workdir):
    return subprocess.run([sys.executable, "-m", "experiments.tables", f"--workdir={workdir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)

  ok = run(good)
  assert ok.returncode == 0, ok.stderr
  assert "| latent dim | n | test −ELBO |" in ok.stdout and "model.latent_dim=8,seed=1" in ok.stdout
  assert "4 members: 3 done, 0 failed, 1 missing." in ok.stdout
  for name in ("ablation.md", "ablation.csv", "ablation.tex"):
    assert os.path.exists(os.path.join(good, "tables", name))
  _assert_png(os.path.join(good, "plots", "nll_vs_latent_dim.png"))
  bad = run(mixed)
  assert bad.returncode == 1
  assert "MixedResultsError" in bad.stderr and "test.num_importance_samples" in bad.stderr
  assert "Traceback" not in bad.stderr + bad.stdout


def test_members_that_repeat_a_seed_are_refused(tmp_path):
  root = str(tmp_path / "sweep")
  _sweep(root, "objective.beta", (1.0,))
  with open(os.path.join(root, "sweep.json"), encoding="utf-8") as f:
    sweep = json.load(f)
  sweep["members"][1]["overrides"].pop("seed")  # falls back to results.json's seed ...
  _write(os.path.join(root, "objective.beta=1.0,seed=1", "results.json"),
         _results(np.random.default_rng(1), 0))  # ... which repeats seed 0
  _write(os.path.join(root, "sweep.json"), sweep)
  with pytest.raises(tables.TableError, match="share a setting and a seed"):
    tables.summarize(root)


def test_runs_scored_without_iwae_have_no_nll_column(tmp_path):
  root = str(tmp_path / "sweep")
  _sweep(root, "objective.beta", (1.0, 2.0), special={
      f"objective.beta={b},seed={s}": {"k": 0} for b in (1.0, 2.0) for s in (0, 1)})
  ab = tables.summarize(root)
  assert "nll" not in ab.metrics and ab.num_importance_samples is None
  md = table_formats.to_markdown(ab)
  assert "NLL not evaluated (k = 0)" in md and "| NLL" not in md
  assert "nll_mean" not in table_formats.to_csv(ab)


def _likelihood_sweep(root, odd=None):
  """A sweep over model.likelihood: Bernoulli on binarized pixels, Gaussians on dequantized
  ones (so preprocessing and unit differ by row, as they must); ``odd`` member gets 'dynamic'."""
  rng = np.random.default_rng(0)
  members, written = [], {}
  for likelihood in ("gaussian_learned", "bernoulli"):
    for seed in (0, 1):
      name = f"model.likelihood={likelihood},seed={seed}"
      members.append({"index": len(members), "name": name,
                      "overrides": {"model.likelihood": likelihood, "seed": seed}})
      results = _results(rng, seed)
      if likelihood != "bernoulli" and name != odd:
        results["dataset"]["preprocessing"] = "dequantize"
        results["unit"] = "nats per example (bits_per_dim: bits per dimension)"
        results["test"].update(bits_per_dim=rng.uniform(1, 2), nll_bits_per_dim=rng.uniform(1, 2))
      written[name] = results
      _write(os.path.join(root, name, "results.json"), results)
  _write(os.path.join(root, "sweep.json"), {"config": "studies/likelihood/config.py",
                                            "extra_overrides": [], "members": members})
  return written


def test_a_likelihood_sweep_shows_each_rows_pixels_and_bits_per_dim(tmp_path):
  root = str(tmp_path / "sweep")
  written = _likelihood_sweep(root)
  ab = tables.summarize(root)
  assert ab.swept == ("model.likelihood",) and ab.varying == ("dataset.preprocessing", "unit")
  assert [r.setting["model.likelihood"] for r in ab.rows] == ["bernoulli", "gaussian_learned"]
  assert [r.protocol["dataset.preprocessing"] for r in ab.rows] == ["binary", "dequantize"]
  assert "bits_per_dim" not in ab.rows[0].stats
  learned = [written[f"model.likelihood=gaussian_learned,seed={s}"]["test"] for s in (0, 1)]
  assert ab.rows[1].stats["nll_bits_per_dim"].mean == pytest.approx(
      np.mean([t["nll_bits_per_dim"] for t in learned]), rel=1e-12)
  md = table_formats.to_markdown(ab)
  assert "| likelihood | pixels | unit | n |" in md and "NLL bits/dim (IWAE, k=5000)" in md
  assert "pixels by row" in md and "units by row" in md and "not comparable" in md
  bernoulli = md.split("\n")[4]
  assert bernoulli.startswith("| bernoulli | binary | nats per example | 2 |")
  assert bernoulli.endswith("| — | — |")  # no bits/dim for binary data
  with open(os.path.join(table_formats.write_tables(ab)[1]), encoding="utf-8") as f:
    parsed = list(csv.DictReader(f))
  assert [line["dataset.preprocessing"] for line in parsed] == ["binary", "dequantize"]
  assert "\\begin{tabular}" in table_formats.to_latex(ab)


def test_pixels_must_still_agree_within_a_likelihood_and_elsewhere(tmp_path):
  odd = "model.likelihood=gaussian_learned,seed=1"
  _likelihood_sweep(str(tmp_path / "within"), odd=odd)
  with pytest.raises(tables.MixedResultsError, match="dataset.preprocessing differs: .* in "
                                                     + odd.replace(".", r"\.")):
    tables.summarize(str(tmp_path / "within"))
  root = str(tmp_path / "beta")  # a sweep that does not decide the pixels may not mix them
  _sweep(root, "objective.beta", (1.0, 2.0))
  path = os.path.join(root, "objective.beta=2.0,seed=0", "results.json")
  results = json.load(open(path, encoding="utf-8"))
  results["dataset"]["preprocessing"] = "dynamic"
  _write(path, results)
  with pytest.raises(tables.MixedResultsError, match="dataset.preprocessing differs"):
    tables.summarize(root)


def test_runs_with_validation_show_it_and_pool_over_early_stopped_lengths(tmp_path):
  """New results.json: validation figures and the selected step are columns; runs that
  stopped early (different steps, the same planned_steps) still pool; old runs did not
  record these and show no such columns (tested above)."""
  root = str(tmp_path / "sweep")
  written = _sweep(root, "objective.beta", [1.0], seeds=(0, 1, 2))
  for i, (name, results) in enumerate(sorted(written.items())):
    results.update(steps=200 + 10 * i, planned_steps=390,
                   validation={"neg_elbo": 90.0 + i},
                   selection={"checkpoint_step": 100 + 10 * i, "metric": "neg_elbo"})
    _write(os.path.join(root, name, "results.json"), results)
  ab = tables.summarize(root)
  assert ab.protocol["steps"] == 390
  assert {"validation.neg_elbo", "selection.checkpoint_step"} <= set(ab.metrics)
  (row,) = ab.rows
  assert row.stats["validation.neg_elbo"].mean == pytest.approx(91.0)
  assert row.stats["selection.checkpoint_step"].mean == pytest.approx(110.0)
  assert "validation −ELBO" in table_formats.to_markdown(ab)


def test_members_scored_for_disentanglement_gain_the_metric_columns(tmp_path):
  root = str(tmp_path / "sweep")
  _sweep(root, "objective.beta", (1.0, 4.0))
  assert not any(k.startswith("disentanglement.") for k in tables.summarize(root).metrics)
  mig = {1.0: (0.05, 0.15), 4.0: (0.20, 0.30)}
  for beta, values in mig.items():
    for seed, value in enumerate(values):
      _write(os.path.join(root, f"objective.beta={beta},seed={seed}", "disentanglement.json"),
             {"scores": {"mig": {"discrete_mig": value, "mutual_information": [[0.1]]},
                         "beta_vae": {"eval_accuracy": 0.5 + value}}})
  ab = tables.summarize(root)
  assert {"disentanglement.mig.discrete_mig",
          "disentanglement.beta_vae.eval_accuracy"} <= set(ab.metrics)
  assert "disentanglement.sap.SAP_score" not in ab.metrics  # no member has it
  for row in ab.rows:
    values = mig[row.setting["objective.beta"]]
    stat = row.stats["disentanglement.mig.discrete_mig"]
    assert stat.mean == pytest.approx(np.mean(values))
    assert stat.std == pytest.approx(np.std(values, ddof=1))
  md = table_formats.to_markdown(ab)
  assert "| MIG" in md and "BetaVAE" in md and "0.100 ± 0.071" in md
  assert "disentanglement_vs_beta.png" in [os.path.basename(p) for p in plots.write_plots(ab)]


def test_a_study_of_models_gets_one_table_per_model_and_their_spread(tmp_path):
  """configs/dsprites_study.py's layout: each model with its own hyperparameter."""
  from vae_jax.analysis import model_study  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / "study")
  grid = {"factor_vae": ("objective.gamma", (10.0, 40.0)),
          "dip_vae_ii": ("objective.lambda_od", (1.0,))}
  rng, members, mig = np.random.default_rng(0), [], {}
  for model, (field, values) in grid.items():
    for value in values:
      for seed in (0, 1):
        overrides = {"objective.regularizer": model, field: value, "seed": seed}
        name = ",".join(f"{k}={overrides[k]}" for k in sorted(overrides))
        members.append({"index": len(members), "name": name, "overrides": overrides})
        _write(os.path.join(root, name, "results.json"), _results(rng, seed))
        mig[name] = float(rng.uniform(0, 0.3))
        _write(os.path.join(root, name, "disentanglement.json"),
               {"scores": {"mig": {"discrete_mig": mig[name]}}})
  _write(os.path.join(root, "sweep.json"), {"config": "configs/dsprites_study.py",
                                            "extra_overrides": [], "members": members})
  ab = tables.summarize(root)
  assert model_study.applies(ab) and len(ab.rows) == 3
  md = model_study.to_markdown(ab)
  assert "## FactorVAE" in md and "## DIP-VAE-II" in md
  factor = md.split("## FactorVAE")[1].split("## ")[0]
  assert factor.count("\n| 10 |") == 1 and factor.count("\n| 40 |") == 1
  gamma_10 = [v for k, v in mig.items() if "gamma=10.0" in k]
  assert f"{np.mean(gamma_10):.3f} ± {np.std(gamma_10, ddof=1):.3f}" in factor
  spread = model_study.spread(ab, "disentanglement.mig.discrete_mig")
  assert sorted(spread["factor_vae"]) == sorted(v for k, v in mig.items() if "factor" in k)
  assert len(spread["dip_vae_ii"]) == 2
  # Seeds against hyperparameters: only FactorVAE has two settings with two seeds each.
  means = [np.mean([v for k, v in mig.items() if f"gamma={g}," in k]) for g in (10.0, 40.0)]
  stds = [np.std([v for k, v in mig.items() if f"gamma={g}," in k], ddof=1) for g in (10.0, 40.0)]
  pair = model_study.seed_and_setting_spread(ab, "factor_vae", "disentanglement.mig.discrete_mig")
  assert pair == pytest.approx((np.mean(stds), np.std(means, ddof=1)))
  assert model_study.seed_and_setting_spread(ab, "dip_vae_ii", "rate") is None
  seeds = md.split("## Seeds against hyperparameters")[1]
  assert f"| MIG | {pair[0]:.3g} / {pair[1]:.3g} |  |" in seeds
  assert f"in {int(pair[0] > pair[1])} of 1 (model, score) pairs" in seeds
  table, png = model_study.write(ab)
  assert os.path.exists(table)
  _assert_png(png)
