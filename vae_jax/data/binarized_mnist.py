"""Binarized MNIST shipped with the code: the three official .amat files, rebuilt exactly.

The benchmark (the fixed binarization of MNIST of Salakhutdinov & Murray 2008,
distributed by Larochelle & Murray 2011 as the text files that TFDS's
``binarized_mnist`` builder downloads) is 70,000 x 784 bits. ``embedded/
binarized_mnist.npz`` holds them bit-packed (np.packbits) and compressed, so a
clone can train on the real benchmark with no download and no ``../shared``.

On first use the three official files are written from it byte for byte into a
cache folder and handed to TFDS's official builder as its manual_dir: the
builder's recorded SHA-256 checksums then prove the copy exact, and the data
reaches the model through the same code path as a download would. The text
format is fixed: per image one line of 784 characters '0' or '1' separated by
single spaces, ending in '\\n'.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib
from typing import Mapping, Optional

import numpy as np
from absl import logging

NUM_PIXELS = 784
SPLITS = {"train": 50_000, "valid": 10_000, "test": 10_000}  # the official files' sizes
EMBEDDED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedded",
                        "binarized_mnist.npz")
_LINE = 2 * NUM_PIXELS  # bytes per image: a digit and a space (the last one a newline) each


class EmbeddedDataError(RuntimeError):
  """The embedded copy is missing or damaged (e.g. a Git LFS pointer instead of the data)."""


def file_name(split: str) -> str:
  """The official file name of a split: binarized_mnist_{train,valid,test}.amat."""
  return f"binarized_mnist_{split}.amat"


def to_amat(bits: np.ndarray) -> bytes:
  """The .amat text of images given as {0, 1} pixels [N, 784]."""
  text = np.full((len(bits), _LINE), ord(" "), np.uint8)
  text[:, 0::2] = ord("0") + bits
  text[:, -1] = ord("\n")
  return text.tobytes()


def from_amat(text: bytes, name: str = ".amat") -> np.ndarray:
  """The {0, 1} pixels [N, 784] of .amat text; raises unless it is exactly that format."""
  if len(text) % _LINE:
    raise ValueError(f"{name}: {len(text)} bytes is not a whole number of {_LINE}-byte lines.")
  lines = np.frombuffer(text, np.uint8).reshape(-1, _LINE)
  bits = lines[:, 0::2] - ord("0")
  if bits.max(initial=0) > 1 or (lines[:, 1:-1:2] != ord(" ")).any() or (
      lines[:, -1] != ord("\n")).any():
    raise ValueError(f"{name}: not lines of 784 space-separated 0s and 1s.")
  if to_amat(bits) != text:
    raise ValueError(f"{name}: does not round-trip.")
  return bits


def pack(amat_dir: str, path: str = EMBEDDED) -> None:
  """Builds the embedded copy from the three official files in ``amat_dir`` (how it was made)."""
  arrays = {}
  for split, count in SPLITS.items():
    with open(os.path.join(amat_dir, file_name(split)), "rb") as f:
      bits = from_amat(f.read(), file_name(split))
    if len(bits) != count:
      raise ValueError(f"{file_name(split)}: {len(bits)} images, expected {count}.")
    arrays[split] = np.packbits(bits, axis=1)
  np.savez_compressed(path, **arrays)


def load_bits(path: str = EMBEDDED) -> dict[str, np.ndarray]:
  """{split: {0, 1} pixels [N, 784] as uint8} from the embedded copy."""
  try:
    with np.load(path, allow_pickle=False) as packed:
      bits = {s: np.unpackbits(packed[s], axis=1, count=NUM_PIXELS) for s in SPLITS}
  except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    raise EmbeddedDataError(
        f"{path}: the embedded binarized MNIST cannot be read ({e}). Restore it from the "
        f"repository (git checkout -- {os.path.relpath(path)}), or pass the official .amat "
        f"files with --config.data.manual_dir=FOLDER.") from None
  for split, count in SPLITS.items():
    if bits[split].shape != (count, NUM_PIXELS):
      raise EmbeddedDataError(f"{path}: split {split!r} has shape {bits[split].shape}, "
                              f"expected ({count}, {NUM_PIXELS}); restore the file.")
  return bits


def cache_dir() -> str:
  """${XDG_CACHE_HOME:-~/.cache}/vae_jax/binarized_mnist: where the .amat files are written."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "vae_jax", "binarized_mnist")


def _same_bytes(path: str, data: bytes) -> bool:
  try:
    if os.path.getsize(path) != len(data):
      return False
    with open(path, "rb") as f:
      return f.read() == data
  except OSError:
    return False


def _write_atomically(path: str, data: bytes) -> None:
  """Writes a temp file beside ``path``, then renames it: readers never see half a file."""
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                             dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def official_files(directory: Optional[str] = None,
                   bits: Optional[Mapping[str, np.ndarray]] = None) -> str:
  """Writes the three official .amat files into ``directory`` (default: cache_dir()).

  A file already there with exactly the right bytes is kept; any other is
  replaced (atomically). Returns the directory, ready to be TFDS's manual_dir.
  """
  directory = directory or cache_dir()
  os.makedirs(directory, exist_ok=True)
  bits = load_bits() if bits is None else bits
  written = []
  for split in SPLITS:
    path = os.path.join(directory, file_name(split))
    data = to_amat(bits[split])
    if not _same_bytes(path, data):
      _write_atomically(path, data)
      written.append(file_name(split))
  if written:
    logging.info("Wrote %s into %s from the binarized MNIST that ships with vae_jax.",
                 ", ".join(written), directory)
  return directory
