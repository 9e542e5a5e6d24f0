"""Burda et al.'s Table 1 as a sweep (configs/iwae.py): its cells, schedule, and a two-cell run."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import iwae
from tests.conftest import REPO
from vae_jax import validation
from vae_jax.analysis import paper_table
from vae_jax.analysis import sweeps
from vae_jax.analysis import tables
from vae_jax.training import state as state_lib


def test_the_sweep_is_the_tables_cells_and_every_cell_validates():
  config = iwae.get_config()
  members = sweeps.load_members("configs/iwae.py", config)
  cells = {(m.overrides["model.name"], m.overrides["objective.name"],
            m.overrides["objective.num_samples"]) for m in members}
  assert len(cells) == 12 and len(members) == 12 * len(iwae.SEEDS) == 36
  assert cells == set(iwae.table_layout()["reference"])
  for cell in cells:   # every cell has every seed
    seeds = sorted(m.overrides["seed"] for m in members if (
        m.overrides["model.name"], m.overrides["objective.name"],
        m.overrides["objective.num_samples"]) == cell)
    assert seeds == sorted(iwae.SEEDS), cell
  for member in members:
    config = iwae.get_config()
    config.update_from_flattened_dict(member.overrides)
    validation.validate(config)
  full = iwae.get_config("protocol=full,layers=2,k=50,estimator=dreg")
  validation.validate(full)
  assert (full.num_epochs, full.batch_size, full.optim.adam_eps) == (3280, 20, 1e-4)
  assert full.eval.num_importance_samples == 5000
  budget = iwae.get_config()
  assert budget.eval.num_importance_samples == 5000   # the paper's k in both protocols
  assert (budget.model.init, budget.model.z2_mean_draws) == ("lecun_normal", 1)
  assert budget.data.test_split == f"test[:{iwae.BUDGET_TEST_IMAGES}]"
  assert full.data.test_split == "test"                 # the paper's: all 10,000
  for bad in ("epochs=-1", "test_images=-2"):
    with pytest.raises(ValueError, match=f"'{bad}'.*must be"):
      iwae.get_config(bad)


STEPS_PER_EPOCH = 50_000 // 20   # the static binarized MNIST's training images, batch 20


def _lrs(config, steps: np.ndarray) -> np.ndarray:
  total = config.num_epochs * STEPS_PER_EPOCH
  schedule = state_lib.learning_rate_schedule(config.optim, total, STEPS_PER_EPOCH)
  return np.asarray(jax.vmap(schedule)(jnp.asarray(steps)))


def test_the_budget_is_the_papers_schedule_cut_after_its_epochs():
  """The budget's runs are the paper's runs stopped early: the same rate at every step up to
  the cut (stage boundaries included), and num_epochs x steps per epoch steps in all."""
  full = iwae.get_config("protocol=full")
  for arg, epochs in (("", iwae.BUDGET_EPOCHS), ("epochs=13", 13), ("epochs=1", 1)):
    budget = iwae.get_config(arg)
    assert budget.optim.schedule == full.optim.schedule == "iwae_3i"
    assert budget.num_epochs == epochs and budget.num_train_steps == -1
    total = budget.num_epochs * STEPS_PER_EPOCH
    assert total == epochs * 2500
    bounds = [b for b in state_lib.iwae_3i_boundaries(STEPS_PER_EPOCH) if b < total]
    steps = np.unique(np.concatenate([[0, total - 1], np.arange(0, total, 997),
                                      *[[b - 1, b] for b in bounds]]))
    np.testing.assert_array_equal(_lrs(budget, steps), _lrs(full, steps))
    # Pass i (3^i epochs from epoch sum_{j<i} 3^j) at 1e-3 * 10^(-i/7), the first epoch at 1e-3.
    for i, bound in enumerate(bounds, start=1):
      before, after = _lrs(budget, np.array([bound - 1, bound]))
      assert before == pytest.approx(1e-3 * 10 ** (-(i - 1) / 7), rel=1e-5)
      assert after == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-5)
    assert _lrs(budget, np.array([STEPS_PER_EPOCH - 1]))[0] == pytest.approx(1e-3, rel=1e-6)
  default = iwae.get_config()
  assert len([b for b in state_lib.iwae_3i_boundaries(1) if b < default.num_epochs]) >= 1


def test_no_protocol_uses_the_stretched_schedule():
  for arg in ("", "protocol=full", "layers=2,k=50", "epochs=7,data=dynamic"):
    assert iwae.get_config(arg).optim.schedule == "iwae_3i", arg


def test_the_3i_schedule_keeps_its_shape_on_any_length():
  """"iwae_3i_stretched" stays for the runs recorded with it (no protocol uses it now)."""
  for total in (3280, 32800, 100):
    schedule = state_lib.iwae_3i_stretched_schedule(1e-3, total)
    lrs = np.asarray(jax.vmap(schedule)(jnp.arange(total)))
    levels = 1e-3 * 10 ** (-np.arange(8) / 7)
    for i, level in enumerate(levels):
      steps = np.sum(np.isclose(lrs, level, rtol=1e-5))
      assert abs(steps - total * 3**i / 3280) <= 1, (total, i, steps)
    assert np.all(np.diff(lrs) <= 0)


TWO_CELLS = '''
from configs import iwae

def get_config(arg=""):
  config = iwae.get_config(arg)
  config.update_from_flattened_dict({FIELDS})
  return config

def sweep():
  return [member for member in iwae.sweep()
          if member["model.name"] == "two_layer_vae" and member["objective.num_samples"] == 5
          and member["seed"] == 0]

table_layout = iwae.table_layout
'''
FIELDS = {"data.name": "digits", "num_train_steps": 30, "steps_per_dispatch": 10,
          "log_every": 10, "eval_every": 30, "checkpoint_every": 30, "eval.batch_size": 100,
          "eval.num_importance_samples": 20, "model.width": 32, "model.top_width": 16,
          "model.latent_dim": 8, "model.top_latent_dim": 4}


@pytest.mark.slow
def test_two_cells_run_end_to_end_into_the_papers_layout(tmp_path):
  config = tmp_path / "two_cells.py"
  config.write_text(textwrap.dedent(TWO_CELLS).replace("{FIELDS}", repr(FIELDS)))
  workdir = tmp_path / "table"
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                                     capture_output=True, text=True, timeout=900)
  # Two objectives: two programs, run side by side.
  proc = run("experiments.sweep", f"--config={config}", f"--workdir={workdir}", "--parallel=2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Sweep: 2 done" in proc.stdout
  results = {}
  for member in ("k_sample_elbo", "iwae"):
    name = [d for d in os.listdir(workdir) if f"objective.name={member}," in d][0]
    results[member] = json.loads((workdir / name / "results.json").read_text())
    test = results[member]["test"]
    assert test["active_units"] == test["active_units_z1"] + test["active_units_z2"]
    assert test["active_units_by_layer"] == f"{test['active_units_z1']}+{test['active_units_z2']}"
    assert np.isfinite(test["nll"]) and test["nll"] <= test["neg_elbo"] + 1.0
  made = run("experiments.tables", f"--workdir={workdir}")
  assert made.returncode == 0, made.stderr[-3000:]
  table = (workdir / "tables" / "paper_table.md").read_text()
  row = next(line for line in table.splitlines() if line.startswith("| 5 |"))
  vae, iw = results["k_sample_elbo"]["test"], results["iwae"]["test"]
  assert row == (f"| 5 | {vae['nll']:.2f} (85.01) | {vae['active_units_by_layer']} (17+5) | "
                 f"{iw['nll']:.2f} (83.89) | {iw['active_units_by_layer']} (21+5) |")
  assert "**2 stochastic layers**" in table and "2 of 2 members done" in table


def test_the_papers_layout_shows_mean_and_std_over_a_cells_seeds(monkeypatch):
  cell = {"model.name": "two_layer_vae", "objective.name": "iwae", "objective.num_samples": 5}
  nlls, units = (120.0, 121.0, 125.0), ("21+5", "20+5", "22+4")
  members = [tables.Member(i, f"m{i}", {**cell, "seed": i}, "done",
                           {"test": {"nll": nll, "active_units_by_layer": u}})
             for i, (nll, u) in enumerate(zip(nlls, units))]
  members.append(tables.Member(3, "m3", {**cell, "objective.name": "k_sample_elbo", "seed": 0},
                               "done", {"test": {"nll": 130.0, "active_units_by_layer": "9+0"}}))
  one_layer = {**cell, "model.name": "gaussian_vae"}  # units a number, not "z1+z2"
  members += [tables.Member(4 + i, f"o{i}", {**one_layer, "seed": i}, "done",
                            {"test": {"nll": 100.0 + i, "active_units": u}})
              for i, u in enumerate((43, 35, 50))]
  monkeypatch.setattr(tables, "read_sweep", lambda workdir: ({}, members))
  text = paper_table.to_markdown("unused", iwae.table_layout())
  row = next(line for line in text.splitlines() if line.startswith("| 5 |"))
  std = np.std(nlls, ddof=1)
  assert row == (f"| 5 | {np.mean(nlls):.2f} ± {std:.2f} (83.89) | 21+5/20+5/22+4 (21+5) | "
                 f"130.00 (85.01) | 9+0 (17+5) |")
  one = text.split("**1 stochastic layer**")[1].split("**2 stochastic layers**")[0]
  row = next(line for line in one.splitlines() if line.startswith("| 5 |"))
  assert row == (f"| 5 | 101.00 ± 1.00 (85.54) | "
                 f"{np.mean((43, 35, 50)):.1f} ± {np.std((43, 35, 50), ddof=1):.1f} (22) | "
                 "– (86.47) | – (20) |")
  assert "mean ± std (ddof = 1)" in text and "7 of 7 members done" in text
