"""How a failed write (full disk, I/O error) reads: the reason and the space left.

Checkpoints and metrics are written by background threads (orbax, clu), so the
error a user meets may be a wrapper (clu's "AsyncError") around the operating
system's reason; ``root_cause`` digs that reason out, ``brief`` shortens it and
``free_mib`` says whether the disk is the cause, so that one line tells what to do.
"""

from __future__ import annotations

import shutil


def root_cause(error: BaseException) -> BaseException:
  """The innermost exception of ``raise ... from`` chains (the OS reason, usually)."""
  seen = {id(error)}
  while error.__cause__ is not None and id(error.__cause__) not in seen:
    error = error.__cause__
    seen.add(id(error))
  return error


def brief(error: BaseException, limit: int = 400) -> str:
  """The error's type and first line, middle elided (the OS reason is at the end)."""
  text = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
  return text if len(text) <= limit else f"{text[:limit // 3]} ... {text[-2 * limit // 3:]}"


def free_mib(directory: str) -> str:
  """'12.3 MiB free on its disk now', or why that is unknown."""
  try:
    return f"{shutil.disk_usage(directory).free / 2**20:.1f} MiB free on its disk now"
  except OSError as e:
    return f"free space unknown: {e.strerror}"
