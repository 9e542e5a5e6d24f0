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
from vae_jax.analysis import sweeps
from vae_jax.training import state as state_lib


def test_the_sweep_is_the_tables_cells_and_every_cell_validates():
  config = iwae.get_config()
  members = sweeps.load_members("configs/iwae.py", config)
  cells = {(m.overrides["model.name"], m.overrides["objective.name"],
            m.overrides["objective.num_samples"]) for m in members}
  assert len(members) == len(cells) == 12
  assert cells == set(iwae.table_layout()["reference"])
  for member in members:
    config = iwae.get_config()
    config.update_from_flattened_dict(member.overrides)
    validation.validate(config)
  full = iwae.get_config("protocol=full,layers=2,k=50,estimator=dreg")
  validation.validate(full)
  assert (full.num_epochs, full.batch_size, full.optim.adam_eps) == (3280, 20, 1e-4)
  assert full.eval.num_importance_samples == 5000


def test_the_3i_schedule_keeps_its_shape_on_any_length():
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
          if member["model.name"] == "two_layer_vae" and member["objective.num_samples"] == 5]

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
