"""train_and_evaluate end to end: every workdir artifact, TFDS offline, fallback."""

import glob
import json
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from tests.conftest import SHARED_BINARIZED_MNIST, assert_trees_equal, saved_state
from vae_jax.data import datasets
from vae_jax.training import loop as train
from vae_jax.training import workdir as workdir_lib

# Whole training runs: the full suite only (bash launch.sh test; --fast skips them).
pytestmark = pytest.mark.slow


def _read_jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_workdir_artifacts(tmp_path, config_factory):
  config = config_factory()
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)

  # Resolved config, readable back as the same config.
  with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
    assert json.load(f) == workdir_lib.config_dict(config)
  # Metrics as JSON lines: train terms at every log point, validation terms at every
  # eval, test terms once at the end.
  records = _read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  train_steps = [r["step"] for r in records if "train/loss" in r]
  validation_records = [r for r in records if "validation/neg_elbo" in r]
  test_records = [r for r in records if "test/neg_elbo" in r]
  assert train_steps == [10, 20] and [r["step"] for r in validation_records] == [10, 20]
  assert [r["step"] for r in test_records] == [20]
  assert any("train/examples_per_sec" in r for r in records)
  # The same scalars as TensorBoard events.
  events = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  assert events
  acc = event_accumulator.EventAccumulator(workdir, size_guidance={"tensors": 0})
  acc.Reload()
  assert {"train/loss", "validation/neg_elbo", "test/neg_elbo", "reconstructions",
          "samples"} <= set(
      acc.Tags()["tensors"])
  # Orbax checkpoints, the last one at the final step.
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")))
  assert steps == [10, 20]
  # PNG grids: 16 reconstructions as 2 (input row, reconstruction row) pairs of 8,
  # 16 samples as 2 rows of 8; 8x8 digits with a 1-pixel border.
  recon = Image.open(os.path.join(workdir, "reconstructions.png"))
  samples = Image.open(os.path.join(workdir, "samples.png"))
  assert recon.size == (8 * 9 + 1, 4 * 9 + 1) and samples.size == (8 * 9 + 1, 2 * 9 + 1)
  assert np.asarray(samples).std() > 0
  # results.json: the final test figures and how they were made.
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(results))
  test = saved["test"]
  assert test["neg_elbo"] == pytest.approx(test_records[-1]["test/neg_elbo"])
  assert test["neg_elbo"] == pytest.approx(test["rate"] + test["distortion"], rel=1e-6)
  assert test["rate"] >= 0 and test["distortion"] > 0
  assert saved["dataset"]["used"] == "digits" and saved["dataset"]["preprocessing"] == "dynamic"
  assert saved["steps"] == 20 and saved["device_count"] == 1
  assert saved["wall_time_s"] > 0 and saved["versions"]["jax"]
  assert saved["unit"].startswith("nats per example")


def test_finished_or_foreign_workdir_is_refused(tmp_path, config_factory):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config_factory(num_train_steps=10), workdir)
  before = open(os.path.join(workdir, "results.json"), encoding="utf-8").read()
  with pytest.raises(workdir_lib.WorkdirError, match="finished run"):
    train.train_and_evaluate(config_factory(num_train_steps=10), workdir)
  assert open(os.path.join(workdir, "results.json"), encoding="utf-8").read() == before
  os.makedirs(tmp_path / "other")
  workdir_lib.prepare(str(tmp_path / "other"), config_factory())
  with pytest.raises(workdir_lib.WorkdirError, match="fields differ: objective.beta"):
    train.train_and_evaluate(config_factory(objective__beta=2.0), str(tmp_path / "other"))


@pytest.mark.parametrize("overrides", [
    {"model__likelihood": "gaussian_learned"},
    {"model__encoder": "conv", "model__decoder": "conv", "model__width": 8,
     "model__depth": 2, "objective__kl_estimator": "mc"},
])
def test_model_variants_train(tmp_path, config_factory, overrides):
  results = train.train_and_evaluate(config_factory(**overrides), str(tmp_path / "run"))
  assert np.isfinite(results["test"]["neg_elbo"])
  if overrides.get("model__likelihood", "").startswith("gaussian"):
    assert results["dataset"]["preprocessing"] == "dequantize"
    # Continuous density on dequantized 8-bit pixels: bpd = (NLL + D log 256) / (D log 2).
    dims = 8 * 8 * 1
    expected = (results["test"]["neg_elbo"] + dims * np.log(256)) / (dims * np.log(2))
    assert results["test"]["bits_per_dim"] == pytest.approx(expected, rel=1e-5)


def test_offline_fallback_to_embedded_data_is_recorded(tmp_path, config_factory,
                                                       monkeypatch):
  monkeypatch.setattr(datasets, "host_reachable", lambda *a, **k: False)
  config = config_factory(data__name="mnist", data__data_dir=str(tmp_path / "tfds"),
                          num_train_steps=10)
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["dataset"]["requested"] == "mnist"
  assert results["dataset"]["used"] == "mnist_5k"
  assert "'mnist' is not prepared" in results["dataset"]["fallback_reason"]
  config.data.fallback = ""
  # The error says exactly how to provide the data: which files, where.
  with pytest.raises(datasets.DatasetUnavailableError,
                     match=r"not prepared in .*tfds/mnist/.*, no config.data.manual_dir is set.*"
                           r"original files \(t10k-images-idx3-ubyte.gz, .*, "
                           r"train-labels-idx1-ubyte.gz\) in a folder and pass "
                           r"--config.data.manual_dir=FOLDER"):
    train.train_and_evaluate(config, str(tmp_path / "run2"))


def test_real_binarized_mnist_through_tfds_manual_dir(tmp_path, config_factory,
                                                      monkeypatch, prepared_binarized_mnist):
  monkeypatch.setattr(datasets, "host_reachable", lambda *a, **k: False)
  config = config_factory(data__name="binarized_mnist", batch_size=128,
                          eval__batch_size=1000, model__width=500,
                          data__data_dir=prepared_binarized_mnist[0],
                          data__manual_dir=SHARED_BINARIZED_MNIST, num_train_steps=100,
                          steps_per_dispatch=50, log_every=50, eval_every=100,
                          checkpoint_every=100)
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["dataset"]["used"] == "binarized_mnist"
  assert results["dataset"]["source"].startswith("tfds:binarized_mnist")
  assert results["dataset"]["num_test"] == 10000
  # 100 steps are far from converged but well past the untrained ~543 nats (784 log 2).
  assert 100 < results["test"]["neg_elbo"] < 250


@pytest.mark.parametrize("interruption", ["killed_after_step_10", "last_checkpoint_damaged"])
def test_restart_resumes_from_the_latest_good_checkpoint_exactly(tmp_path, config_factory,
                                                                 caplog, interruption):
  caplog.set_level(logging.INFO, logger="absl")
  config = config_factory()
  full, crashed = str(tmp_path / "full"), str(tmp_path / "crashed")
  train.train_and_evaluate(config, full)
  train.train_and_evaluate(config, crashed)
  os.remove(os.path.join(crashed, "results.json"))  # as if killed in the final evaluation
  last = os.path.join(crashed, "checkpoints", "20")
  if interruption == "killed_after_step_10":
    shutil.rmtree(last)
  else:  # a disk error: half of the largest array file of checkpoint 20 is gone
    files = [os.path.join(r, f) for r, _, names in os.walk(last) for f in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "rb+") as f:
      f.truncate(os.path.getsize(largest) // 2)
  resumed = train.train_and_evaluate(config, crashed)
  assert resumed["steps"] == 20
  if interruption == "last_checkpoint_damaged":
    assert f"Checkpoint {last} is damaged" in caplog.text
    (aside,) = os.listdir(os.path.join(crashed, "damaged_checkpoints"))
    assert aside.startswith("20-")
  assert "Resumed from checkpoint 10" in caplog.text
  # Bitwise: data order and noise follow the step, not the process history.
  assert_trees_equal(saved_state(full, config)[0], saved_state(crashed, config)[0])


def test_keep_best_checkpoint_scores_every_save_by_validation_elbo(tmp_path, config_factory):
  from vae_jax.evaluation import saved_run as checkpoint_eval  # pylint: disable=g-import-not-at-top
  from vae_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  from vae_jax.training import metrics  # pylint: disable=g-import-not-at-top
  config = config_factory(num_train_steps=40, keep_checkpoints=1, keep_best_checkpoint=True)
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)
  logged = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  scores = {s: r["validation/neg_elbo"] for s, r in logged.items()
            if "validation/neg_elbo" in r}
  assert sorted(scores) == [10, 20, 30, 40]
  best = min(scores, key=scores.get)
  assert results["selection"]["checkpoint_step"] == best == results["test"]["step"]
  ckpt = checkpoints.Checkpointer(workdir, 1, keep_best=True, read_only=True)
  assert ckpt.all_steps() == sorted({best, 40})  # the latest one plus the best one
  assert ckpt.best_step() == best
  record = checkpoint_eval.evaluate_checkpoint(workdir, step="best", num_importance_samples=0)
  assert record["step"] == best
  # The checkpoint the run tested: the same test figure from the saved state.
  assert record["test"]["neg_elbo"] == pytest.approx(results["test"]["neg_elbo"], rel=1e-6)
