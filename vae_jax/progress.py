"""Progress of long computations in the log: fraction done, elapsed time, ETA.

A run's final evaluation (the IWAE bound with k = 5,000) or a study's loop can
take minutes with nothing else to say; a user cannot tell a working run from a
hung one. ``Progress`` logs at most one line per ``every_s`` seconds (and the
last one), so reporting after every unit of work costs a clock read.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

from absl import logging

REPORT_EVERY_S = 10.0


class Progress:
  """Reports ``done / total`` units of ``what``, throttled to one line per ``every_s``.

  Thread-safe: device callbacks may report from XLA's threads.
  """

  def __init__(self, what: str, total: int, unit: str = "", every_s: Optional[float] = None):
    self.what, self.total, self.unit = what, max(int(total), 1), unit
    self.every_s = REPORT_EVERY_S if every_s is None else every_s
    self.start = self._last = time.monotonic()
    self.done = 0
    self._lock = threading.Lock()

  def update(self, done: Optional[int] = None, note: str = "") -> Optional[str]:
    """Marks ``done`` units finished (default: one more); returns the line it logged, if any."""
    with self._lock:
      self.done = max(self.done, self.done + 1 if done is None else int(done))
      now = time.monotonic()
      if now - self._last < self.every_s and self.done < self.total:
        return None
      if self.done >= self.total and now - self.start < self.every_s:
        return None  # short work: no progress line at all
      self._last = now
      elapsed = now - self.start
      eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
      unit = f" {self.unit}" if self.unit else ""
      line = (f"{self.what}: {self.done}/{self.total}{unit} ({100 * self.done / self.total:.0f}%), "
              f"{elapsed:.0f} s elapsed, ETA {eta:.0f} s" + (f" | {note}" if note else ""))
    logging.info("%s", line)
    return line
