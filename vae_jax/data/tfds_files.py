"""A folder of a TFDS dataset's original files, checked against TFDS's own records first.

TFDS's builder checks each file's size and SHA-256 (its checksums.tsv) only
while it prepares, and a truncated or damaged file surfaces as a page-long
NonMatchingChecksumError traceback. Checking the folder here, before TFDS
sees it, with the same records, turns that into one line naming the file, what
is wrong with it and what the official file is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import urllib.parse


class ManualFileError(ValueError):
  """A file in manual_dir is not the official file TFDS expects (truncated, damaged)."""


@dataclasses.dataclass(frozen=True)
class OfficialFile:
  name: str          # the file's name in manual_dir: the last part of its URL
  url: str
  size: int          # bytes
  sha256: str


def official_files(dataset: str) -> list[OfficialFile]:
  """The files TFDS's builder for ``dataset`` downloads, with their recorded size and SHA-256."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  infos = tfds.builder_cls(dataset).url_infos or {}
  return [OfficialFile(os.path.basename(urllib.parse.urlparse(url).path), url,
                       int(info.size), info.checksum)
          for url, info in sorted(infos.items())]


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def problem(path: str, official: OfficialFile) -> str | None:
  """What is wrong with the file at ``path`` as a copy of ``official``; None: it is exact."""
  want = (f"the official file has {official.size:,} bytes, SHA-256 {official.sha256} "
          f"({official.url})")
  try:
    size = os.path.getsize(path)
    digest = _sha256(path) if size == official.size else None
  except OSError as e:
    return f"cannot be read ({e.strerror}); {want}"
  if size < official.size:
    return f"is truncated ({size:,} bytes); {want}"
  if size > official.size:
    return f"is too long ({size:,} bytes); {want}"
  if digest != official.sha256:
    return f"is damaged (SHA-256 {digest}); {want}"
  return None


def check(dataset: str, directory: str, *, where: str, remedy: str = "") -> None:
  """Raises ManualFileError, in one line, for the first file of ``directory`` that is not exact.

  Files that are absent are not checked here (the caller says which are missing).
  ``where`` names the folder to the user (e.g. the config field), ``remedy`` is
  appended to the advice.
  """
  for official in official_files(dataset):
    path = os.path.join(directory, official.name)
    if not os.path.isfile(path):
      continue
    wrong = problem(path, official)
    if wrong:
      raise ManualFileError(f"{where}: {official.name} {wrong}. Replace it with the official "
                            f"file{remedy}.")
