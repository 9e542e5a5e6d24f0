"""The population benchmark's pieces that run without timing anything."""

import importlib.util
import os

from tests.conftest import REPO
from vae_jax.perf import populations


def test_a_sweep_can_be_cut_to_its_first_members(tmp_path):
  path = tmp_path / "first.py"
  path.write_text(populations._FIRST_MEMBERS.format(  # pylint: disable=protected-access
      count=3, path=os.path.join(REPO, "configs", "beta.py")))
  spec = importlib.util.spec_from_file_location("first", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  from configs import beta  # pylint: disable=g-import-not-at-top
  assert module.sweep() == beta.sweep()[:3]
  assert module.get_config().to_dict() == beta.get_config().to_dict()


def test_rows_read_as_aggregates_against_one_member():
  rows = [{"kind": "population", "members": m, "split": "batch", "member_map": "loop",
           "batch_size": 128, "examples_per_s": e, "examples_per_s_per_member": e / m,
           "compile_seconds": 1.0} for m, e in ((1, 1000.0), (4, 2000.0))]
  rows.append({"kind": "sweep", "sweep": "configs/beta.py", "members": 8, "overrides": [],
               "mode": "populations of <= 8", "wall_s": 50.0, "train_s": 20.0,
               "set_up_and_eval_s": 30.0, "speedup": 2.0})
  text = populations.format_rows(rows)
  assert "2.00" in text.splitlines()[2]          # 4 members: twice one member's examples/s
  assert "populations of <= 8: 50 s wall" in text and "2.00x faster" in text
