"""Dataset sources: embedded data, fast offline failure, TFDS from manual_dir."""

import os
import time

import numpy as np
import pytest

from tests.conftest import SHARED_BINARIZED_MNIST
from vae_jax.data import datasets


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
  with pytest.raises(datasets.DatasetUnavailableError,
                     match="lacks binarized_mnist_test.amat, binarized_mnist_valid.amat"):
    datasets.load("binarized_mnist", data_dir=str(tmp_path / "tfds"),
                  manual_dir=str(tmp_path))
  with pytest.raises(datasets.DatasetUnavailableError, match="is not a directory"):
    datasets.load("binarized_mnist", manual_dir=str(tmp_path / "nowhere"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(SHARED_BINARIZED_MNIST),
                    reason="needs ../shared/data/binarized_mnist")
def test_official_builder_prepares_binarized_mnist_from_manual_dir(tmp_path, monkeypatch):
  monkeypatch.setattr(datasets, "host_reachable", lambda *a, **k: False)  # truly offline
  ds = datasets.load("binarized_mnist", data_dir=str(tmp_path),
                     manual_dir=SHARED_BINARIZED_MNIST)
  assert ds.train.shape == (50000, 28, 28, 1) and ds.test.shape == (10000, 28, 28, 1)
  assert set(np.unique(ds.test)) == {0, 1} and ds.binary
  assert abs(ds.train.mean() - 0.1306) < 5e-4  # the figure in ../shared/data/README.md
  assert ds.source.startswith("tfds:binarized_mnist")
