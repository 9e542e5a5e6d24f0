"""Checkpointer: damaged checkpoints are detected, set aside and skipped; keep policy."""

import os
import subprocess

import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import assert_trees_equal
from vae_jax.training import checkpoints

# A restore that fails midway leaves tensorstore handles for the GC: harmless here.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _state(step):
  return {"w": jnp.arange(2000, dtype=jnp.float32) * step, "b": jnp.ones((7, 3)) * step,
          "step": jnp.asarray(step, jnp.int32)}


def _save_steps(workdir, steps, keep=5, scores=None, keep_best=False):
  ckpt = checkpoints.Checkpointer(str(workdir), keep, keep_best=keep_best)
  for i, step in enumerate(steps):
    ckpt.save(step, _state(step), {"note": step}, None if scores is None else scores[i])
  ckpt.close()


def _largest_file(directory):
  files = [os.path.join(root, f) for root, _, names in os.walk(directory) for f in names]
  return max(files, key=os.path.getsize)


def _truncate(path):
  with open(path, "rb+") as f:
    f.truncate(os.path.getsize(path) // 2)


def _flip_byte(path):
  with open(path, "rb+") as f:
    data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    f.seek(0)
    f.write(data)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "empty_file", "missing_meta"])
def test_damaged_latest_checkpoint_is_set_aside_and_the_previous_used(tmp_path, damage):
  _save_steps(tmp_path, [1, 2, 3])
  latest = tmp_path / "checkpoints" / "3"
  if damage == "truncate":        # a kill or a full disk during the write
    _truncate(_largest_file(latest / "state"))
  elif damage == "flip_byte":     # silent disk corruption: orbax itself restores it "fine"
    _flip_byte(_largest_file(latest / "state"))
  elif damage == "empty_file":
    open(_largest_file(latest / "state"), "wb").close()
  else:
    os.remove(latest / "meta" / "metadata")

  ckpt = checkpoints.Checkpointer(str(tmp_path), 5)
  state, meta = ckpt.restore_latest(_state(0))
  assert_trees_equal(state, _state(2))
  assert meta["note"] == 2 and meta["step"] == 2
  # Moved aside whole, never deleted; the run continues to save normally.
  assert ckpt.all_steps() == [1, 2]
  (aside,) = os.listdir(tmp_path / checkpoints.DAMAGED_DIR)
  assert aside.startswith("3-")
  assert os.path.isdir(tmp_path / checkpoints.DAMAGED_DIR / aside / "state")
  ckpt.save(3, _state(3), {})
  ckpt.close()
  assert_trees_equal(checkpoints.Checkpointer(str(tmp_path), 5).restore(3, _state(0))[0],
                     _state(3))


def test_read_only_checkpointer_skips_a_damaged_checkpoint_without_moving_it(tmp_path):
  _save_steps(tmp_path, [1, 2])
  _flip_byte(_largest_file(tmp_path / "checkpoints" / "2" / "state"))
  ckpt = checkpoints.Checkpointer(str(tmp_path), 5, read_only=True)
  state, _ = ckpt.restore_latest(_state(0))
  assert int(state["step"]) == 1
  assert os.path.isdir(tmp_path / "checkpoints" / "2")
  assert not os.path.exists(tmp_path / checkpoints.DAMAGED_DIR)
  with pytest.raises(checkpoints.CheckpointError, match="do not match the SHA-256"):
    ckpt.restore(2, _state(0))


def test_when_no_checkpoint_restores_nothing_is_moved(tmp_path):
  _save_steps(tmp_path, [1, 2])
  wrong_model = {"w": jnp.zeros(5), "b": jnp.zeros((7, 3)), "step": jnp.zeros((), jnp.int32)}
  with pytest.raises(checkpoints.CheckpointError, match="No checkpoint .* can be restored"):
    checkpoints.Checkpointer(str(tmp_path), 5).restore_latest(wrong_model)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
  assert not os.path.exists(tmp_path / checkpoints.DAMAGED_DIR)


def test_keeps_the_latest_n_plus_the_best(tmp_path):
  # Test -ELBO per step: step 2 is the best, then steps 5 and 6 are the latest two.
  _save_steps(tmp_path, [1, 2, 3, 4, 5, 6], keep=2, scores=[9.0, 1.0, 5.0, 4.0, 3.0, 2.0],
              keep_best=True)
  ckpt = checkpoints.Checkpointer(str(tmp_path), 2, keep_best=True, read_only=True)
  assert ckpt.all_steps() == [2, 5, 6]
  assert ckpt.best_step() == 2
  # Without keep_best only the latest two remain.
  _save_steps(tmp_path / "plain", [1, 2, 3, 4], keep=2)
  assert checkpoints.Checkpointer(str(tmp_path / "plain"), 2).all_steps() == [3, 4]


def test_digest_covers_values_and_structure():
  a = checkpoints.state_digest(_state(1))
  assert a == checkpoints.state_digest(_state(1))
  assert a != checkpoints.state_digest(_state(2))
  renamed = dict(_state(1))
  renamed["v"] = renamed.pop("w")
  assert a != checkpoints.state_digest(renamed)
  assert np.asarray(_state(1)["w"]).nbytes == 8000


@pytest.fixture
def tiny_disk(tmp_path):
  """A 600 kB tmpfs: a real 'No space left on device' (needs root; skipped otherwise)."""
  mount_point = tmp_path / "disk"
  mount_point.mkdir()
  if os.geteuid() != 0 or subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount_point)],
      capture_output=True, check=False).returncode != 0:
    pytest.skip("cannot mount a small tmpfs here")
  yield mount_point
  subprocess.run(["umount", str(mount_point)], check=False)


@pytest.mark.slow
def test_full_disk_fails_clearly_and_keeps_the_last_complete_checkpoint(tiny_disk):
  incompressible = lambda s: {"w": jnp.asarray(np.random.RandomState(s).rand(100_000),
                                               jnp.float32), "step": jnp.asarray(s)}
  ckpt = checkpoints.Checkpointer(str(tiny_disk), 1)  # keep 1: the riskiest setting
  ckpt.save(1, incompressible(1), {})
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"No space left on device.*Complete checkpoints are untouched: \[1\]"):
    ckpt.save(2, incompressible(2), {})  # the first 400 kB fit; a second one cannot
    ckpt.close()
  state, _ = checkpoints.Checkpointer(str(tiny_disk), 1).restore_latest(incompressible(0))
  assert_trees_equal(state, incompressible(1))
