"""Metric writers: TensorBoard event files (clu) plus a JSON-lines file.

``metrics.jsonl`` holds one object per write, ``{"step": 1000, "test/neg_elbo":
104.2, ...}``, so curves can be read with nothing but the standard library. A
resumed run appends: steps between its checkpoint and the interruption appear
twice, with identical values (training is deterministic); readers keep the
last record per step (``read_jsonl`` does).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np
from clu import metric_writers

from vae_jax.training import workdir as workdir_lib
from vae_jax.training import write_errors


class JsonlWriter(metric_writers.MetricWriter):
  """Appends scalars to a JSON-lines file; other summary kinds are not stored."""

  def __init__(self, path: str):
    _drop_partial_last_line(path)  # left by a kill mid-write
    self._file = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {"step": int(step)}
    for key, value in scalars.items():
      value = float(np.asarray(value))
      record[key] = value if math.isfinite(value) else str(value)
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()

  def write_summaries(self, step, values, metadata=None):
    del step, values, metadata

  def write_images(self, step, images):
    del step, images

  def write_videos(self, step, videos):
    del step, videos

  def write_audios(self, step, audios, *, sample_rate):
    del step, audios, sample_rate

  def write_texts(self, step, texts):
    del step, texts

  def write_histograms(self, step, arrays, num_buckets=None):
    del step, arrays, num_buckets

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def _drop_partial_last_line(path: str) -> None:
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: str) -> dict[int, dict[str, Any]]:
  """{step: merged record}; for repeated steps (a resumed run) the last value wins."""
  out: dict[int, dict[str, Any]] = {}
  with open(path, "rb") as f:
    for number, line in enumerate(f, 1):
      try:
        record = json.loads(line.decode("utf-8"))
        out.setdefault(record["step"], {}).update(record)
      except (ValueError, KeyError, TypeError) as e:  # not UTF-8, not JSON, no "step"
        raise MetricsError(
            f"{path} is damaged at line {number} ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:120]}); each line must be one JSON object with a "
            f"\"step\". Restore it from a copy; checkpoints are not affected.") from None
  return out


def create_writer(workdir: str, *, is_main_process: bool = True) -> metric_writers.MetricWriter:
  """TensorBoard events + metrics.jsonl in the workdir (nothing on other processes).

  A failed write raises MetricsError, whose message names the workdir, the OS reason
  and the free space.
  """
  if not is_main_process:
    return metric_writers.MultiWriter([])
  return _ReportedErrors(metric_writers.AsyncMultiWriter([
      metric_writers.SummaryWriter(workdir),
      JsonlWriter(os.path.join(workdir, workdir_lib.METRICS_FILE)),
  ]), workdir)


class MetricsError(Exception):
  """Writing metrics failed (full disk, I/O error), or reading them back (a damaged file);
  checkpoints are not affected."""


class _ReportedErrors(metric_writers.MetricWriter):
  """Turns the writers' failures (raised late, from clu's background thread) into MetricsError.

  Without it a full disk met by TensorBoard's flush reads "AsyncError: ... WriteSummary",
  while the same disk met by orbax a moment later reads as a clear CheckpointError.
  """

  def __init__(self, writer: metric_writers.MetricWriter, workdir: str):
    self._writer, self._workdir = writer, workdir

  def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
    try:
      return getattr(self._writer, method)(*args, **kwargs)
    except Exception as e:  # pylint: disable=broad-except  # any failed write
      raise MetricsError(
          f"Writing metrics in {self._workdir} failed "
          f"({write_errors.brief(write_errors.root_cause(e))}; "
          f"{write_errors.free_mib(self._workdir)}). Checkpoints are not affected: fix the "
          f"cause (e.g. free disk space) and rerun the same command to resume.") from e

  def write_summaries(self, step, values, metadata=None):
    self._call("write_summaries", step, values, metadata)

  def write_scalars(self, step, scalars):
    self._call("write_scalars", step, scalars)

  def write_images(self, step, images):
    self._call("write_images", step, images)

  def write_videos(self, step, videos):
    self._call("write_videos", step, videos)

  def write_audios(self, step, audios, *, sample_rate):
    self._call("write_audios", step, audios, sample_rate=sample_rate)

  def write_texts(self, step, texts):
    self._call("write_texts", step, texts)

  def write_histograms(self, step, arrays, num_buckets=None):
    self._call("write_histograms", step, arrays, num_buckets)

  def write_hparams(self, hparams):
    self._call("write_hparams", hparams)

  def flush(self):
    self._call("flush")

  def close(self):
    self._call("close")
