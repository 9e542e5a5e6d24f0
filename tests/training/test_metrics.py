"""Metric writers: JSON lines on disk, and failed writes as one clear error."""

import errno
import json

import pytest
from clu import metric_writers

from vae_jax.training import metrics


def test_scalars_reach_the_jsonl_file_and_a_resumed_run_keeps_the_last_value(tmp_path):
  writer = metrics.create_writer(str(tmp_path))
  writer.write_scalars(10, {"train/loss": 2.0})
  writer.write_scalars(20, {"train/loss": float("nan")})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write(json.dumps({"step": 20, "train/loss": 1.5}) + "\n" + '{"step": 30, "tr')  # killed
  writer = metrics.create_writer(str(tmp_path))  # drops the partial line before appending
  writer.write_scalars(40, {"train/loss": 1.0})
  writer.close()
  records = metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
  assert records[10]["train/loss"] == 2.0 and records[20]["train/loss"] == 1.5
  assert 30 not in records and records[40]["train/loss"] == 1.0


class _FullDisk(metrics.JsonlWriter):

  def write_scalars(self, step, scalars):
    raise OSError(errno.ENOSPC, "No space left on device", self._file.name)


def test_a_full_disk_met_in_the_background_thread_is_one_metrics_error(tmp_path):
  """clu re-raises the thread's OSError as AsyncError on a later call; the user reads the OS
  reason, the workdir and the free space instead."""
  async_writer = metric_writers.AsyncMultiWriter([_FullDisk(str(tmp_path / "m.jsonl"))])
  writer = metrics._ReportedErrors(async_writer, str(tmp_path))  # pylint: disable=protected-access
  with pytest.raises(metrics.MetricsError) as raised:
    for step in range(3):  # the first failure surfaces at the next call at the latest
      writer.write_scalars(step, {"x": 1.0})
    writer.flush()
  message = str(raised.value)
  assert f"Writing metrics in {tmp_path} failed" in message
  assert "OSError: [Errno 28] No space left on device" in message
  assert "MiB free on its disk now" in message and "rerun the same command" in message
