"""python -m experiments.disentanglement on a tiny run of configs/dsprites.py (slow tier).

A small version of the dSprites model (8-channel stages) trains 20 steps on
dsprites_procedural in this process; the entry point scores it in a subprocess
with small sample counts, writes disentanglement.json and the traversals, and
leaves the rest of the run as it was; a second scoring is refused, and a later
one adds only the metrics the file lacks.
"""

import json
import os
import subprocess
import sys

import pytest

from configs import dsprites as dsprites_config
from tests.conftest import REPO
from tests.conftest import set_fields
from vae_jax.evaluation.disentanglement import scoring
from vae_jax.training import loop as train
from vae_jax.training import workdir as workdir_lib

pytestmark = pytest.mark.slow


def _listing(root):
  return {os.path.relpath(os.path.join(d, f), root): os.path.getmtime(os.path.join(d, f))
          for d, _, files in os.walk(root) for f in files}


def test_scores_a_tiny_run_and_writes_only_its_json(tmp_path):
  config = set_fields(dsprites_config.get_config("beta=4"), {
      "model.conv_channels": (8, 8, 8, 8), "model.conv_hidden": 16, "num_train_steps": 20,
      "steps_per_dispatch": 10, "log_every": 10, "eval_every": 20, "checkpoint_every": 20,
      "data.validation_size": 100, "eval.batch_size": 1000, "images.num_reconstructions": 4,
      "images.num_samples": 4})
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  before = _listing(workdir)
  picture = str(tmp_path / "traversals.png")
  command = [sys.executable, "-m", "experiments.disentanglement", f"--workdir={workdir}",
             "--metrics=beta_vae,factor_vae,mig,sap,modularity_explicitness,unsupervised",
             "--scale=0.05,beta_vae=0.002,factor_vae=0.002", f"--traversals={picture}"]
  proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  after = _listing(workdir)
  added = set(after) - set(before)
  assert added <= {"disentanglement.json", "disentanglement.log"} and "disentanglement.json" in added
  assert all(after[f] == before[f] for f in before)  # nothing of the run changed
  with open(os.path.join(workdir, "disentanglement.json"), encoding="utf-8") as f:
    record = json.load(f)
  assert record["step"] == 20 and record["dataset"] == "dsprites_procedural"
  assert record["factors"] == ["shape", "scale", "orientation", "x", "y"]
  scores = record["scores"]
  assert scores["beta_vae"]["sample_counts"] == {"num_train": 20, "num_eval": 10}
  assert scores["mig"]["sample_counts"] == {"num_train": 500}
  for name, key in (("beta_vae", "eval_accuracy"), ("factor_vae", "eval_accuracy"),
                    ("mig", "discrete_mig"), ("sap", "SAP_score"),
                    ("modularity_explicitness", "modularity_score")):
    assert 0.0 <= scores[name][key] <= 1.0, (name, scores[name])
  assert os.path.getsize(picture) > 1000
  again = subprocess.run(command[:-1], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert again.returncode != 0 and "already scored" in again.stderr
  # A later scoring adds only what the file lacks and keeps every earlier score as it was.
  with pytest.raises(workdir_lib.WorkdirError, match="--seed=0; the run now selects step 20"):
    scoring.score_run(workdir, seed=1, scale=["0.05"], metrics=["dci"])
  merged = scoring.score_run(workdir, scale=["0.05"], metrics=["mig", "dci"])
  assert set(merged["scores"]) == set(scores) | {"dci"} and merged["added"][0]["metrics"] == ["dci"]
  assert all(merged["scores"][name] == scores[name] for name in scores)
  assert merged["scale"] == {**record["scale"], "dci": 0.05} and merged["step"] == 20
  assert 0.0 <= merged["scores"]["dci"]["disentanglement"] <= 1.0
  assert scoring.missing_metrics(merged) == [] and scoring.read_record(workdir) == merged
