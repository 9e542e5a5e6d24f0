"""TFDS's own output kept off the terminal while it prepares or reads a dataset.

Preparing binarized MNIST prints about 40 lines of TFDS internals (progress
bars redrawn in place, "Skipping download", shuffling, its bold banners) and
reading it a few more; the data module logs its own one-line summary instead.
TFDS's records stay available: --verbosity=1 (absl DEBUG) lets them through,
with the progress bars, and what TFDS printed is logged at DEBUG.
"""

from __future__ import annotations

import contextlib
import io
import logging as std_logging
import os
from typing import Iterator

from absl import logging


class NotFromTfds(std_logging.Filter):
  """Lets TFDS's own records through only from ERROR up, unless the verbosity is DEBUG."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return (record.levelno >= std_logging.ERROR or logging.get_verbosity() >= logging.DEBUG
            or f"{os.sep}tensorflow_datasets{os.sep}" not in record.pathname)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
  """While the body runs, TFDS's progress bars, INFO/WARNING records and prints are held back."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if logging.get_verbosity() < logging.DEBUG:
    tfds.disable_progress_bar()
  # TFDS logs through absl's logger; records of other loggers reach absl's handler.
  filtered = (logging.get_absl_logger(), logging.get_absl_handler())
  keep_out, printed = NotFromTfds(), io.StringIO()
  for f in filtered:
    f.addFilter(keep_out)
  try:
    with contextlib.redirect_stdout(printed):
      yield
  finally:
    for f in filtered:
      f.removeFilter(keep_out)
    if printed.getvalue().strip():
      logging.debug("TFDS printed: %s", printed.getvalue().strip())
