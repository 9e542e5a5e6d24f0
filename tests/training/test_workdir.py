"""workdir.lookup: one dotted-field read of a run's JSON, shared by resumes and tables."""

import json
import subprocess

import ml_collections
import pytest

from configs import default
from vae_jax.training import workdir as workdir_lib

RESULTS = {"dataset": {"used": "digits", "fallback_reason": None, "num_test": 360},
           "test": {"nll": 90.5, "per_dim": [1.0, {"x": 2}]}, "steps": 20, "unit": "nats"}


@pytest.mark.parametrize("field, value", [
    ("dataset.used", "digits"),
    ("dataset.num_test", 360),
    ("steps", 20),
    ("test.per_dim", [1.0, {"x": 2}]),
    ("dataset.fallback_reason", None),      # recorded as null
    ("dataset.preprocessing", None),        # never recorded (an older run)
    ("eval_seed", None),
    ("unit.x", None),                       # through a string
    ("dataset.fallback_reason.x", None),    # through null
    ("test.per_dim.x", None),               # through a list
    ("missing.deeper.still", None),
])
def test_a_field_is_its_value_or_none_where_the_path_has_none(field, value):
  assert workdir_lib.lookup(RESULTS, field) == value


def test_a_group_comes_back_as_a_plain_dict_that_json_can_write():
  group = workdir_lib.lookup(RESULTS, "dataset")
  assert type(group) is dict and group == RESULTS["dataset"]
  json.dumps(group)
  assert workdir_lib.lookup(None, "steps") is None


def test_changed_fields_are_recorded_with_old_and_new_values(tmp_path):
  config = default.get_config()
  workdir_lib.prepare(str(tmp_path), config)
  config.num_train_steps = 50
  config.debug.extra = ml_collections.ConfigDict({"a": 1})  # a group the run did not have
  changes = workdir_lib.prepare(str(tmp_path), config, allow_changes=["num_train_steps", "debug"])
  assert changes == {"num_train_steps": [-1, 50], "debug.extra": [None, {"a": 1}]}
  workdir_lib.record_changes(str(tmp_path), changes, step=20)  # JSON-writable as it is


def test_a_run_recorded_before_the_model_interface_resumes_and_loads_unchanged(tmp_path):
  """A config.json without model.name and model.conv_impl (older code) reads as the family
  that claims such runs, with the values that reproduce them: no change to allow."""
  config = default.get_config()
  workdir_lib.prepare(str(tmp_path), config)
  recorded = json.loads((tmp_path / workdir_lib.CONFIG_FILE).read_text())
  del recorded["model"]["name"], recorded["model"]["conv_impl"]
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(json.dumps(recorded))
  assert workdir_lib.prepare(str(tmp_path), default.get_config()) == {}
  loaded = workdir_lib.load_config(str(tmp_path))
  assert loaded.model.name == "gaussian_vae" and loaded.model.conv_impl == "auto"
  assert loaded.to_dict() == workdir_lib.config_dict(config)


def test_conv_impl_may_change_when_a_run_continues(tmp_path):
  """model.conv_impl changes how layers are computed, not the saved state: allowed, named."""
  workdir_lib.prepare(str(tmp_path), default.get_config())
  config = default.get_config()
  config.model.conv_impl = "lax"
  with pytest.raises(workdir_lib.WorkdirError, match="--allow_config_changes=model.conv_impl"):
    workdir_lib.prepare(str(tmp_path), config)
  changes = workdir_lib.prepare(str(tmp_path), config, allow_changes=["model.conv_impl"])
  assert changes == {"model.conv_impl": ["auto", "lax"]}


def test_a_config_json_of_random_bytes_is_named_in_one_line(tmp_path):
  path = tmp_path / "config.json"
  path.write_bytes(bytes(range(128, 256)) * 4)  # not UTF-8: was a bare UnicodeDecodeError
  with pytest.raises(workdir_lib.WorkdirError) as err:
    workdir_lib.load_config(str(tmp_path))
  assert str(err.value).startswith(f"{path} is damaged (not UTF-8 text: byte 0x80 at offset 0)")
  assert "--overwrite" in str(err.value) and "\n" not in str(err.value)


def test_a_damaged_metrics_file_is_named_in_one_line(tmp_path):
  from vae_jax.training import metrics  # pylint: disable=g-import-not-at-top
  path = tmp_path / "metrics.jsonl"
  path.write_bytes(b'{"step": 1, "train/loss": 2.0}\n\xff\xfe\x00garbage\n')
  with pytest.raises(metrics.MetricsError, match=rf"{path} is damaged at line 2 \(Unicode"):
    metrics.read_jsonl(str(path))


def test_a_read_only_file_system_is_not_called_a_permission_problem(tmp_path):
  disk = tmp_path / "ro"
  disk.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(disk)],
                    capture_output=True, check=False).returncode != 0:
    pytest.skip("cannot mount a read-only tmpfs here")
  try:
    for workdir in (disk, disk / "new_run"):  # an existing folder, and one to be made
      with pytest.raises(workdir_lib.WorkdirError) as err:
        workdir_lib.check_directory(str(workdir))
      assert f"{disk} is on a read-only file system" in str(err.value)
      assert "permission" not in str(err.value)
  finally:
    subprocess.run(["umount", str(disk)], check=False)
