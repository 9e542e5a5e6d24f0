"""IDX files (the MNIST family's format): round trips, strict errors, datasets.load from them."""

import gzip
import os
import struct

import numpy as np
import pytest

from vae_jax.data import datasets
from vae_jax.data import idx
from vae_jax.data import tfds_files

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
  return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def _write(path, data: bytes, compress: bool) -> str:
  path = str(path) + (".gz" if compress else "")
  with (gzip.open if compress else open)(path, "wb") as f:
    f.write(data)
  return path


def _fake(directory, *, compress=True, num_train=12, num_test=5, seed=0):
  """Four IDX files whose images encode their labels: pixel [0, 0] = label * 20."""
  rng = np.random.default_rng(seed)
  out = {}
  for split, n in (("train", num_train), ("test", num_test)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    images[:, 0, 0] = labels * 20
    _write(directory / idx.FILES[(split, "images")], _idx_bytes(images, idx.IMAGES_MAGIC),
           compress)
    _write(directory / idx.FILES[(split, "labels")], _idx_bytes(labels, idx.LABELS_MAGIC),
           compress)
    out[split] = (images, labels)
  return out


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_and_label_alignment(tmp_path, compress):
  written = _fake(tmp_path, compress=compress)
  files = idx.find_files(str(tmp_path))
  assert all(p.endswith(".gz") == compress for p in files.values())
  for split, (images, labels) in written.items():
    x, y = idx.read_split(files[(split, "images")], files[(split, "labels")])
    assert x.shape == (len(labels), 28, 28, 1) and x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x[..., 0], images)
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(x[:, 0, 0, 0], y * 20)  # each image still has its label


def test_find_files_needs_all_four_and_mixes_compressions(tmp_path):
  _fake(tmp_path, compress=False)
  os.remove(tmp_path / idx.FILES[("test", "labels")])
  assert idx.find_files(str(tmp_path)) is None  # incomplete: left to TFDS
  labels = np.arange(5, dtype=np.uint8)
  _write(tmp_path / idx.FILES[("test", "labels")], _idx_bytes(labels, idx.LABELS_MAGIC), True)
  files = idx.find_files(str(tmp_path))
  assert files[("test", "labels")].endswith(".gz") and not files[("test", "images")].endswith(".gz")


def test_bad_magic_names_the_file_and_what_was_expected(tmp_path):
  labels = np.arange(4, dtype=np.uint8)
  path = _write(tmp_path / "labels", _idx_bytes(labels, idx.LABELS_MAGIC), compress=False)
  with pytest.raises(idx.IdxError, match=r"labels: magic number 0x00000801, expected images "
                                         r"\(magic 0x00000803\)"):
    idx.read(path, idx.IMAGES_MAGIC)
  junk = _write(tmp_path / "junk", b"\x00\x00\x0c\x01\x00\x00\x00\x04abcd", compress=True)
  with pytest.raises(idx.IdxError, match="junk.gz: magic number 0x00000c01"):
    idx.read(junk, idx.LABELS_MAGIC)
  with pytest.raises(idx.IdxError, match="too short for an IDX header"):
    idx.read(_write(tmp_path / "empty", b"", compress=False), idx.LABELS_MAGIC)


def test_truncated_files_are_refused(tmp_path):
  images = np.zeros((3, 28, 28), np.uint8)
  data = _idx_bytes(images, idx.IMAGES_MAGIC)
  short = _write(tmp_path / "short", data[:-10], compress=False)
  with pytest.raises(idx.IdxError, match=r"short: 2358 bytes, but its header \(dimensions "
                                         r"3x28x28\) says 2368: the file is truncated"):
    idx.read(short, idx.IMAGES_MAGIC)
  longer = _write(tmp_path / "long", data + b"\x00", compress=False)
  with pytest.raises(idx.IdxError, match="followed by extra bytes"):
    idx.read(longer, idx.IMAGES_MAGIC)
  gz = _write(tmp_path / "cut", data, compress=True)
  with open(gz, "rb") as f:
    compressed = f.read()
  with open(gz, "wb") as f:
    f.write(compressed[: len(compressed) // 2])
  with pytest.raises(idx.IdxError, match="cut.gz: damaged or truncated gzip data"):
    idx.read(gz, idx.IMAGES_MAGIC)


def test_count_mismatch_and_wrong_image_size_are_refused(tmp_path):
  images = _write(tmp_path / "images", _idx_bytes(np.zeros((4, 28, 28)), idx.IMAGES_MAGIC), False)
  labels = _write(tmp_path / "labels", _idx_bytes(np.zeros(3), idx.LABELS_MAGIC), False)
  with pytest.raises(idx.IdxError, match="holds 4 images but .*labels holds 3 labels"):
    idx.read_split(images, labels)
  small = _write(tmp_path / "small", _idx_bytes(np.zeros((3, 8, 8)), idx.IMAGES_MAGIC), False)
  with pytest.raises(idx.IdxError, match="small: images of 8x8 pixels; expected 28x28"):
    idx.read_split(small, labels)


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_datasets_load_reads_idx_files_without_tfds(tmp_path, monkeypatch, name):
  written = _fake(tmp_path, compress=True)
  def no_tfds(*args, **kwargs):
    raise AssertionError("TFDS must not be used for IDX files")
  monkeypatch.setattr(datasets, "_load_tfds", no_tfds)
  ds = datasets.load(name, manual_dir=str(tmp_path))
  assert ds.name == name and not ds.binary and ds.image_shape == (28, 28, 1)
  np.testing.assert_array_equal(ds.train[..., 0], written["train"][0])
  np.testing.assert_array_equal(ds.test_labels, written["test"][1])
  assert ds.source.startswith(f"idx:{tmp_path} (train-images-idx3-ubyte.gz sha256:")
  assert ds.source.count("sha256:") == 4
  # The same through config.data (what training uses), with no fallback taken.
  config = type("Data", (), dict(name=name, train_split="train", test_split="test",
                                 data_dir=None, manual_dir=str(tmp_path), fallback="mnist_5k"))
  ds2, fallback = datasets.load_configured(config)
  assert fallback is None and ds2.source == ds.source
  with pytest.raises(idx.IdxError, match=r"config.data.test_split='test\[:50%\]'"):
    datasets.load(name, manual_dir=str(tmp_path), test_split="test[:50%]")


def test_incomplete_idx_folder_still_reports_missing_files(tmp_path, monkeypatch):
  """Three of four files: one line naming the missing one (a named folder: no fallback)."""
  monkeypatch.setattr(datasets, "host_reachable", lambda *a, **k: False)
  _fake(tmp_path)
  os.remove(tmp_path / (idx.FILES[("test", "labels")] + ".gz"))
  with pytest.raises(tfds_files.ManualFileError, match=r"lacks t10k-labels-idx1-ubyte.gz.*\(or the "
                     r"four MNIST-format IDX files"):
    datasets.load("fashion_mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason=f"needs {FASHION_MNIST}")
def test_real_fashion_mnist():
  ds = datasets.load("fashion_mnist", manual_dir=FASHION_MNIST)
  assert ds.train.shape == (60000, 28, 28, 1) and ds.test.shape == (10000, 28, 28, 1)
  assert np.bincount(ds.test_labels).tolist() == [1000] * 10
  assert list(ds.train_labels[:10]) == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the dataset's first
  assert abs(ds.train.mean() / 255 - 0.2860) < 1e-3  # Fashion-MNIST's published pixel mean
