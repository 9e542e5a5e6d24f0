"""Dataset sources: embedded data, fast offline failure, TFDS from manual_dir."""

import time

import ml_collections
import numpy as np
import pytest

from vae_jax.data import datasets
from vae_jax.data import tfds_files


@pytest.mark.parametrize("name,train,test,shape", [
    ("mnist_5k", 4000, 1000, (28, 28, 1)), ("digits", 1497, 300, (8, 8, 1)),
    ("squares", 1000, 200, (28, 28, 1))])
def test_embedded_datasets(name, train, test, shape):
  ds = datasets.load(name)
  assert ds.train.shape == (train, *shape) and ds.test.shape == (test, *shape)
  assert ds.train.dtype == np.uint8 and ds.name == name
  assert ds.image_shape == datasets.image_shape(name)
  assert len(ds.train_labels) == train


def test_mnist_5k_is_real_mnist():
  ds = datasets.load("mnist_5k")
  assert ds.train.max() == 255 and 25 < ds.train.mean() < 40  # MNIST's mean is ~33
  assert sorted(np.unique(np.concatenate([ds.train_labels, ds.test_labels]))) == list(range(10))


def test_squares_are_half_black_half_white():
  ds = datasets.load("squares")
  per_image = ds.train.reshape(len(ds.train), -1)
  assert set(np.unique(per_image.min(1) == per_image.max(1))) == {True}
  assert per_image[:, 0].mean() == 0.5


def test_unknown_dataset_names_the_valid_ones():
  with pytest.raises(ValueError, match="binarized_mnist"):
    datasets.load("mnits")


def test_offline_failure_is_fast_and_names_the_remedy(tmp_path, monkeypatch):
  monkeypatch.setattr(datasets, "host_reachable", lambda *a, **k: False)
  start = time.time()
  with pytest.raises(datasets.DatasetUnavailableError) as err:
    datasets.load("mnist", data_dir=str(tmp_path))
  assert time.time() - start < 30
  message = str(err.value)
  assert "'mnist'" in message and "manual_dir" in message and "mnist_5k" in message
  assert "train-images-idx3-ubyte.gz" in message


def test_incomplete_manual_dir_lists_the_missing_files(tmp_path, monkeypatch):
  monkeypatch.setattr(datasets, "host_reachable", lambda *a, **k: False)
  (tmp_path / "binarized_mnist_train.amat").write_text("")
  with pytest.raises(tfds_files.ManualFileError,
                     match="lacks binarized_mnist_test.amat, binarized_mnist_valid.amat"):
    datasets.load("binarized_mnist", data_dir=str(tmp_path / "tfds"),
                  manual_dir=str(tmp_path))
  with pytest.raises(tfds_files.ManualFileError, match="is not a directory"):
    datasets.load("binarized_mnist", manual_dir=str(tmp_path / "nowhere"))


class _PreparedBuilder:
  """TFDS's builder of a dataset prepared earlier (from other files): what a manual_dir
  was silently ignored for."""
  data_dir, version = "/prepared", "1.0.0"

  def is_prepared(self):
    return True

  def as_dataset(self, split, batch_size):
    del batch_size
    return {"image": np.zeros((4 if split == "train" else 2, 28, 28, 1), np.uint8)}


def test_a_manual_dir_is_used_or_refused_even_when_tfds_has_prepared_the_dataset(
    tmp_path, monkeypatch):
  """Files the user named are checked whatever TFDS holds, and never replaced by the
  fallback: an empty folder, a damaged .amat and a missing folder each stop in one line."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: _PreparedBuilder())
  monkeypatch.setattr(tfds, "as_numpy", lambda tree: tree)
  assert datasets.load("binarized_mnist").source.startswith("tfds:binarized_mnist")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(tfds_files.ManualFileError, match=r"manual_dir=.*empty' lacks "
                     r"binarized_mnist_test.amat, binarized_mnist_train.amat, binarized_"):
    datasets.load("binarized_mnist", manual_dir=str(empty))
  damaged = tmp_path / "damaged"
  damaged.mkdir()
  for split in ("train", "valid", "test"):
    (damaged / f"binarized_mnist_{split}.amat").write_text("0 1\n")
  with pytest.raises(tfds_files.ManualFileError,
                     match=r"binarized_mnist_test.amat is truncated \(4 bytes\)"):
    datasets.load("binarized_mnist", manual_dir=str(damaged))
  data = ml_collections.ConfigDict(dict(
      name="binarized_mnist", train_split="train", test_split="test", data_dir=None,
      manual_dir=str(tmp_path / "nowhere"), fallback="mnist_5k", validation_split="none",
      validation_size=-1))
  with pytest.raises(tfds_files.ManualFileError, match="nowhere' is not a directory"):
    datasets.load_configured(data)  # no fallback for files the user named


@pytest.mark.slow
def test_official_builder_prepares_binarized_mnist_from_manual_dir(prepared_binarized_mnist):
  _, ds = prepared_binarized_mnist  # datasets.load(name, data_dir, manual_dir=...), offline
  assert ds.train.shape == (50000, 28, 28, 1) and ds.test.shape == (10000, 28, 28, 1)
  assert set(np.unique(ds.test)) == {0, 1} and ds.binary
  assert abs(ds.train.mean() - 0.1306) < 5e-4  # the figure in ../shared/data/README.md
  assert ds.source.startswith("tfds:binarized_mnist")
