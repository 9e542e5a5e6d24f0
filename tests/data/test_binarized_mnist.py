"""The binarized MNIST that ships with the code: the official files back, byte for byte.

The checksums are read from the installed TFDS package (the records its builder
checks), not copied from anywhere: the written files are the official ones.
"""

import filecmp
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, SHARED_BINARIZED_MNIST
from vae_jax.data import binarized_mnist
from vae_jax.data import datasets
from vae_jax.data import tfds_files


def _tfds_checksums() -> dict[str, tuple[int, str]]:
  """{file name: (size, sha256)} from the installed TFDS's checksums.tsv for binarized_mnist."""
  import tensorflow_datasets  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(tensorflow_datasets.__file__), "datasets",
                      "binarized_mnist", "checksums.tsv")
  out = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip() and not line.startswith("#"):
        _, size, sha256, name = line.rstrip("\n").split("\t")
        out[name] = (int(size), sha256)
  return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  """The three .amat files, written once from the embedded copy."""
  return binarized_mnist.official_files(str(tmp_path_factory.mktemp("amat")))


def test_written_files_are_exactly_the_files_tfds_expects(written):
  expected = _tfds_checksums()
  assert sorted(expected) == sorted(binarized_mnist.file_name(s) for s in binarized_mnist.SPLITS)
  for name, (size, sha256) in expected.items():
    path = os.path.join(written, name)
    assert os.path.getsize(path) == size
    with open(path, "rb") as f:
      assert hashlib.file_digest(f, "sha256").hexdigest() == sha256
  assert sorted(os.listdir(written)) == sorted(expected)  # and nothing else (no temp files)


@pytest.mark.skipif(not os.path.isdir(SHARED_BINARIZED_MNIST),
                    reason="needs ../shared/data/binarized_mnist")
def test_written_files_equal_the_shared_official_files(written):
  for split in binarized_mnist.SPLITS:
    name = binarized_mnist.file_name(split)
    assert filecmp.cmp(os.path.join(written, name), os.path.join(SHARED_BINARIZED_MNIST, name),
                       shallow=False), name


def test_exact_files_are_kept_and_damaged_ones_rewritten(written):
  path = os.path.join(written, binarized_mnist.file_name("valid"))
  inode = os.stat(path).st_ino
  binarized_mnist.official_files(written)
  assert os.stat(path).st_ino == inode  # exact: left alone
  with open(path, "r+b") as f:
    f.truncate(1000)
  binarized_mnist.official_files(written)
  assert tfds_files.problem(path, _official("binarized_mnist_valid.amat")) is None
  assert not [n for n in os.listdir(written) if n.endswith(".tmp")]  # no temp file left


def _official(name):
  [official] = [f for f in tfds_files.official_files("binarized_mnist") if f.name == name]
  return official


def test_amat_text_round_trip_and_format_errors():
  bits = np.random.default_rng(0).integers(0, 2, (3, 784), dtype=np.uint8)
  text = binarized_mnist.to_amat(bits)
  assert len(text) == 3 * 1568 and text[:4] in (b"0 0 ", b"0 1 ", b"1 0 ", b"1 1 ")
  assert text.count(b"\n") == 3 and text.endswith(b"\n") and b"  " not in text
  np.testing.assert_array_equal(binarized_mnist.from_amat(text), bits)
  with pytest.raises(ValueError, match="whole number"):
    binarized_mnist.from_amat(text[:-1])
  with pytest.raises(ValueError, match="0s and 1s"):
    binarized_mnist.from_amat(text.replace(b"\n", b" ", 1))


def test_pack_rebuilds_the_embedded_copy(written, tmp_path):
  binarized_mnist.pack(written, str(tmp_path / "copy.npz"))
  again = binarized_mnist.load_bits(str(tmp_path / "copy.npz"))
  embedded = binarized_mnist.load_bits()
  for split, count in binarized_mnist.SPLITS.items():
    assert again[split].shape == (count, 784)
    np.testing.assert_array_equal(again[split], embedded[split])


def test_a_damaged_embedded_copy_is_one_clear_error(tmp_path):
  pointer = tmp_path / "binarized_mnist.npz"  # what a Git LFS checkout without LFS holds
  pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
  with pytest.raises(binarized_mnist.EmbeddedDataError, match="cannot be read.*manual_dir"):
    binarized_mnist.load_bits(str(pointer))


def _manual_dir_with(tmp_path, written, name, data):
  """A manual_dir with the official files of ``written``, but ``name`` holding ``data``."""
  for split in binarized_mnist.SPLITS:
    link = tmp_path / binarized_mnist.file_name(split)
    if not os.path.lexists(link):
      os.symlink(os.path.join(written, binarized_mnist.file_name(split)), link)
  os.remove(tmp_path / name)
  (tmp_path / name).write_bytes(data)
  return tmp_path


def test_damaged_manual_files_are_named_in_one_line(written, tmp_path):
  name = binarized_mnist.file_name("test")
  with open(os.path.join(written, name), "rb") as f:
    data = bytearray(f.read())
  _manual_dir_with(tmp_path, written, name, data[:5000])
  with pytest.raises(tfds_files.ManualFileError) as err:
    datasets.load("binarized_mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path))
  message = str(err.value)
  assert "\n" not in message and f"config.data.manual_dir={str(tmp_path)!r}" in message
  assert f"{name} is truncated (5,000 bytes)" in message and "15,680,000 bytes" in message
  assert _official(name).sha256 in message and "ships with vae_jax" in message
  data[100] ^= 1  # '0' <-> '1': the same size, another checksum
  _manual_dir_with(tmp_path, written, name, bytes(data))
  with pytest.raises(tfds_files.ManualFileError, match=f"{name} is damaged"):
    datasets.load("binarized_mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path))


@pytest.mark.slow
def test_binarized_mnist_loads_offline_with_no_manual_dir(tmp_path, monkeypatch, capfd):
  """TFDS's official builder prepares it from the written files: the .amat contents exactly."""
  monkeypatch.setattr(datasets, "host_reachable", lambda *a, **k: False)  # truly offline
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  ds = datasets.load("binarized_mnist", data_dir=str(tmp_path / "tfds"))
  terminal = "".join(capfd.readouterr())
  for noise in ("Dl Completed", "Generating splits", "Downloading and preparing", "Shuffling"):
    assert noise not in terminal  # TFDS's progress bars and banners stay off the terminal
  assert ds.source.startswith("tfds:binarized_mnist") and ds.binary
  assert sorted(os.listdir(tmp_path / "cache" / "vae_jax" / "binarized_mnist")) == sorted(
      binarized_mnist.file_name(s) for s in binarized_mnist.SPLITS)
  bits = binarized_mnist.load_bits()

  def rows(images):  # TFDS stores examples in its own order: compare the sets of images
    packed = np.packbits(images.reshape(len(images), -1), axis=1)
    return packed[np.lexsort(packed.T[::-1])]
  assert ds.train.shape == (50_000, 28, 28, 1) and ds.test.shape == (10_000, 28, 28, 1)
  np.testing.assert_array_equal(rows(ds.train), rows(bits["train"]))
  np.testing.assert_array_equal(rows(ds.test), rows(bits["test"]))


@pytest.mark.slow
def test_a_truncated_amat_stops_the_command_with_one_line(written, tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  name = binarized_mnist.file_name("train")
  with open(os.path.join(written, name), "rb") as f:
    _manual_dir_with(manual, written, name, f.read(1_000_000))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=configs/beta.py",
       f"--workdir={tmp_path / 'run'}", f"--config.data.manual_dir={manual}",
       f"--config.data.data_dir={tmp_path / 'tfds'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr and "NonMatchingChecksumError" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"FATAL ManualFileError: config.data.manual_dir='{manual}': {name} "
                         f"is truncated (1,000,000 bytes); the official file has 78,400,000")
