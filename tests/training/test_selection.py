"""Selection on validation, early stopping, test once, and the learning-rate schedules."""

import json
import os

import numpy as np
import optax
import pytest

from tests.conftest import make_config
from vae_jax import validation
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.training import selection as selection_lib
from vae_jax.training import state as state_lib


def _feed(selection, values, start=0):
  """Evaluations at steps 10, 20, ...; returns should_stop after each."""
  return [(selection.update(10 * (start + i + 1), {"neg_elbo": v}), selection.should_stop)[1]
          for i, v in enumerate(values)]


def test_early_stopping_counts_evaluations_since_the_best():
  selection = selection_lib.Selection("neg_elbo", patience=2)
  # Best at the 4th evaluation (3.0); the 5th and 6th do not improve: stop after the 6th.
  assert _feed(selection, [5.0, 4.0, 4.5, 3.0, 3.5, 3.0]) == [False] * 5 + [True]
  assert (selection.best_step, selection.best_value) == (40, 3.0)
  report = selection.report(40, keep_best=True, stopped_early=True)
  assert report["checkpoint_step"] == 40 and report["value"] == 3.0
  assert report["split"] == "validation" and len(report["curve"]) == 6


def test_early_stopping_resumes_its_count_from_the_checkpoint():
  whole = selection_lib.Selection("neg_elbo", patience=3)
  stops = _feed(whole, [5.0, 4.0, 4.1, 4.2, 4.3])
  first = selection_lib.Selection("neg_elbo", patience=3)
  _feed(first, [5.0, 4.0, 4.1])
  saved = json.loads(json.dumps(first.state()))  # through the checkpoint's JSON meta
  resumed = selection_lib.Selection("neg_elbo", patience=3, saved=saved)
  assert stops[3:] == _feed(resumed, [4.2, 4.3], start=3) == [False, True]
  assert resumed.state() == whole.state()
  # The evaluation of the resumed step itself is not counted twice.
  resumed.update(50, {"neg_elbo": 4.3})
  assert resumed.state() == whole.state()


def test_no_patience_never_stops():
  selection = selection_lib.Selection("neg_elbo", patience=0)
  assert not any(_feed(selection, [1.0] * 50))


def _optim(**fields):
  optim = make_config().optim
  optim.update(fields)
  return optim


@pytest.mark.parametrize("warmup", [0, 7])
def test_step_schedule_multiplies_at_each_epoch(warmup):
  steps_per_epoch, lr0, factor = 13, 1e-3, 10 ** (-1 / 5)
  optim = _optim(schedule="step", decay_epochs=(2, 5), decay_factor=factor, warmup_steps=warmup)
  schedule = state_lib.learning_rate_schedule(optim, 1000, steps_per_epoch)
  for step in (warmup, 25, 26, 64, 65, 500):
    epochs_passed = sum(step >= e * steps_per_epoch for e in (2, 5))
    assert schedule(step) == pytest.approx(lr0 * factor ** epochs_passed, rel=1e-6), step
  if warmup:
    assert schedule(0) == 0 and schedule(3) == pytest.approx(lr0 * 3 / warmup, rel=1e-6)


def test_exponential_schedule_decays_by_its_rate_per_epoch():
  optim = _optim(schedule="exponential", decay_rate=0.9, learning_rate=3e-4)
  schedule = state_lib.learning_rate_schedule(optim, 1000, 50)
  for step in (0, 25, 50, 333, 999):
    assert schedule(step) == pytest.approx(3e-4 * 0.9 ** (step / 50), rel=1e-5)


def test_iwae_3i_schedule_is_the_papers():
  """Burda et al. (2016): 3^i epochs at lr0 * 10^(-i/7), i = 0..7 (3,280 epochs)."""
  steps_per_epoch, lr0 = 4, 1e-3
  schedule = state_lib.learning_rate_schedule(_optim(schedule="iwae_3i"), 10 ** 6,
                                              steps_per_epoch)
  start = 0
  for i in range(8):
    end = start + 3 ** i * steps_per_epoch  # pass i covers steps [start, end)
    for step in (start, end - 1):
      assert schedule(step) == pytest.approx(lr0 * 10 ** (-i / 7), rel=1e-5), (i, step)
    start = end
  assert start == 3280 * steps_per_epoch
  assert schedule(start + 10) == pytest.approx(lr0 * 10 ** (-1), rel=1e-5)


def test_optimizer_follows_the_schedule():
  """Plain SGD on f(w) = w: each update is -lr(step), so the schedule reaches the optimizer."""
  optim = _optim(optimizer="sgd", schedule="step", decay_epochs=(1,), decay_factor=0.5,
                 learning_rate=1.0)
  tx = state_lib.make_optimizer(optim, 10, steps_per_epoch=3)
  params = {"w": np.zeros(())}
  opt_state = tx.init(params)
  deltas = []
  for _ in range(5):
    updates, opt_state = tx.update({"w": np.ones(())}, opt_state, params)
    deltas.append(float(updates["w"]))
    params = optax.apply_updates(params, updates)
  assert deltas == pytest.approx([-1, -1, -1, -0.5, -0.5])


@pytest.mark.parametrize("fields, message", [
    ({"optim.schedule": "step"}, "optim.decay_epochs=()"),
    ({"optim.decay_epochs": (5, 2)}, "increasing positive epochs"),
    ({"selection.metric": "nll", "eval.num_importance_samples_during_training": 0},
     "config.selection.metric='nll'"),
    ({"keep_best_checkpoint": True, "data.validation_split": "none"},
     "the test split is never used to select"),
    ({"selection.patience": 3, "data.validation_split": "none"}, "config.selection.patience=3"),
    ({"eval.extra_num_importance_samples": (0,)}, "eval.extra_num_importance_samples"),
])
def test_bad_selection_and_schedule_fields_fail_in_one_line(fields, message):
  config = make_config()
  config.update_from_flattened_dict(fields)
  with pytest.raises(validation.ConfigError, match=message.replace("(", r"\(").replace(
      ")", r"\)").replace("[", r"\[")):
    validation.validate(config)


@pytest.mark.slow
def test_selected_checkpoint_is_the_best_on_validation_and_test_runs_once(tmp_path,
                                                                        monkeypatch):
  """A validation curve made to turn up (the learning rate x500 at epoch 2), patience 2.

  The run stops two evaluations after its best; the checkpoint tested is the best
  on validation, not the last; the test split is evaluated once, on it.
  """
  from vae_jax.training import loop  # pylint: disable=g-import-not-at-top
  calls = []
  original = evaluation.Evaluator.evaluate
  def counting(self, params, num_importance_samples=0):
    calls.append((self.split.num_examples, num_importance_samples))
    return original(self, params, num_importance_samples)
  monkeypatch.setattr(evaluation.Evaluator, "evaluate", counting)
  config = make_config(num_train_steps=200, keep_best_checkpoint=True, keep_checkpoints=1,
                       optim__schedule="step", optim__decay_epochs=(2,),
                       optim__decay_factor=500.0,
                       eval__num_importance_samples_during_training=0,
                       eval__extra_num_importance_samples=(7,),
                       images__num_reconstructions=0, images__num_samples=0)
  config.selection.patience = 2
  workdir = str(tmp_path / "run")
  results = loop.train_and_evaluate(config, workdir)

  selection = results["selection"]
  steps, values = zip(*selection["curve"])
  best = int(np.argmin(values))
  assert 0 < best < len(values) - 1  # the curve turned up
  assert selection["checkpoint_step"] == steps[best] == results["test"]["step"]
  assert selection["value"] == min(values) and selection["split"] == "validation"
  # Early stopping: stopped at the evaluation `patience` after the best, none better since.
  assert len(values) == best + 1 + 2 and selection["stopped_early"]
  assert results["steps"] == steps[-1] < 200
  # Validation and test: disjoint sets of examples (digits: a hold-out of train).
  num_validation, num_test = (results["dataset"]["num_validation"],
                              results["dataset"]["num_test"])
  assert num_validation == len(results["dataset"]["validation_indices"]) > 0
  assert num_validation != num_test  # tells the two evaluators apart below
  # The test split: one evaluation at the protocol's k, one at each extra k; nothing else.
  assert [c for c in calls if c[0] == num_test] == [(num_test, 20), (num_test, 7)]
  assert set(results["test"]["nll_by_k"]) == {"20", "7"}
  # The periodic evaluations (and the selected checkpoint's figures) are on validation.
  assert all(c[0] in (num_validation, num_test) for c in calls)
  assert results["validation"]["neg_elbo"] == pytest.approx(min(values), rel=1e-6)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if "test/neg_elbo" in r] == [steps[-1]]
