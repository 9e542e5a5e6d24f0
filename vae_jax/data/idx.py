"""MNIST-format IDX files read directly: offline data without TFDS or its checksums.

The MNIST family ships as four IDX files (LeCun's format): a big-endian header
(two zero bytes, a type byte 0x08 for unsigned bytes, the number of dimensions)
then one uint32 per dimension, then the raw bytes. Copies on disk are often
recompressed (a Linux distribution's package, a mirror), so TFDS rejects them as
manual files on their checksums although the pixels are identical; reading the
format ourselves, validated strictly, serves them as they are. Each file may be
gzip-compressed (``NAME.gz``) or raw (``NAME``); the content decides, not the name.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from typing import Optional

import numpy as np

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions: [N, rows, columns]
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension: [N]
IMAGE_SIZE = (28, 28)
# (split, kind) -> the official file name, without ".gz".
FILES = {("train", "images"): "train-images-idx3-ubyte",
         ("train", "labels"): "train-labels-idx1-ubyte",
         ("test", "images"): "t10k-images-idx3-ubyte",
         ("test", "labels"): "t10k-labels-idx1-ubyte"}
SPLITS = ("train", "test")
_GZIP_MAGIC = b"\x1f\x8b"


class IdxError(ValueError):
  """An IDX file is malformed, truncated, or disagrees with its partner file."""


def find_files(directory: str) -> Optional[dict[tuple[str, str], str]]:
  """The paths of the four files in ``directory`` ({(split, kind): path}), or None.

  ``NAME.gz`` is preferred to ``NAME`` when both exist. None unless all four are
  there, so a folder with other files (say TFDS's) is left to TFDS.
  """
  found = {}
  for key, stem in FILES.items():
    for name in (f"{stem}.gz", stem):
      if os.path.isfile(os.path.join(directory, name)):
        found[key] = os.path.join(directory, name)
        break
    else:
      return None
  return found


def _read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] != _GZIP_MAGIC:
    return data
  try:
    return gzip.decompress(data)
  except (EOFError, OSError, zlib.error) as e:
    raise IdxError(f"{path}: damaged or truncated gzip data ({e}).") from None


def read(path: str, magic: int) -> np.ndarray:
  """The uint8 array of an IDX file whose header must start with ``magic``."""
  data = _read_bytes(path)
  what = {IMAGES_MAGIC: "images (magic 0x00000803)",
          LABELS_MAGIC: "labels (magic 0x00000801)"}.get(magic, f"magic {magic:#010x}")
  if len(data) < 4:
    raise IdxError(f"{path}: {len(data)} bytes, too short for an IDX header; expected {what}.")
  (found,) = struct.unpack(">I", data[:4])
  if found != magic:
    raise IdxError(f"{path}: magic number {found:#010x}, expected {what}. Is it the right file "
                   f"(images vs labels), and an uncorrupted IDX file?")
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(data) < header:
    raise IdxError(f"{path}: truncated header ({len(data)} bytes, expected {header}).")
  dims = struct.unpack(f">{ndim}I", data[4:header])
  expected = header + int(np.prod(dims, dtype=np.int64))
  if len(data) != expected:
    raise IdxError(f"{path}: {len(data)} bytes, but its header (dimensions "
                   f"{'x'.join(map(str, dims))}) says {expected}: the file is "
                   f"{'truncated' if len(data) < expected else 'followed by extra bytes'}.")
  return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_split(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 28, 28, 1], labels int32 [N]) of one split, checked for agreement."""
  images = read(images_path, IMAGES_MAGIC)
  labels = read(labels_path, LABELS_MAGIC)
  if images.shape[1:] != IMAGE_SIZE:
    raise IdxError(f"{images_path}: images of {images.shape[1]}x{images.shape[2]} pixels; "
                   f"expected {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} (the MNIST family).")
  if len(images) != len(labels):
    raise IdxError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                   f"{len(labels)} labels; they must describe the same examples.")
  return images[..., None].copy(), labels.astype(np.int32)


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def describe(directory: str, files: dict[tuple[str, str], str]) -> str:
  """'idx:DIR (NAME sha256:0123456789ab, ...)': where the arrays came from, exactly."""
  parts = [f"{os.path.basename(files[key])} sha256:{sha256(files[key])[:16]}" for key in FILES]
  return f"idx:{directory} ({', '.join(parts)})"
