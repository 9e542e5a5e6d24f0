"""Validation sets: official splits or a fixed hold-out of train; never the test split."""


import numpy as np
import pytest

from tests.conftest import SHARED_BINARIZED_MNIST, make_config
from vae_jax.core import checks
from vae_jax.data import datasets
from vae_jax.data import splits
from vae_jax.training import workdir as workdir_lib


def test_holdout_is_fixed_disjoint_and_covers_train():
  train, held = splits.holdout_indices(1000, 100)
  again_train, again_held = splits.holdout_indices(1000, 100)
  assert np.array_equal(held, again_held) and np.array_equal(train, again_train)
  assert len(held) == 100 and not set(train) & set(held)
  assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(1000))
  assert len(splits.holdout_indices(1000, -1)[1]) == 100  # auto: a tenth
  with pytest.raises(checks.ConfigError, match="data.validation_size=1000"):
    splits.holdout_indices(1000, 1000)


def test_embedded_holdout_comes_from_train_and_records_its_indices():
  whole = datasets.load("digits")
  planned = datasets.load("digits", validation=splits.ValidationPlan("holdout", size=150))
  held = planned.validation_indices
  assert len(held) == 150 and len(planned.train) == len(whole.train) - 150
  assert np.array_equal(planned.validation, whole.train[held])
  assert np.array_equal(planned.validation_labels, whole.train_labels[held])
  kept = np.setdiff1d(np.arange(len(whole.train)), held)
  assert np.array_equal(planned.train, whole.train[kept])
  assert np.array_equal(planned.test, whole.test)  # the test split is untouched


@pytest.mark.parametrize("args, expected", [
    (("binarized_mnist", "train", "auto", "test"), splits.ValidationPlan("split", "validation")),
    (("binarized_mnist", "train+validation", "auto", "test"),
     splits.ValidationPlan("holdout", size=-1)),
    (("binarized_mnist", "train+validation", "auto", "test", 0), splits.ValidationPlan("none")),
    (("mnist", "train", "auto", "test"), splits.ValidationPlan("holdout", size=-1)),
    (("mnist_5k", "train", "holdout", "test", 300), splits.ValidationPlan("holdout", size=300)),
    (("binarized_mnist", "train", "none", "test"), splits.ValidationPlan("none")),
])
def test_plan(args, expected):
  assert splits.plan(*args) == expected


@pytest.mark.parametrize("args, message", [
    (("binarized_mnist", "train", "test", "test"), "shares \\['test'\\] with data.test_split"),
    (("binarized_mnist", "train", "validation", "validation[:50%]"), "data.test_split"),
    (("binarized_mnist", "train+validation", "validation", "test"), "data.train_split"),
    (("mnist", "train", "validation", "test"), "publishes no validation split"),
    (("mnist", "train+test", "auto", "test"), "includes the test split"),
])
def test_validation_that_could_touch_test_or_train_is_refused(args, message):
  with pytest.raises(checks.ConfigError, match=message):
    splits.plan(*args)


def test_recorded_configs_get_the_fields_that_keep_their_data():
  for name, train, expected in (("binarized_mnist", "train", "auto"),
                                ("binarized_mnist", "train+validation", "none"),
                                ("mnist_5k", "train", "none")):
    recorded = {"data": {"name": name, "train_split": train}, "model": {"name": "gaussian_vae"}}
    filled = workdir_lib._fill_added(recorded)  # pylint: disable=protected-access
    assert recorded["data"]["validation_split"] == expected
    assert "data.validation_split" in filled and "selection.patience" in filled
    assert recorded["optim"]["decay_epochs"] == [] and recorded["selection"]["patience"] == 0
    # The filled-in plan trains on the same examples as before: nothing held out of train.
    assert splits.plan_of(make_config(data__name=name, data__train_split=train,
                                      data__validation_split=expected).data).kind != "holdout"


@pytest.mark.slow
def test_binarized_mnist_has_its_published_splits(prepared_binarized_mnist):
  config = make_config(data__name="binarized_mnist", data__manual_dir=SHARED_BINARIZED_MNIST,
                       data__data_dir=prepared_binarized_mnist[0])
  dataset, fallback = datasets.load_configured(config.data)
  assert fallback is None
  assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (
      50000, 10000, 10000)
  assert dataset.validation_indices is None and "validation" in dataset.validation_source
  # The three published sets share no image (checked on these files): validation is
  # neither the test split nor part of train.
  test, train = ({row.tobytes() for row in d} for d in (dataset.test, dataset.train))
  assert not any(row.tobytes() in test or row.tobytes() in train for row in dataset.validation)


def test_fallback_dataset_gets_a_holdout_for_a_named_validation_split():
  data = make_config(data__name="binarized_mnist", data__validation_split="validation").data
  assert splits.plan_of(data) == splits.ValidationPlan("split", "validation")
  assert splits.plan_of(data, "mnist_5k") == splits.ValidationPlan("holdout", size=-1)
  data.validation_split = "none"
  assert splits.plan_of(data, "mnist_5k") == splits.ValidationPlan("none")


@pytest.mark.parametrize("name", ["binarized_mnist", "mnist_5k"])
def test_workdirs_recorded_before_splits_and_schedules_resume(tmp_path, name):
  """A config.json without the new fields resumes under today's config of the same run."""
  config = make_config(data__name=name)
  recorded = workdir_lib.config_dict(config)
  for group, field in (("data", "validation_split"), ("data", "validation_size"),
                       ("optim", "decay_epochs"), ("optim", "decay_factor"),
                       ("optim", "decay_rate"), ("eval", "extra_num_importance_samples")):
    del recorded[group][field]
  del recorded["selection"]
  workdir_lib.write_json(str(tmp_path / workdir_lib.CONFIG_FILE), recorded)
  if name == "binarized_mnist":  # its own validation split: the training data did not change
    assert workdir_lib.prepare(str(tmp_path), config) == {}
  else:  # a hold-out would change the training data: the run continues without one
    with pytest.raises(workdir_lib.WorkdirError, match="data.validation_split"):
      workdir_lib.prepare(str(tmp_path), config)
    config.data.validation_split = "none"
    assert workdir_lib.prepare(str(tmp_path), config) == {}
