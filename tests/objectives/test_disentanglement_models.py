"""The disentanglement models end to end: a short run of each resumes bitwise, gives the
same parameters on 1 and 2 devices, and trains in a population as it does alone."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import REPO, SMALL, assert_trees_equal, make_config, saved_state
from tests.objectives import test_regularizers
from vae_jax.training import loop as train

pytestmark = pytest.mark.slow

# Each model at a setting where its regularizer acts (an annealed capacity still rising).
ON = {"annealed_vae": {"objective.gamma": 10.0, "objective.c_max": 5.0,
                       "objective.iteration_threshold": 10},
      "beta_tc_vae": {"objective.beta": 6.0},
      "factor_vae": {"objective.gamma": 30.0},
      "dip_vae_i": {"objective.lambda_od": 10.0, "objective.lambda_d_factor": 10.0},
      "dip_vae_ii": {"objective.lambda_od": 5.0, "objective.lambda_d_factor": 1.0}}
RUN = {**SMALL, "eval.num_importance_samples": 5, "images.num_reconstructions": 0,
       "images.num_samples": 0}


def _config(name, **extra):
  fields = {**RUN, "objective.regularizer": name, **ON[name], **extra}
  return make_config(**{k.replace(".", "__"): v for k, v in fields.items()})


@pytest.mark.parametrize("name", sorted(ON))
def test_a_short_run_of_each_model_resumes_bitwise(tmp_path, name):
  config = _config(name)
  full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
  train.train_and_evaluate(config, full)
  shutil.copytree(full, resumed)  # as if killed after step 10
  shutil.rmtree(os.path.join(resumed, "checkpoints", "20"))
  os.remove(os.path.join(resumed, "results.json"))
  assert train.train_and_evaluate(config, resumed)["steps"] == 20
  state, init = saved_state(full, config)
  assert_trees_equal(state, saved_state(resumed, config)[0])
  moved = [np.max(np.abs(a - b)) for a, b in zip(jax.tree.leaves(state.params),
                                                 jax.tree.leaves(init.params))]
  assert max(moved) > 1e-3
  if name == "factor_vae":  # the discriminator and its optimizer are in the checkpoint
    assert jax.tree.leaves(state.aux) and not np.array_equal(
        state.aux["params"]["logits"]["kernel"], init.aux["params"]["logits"]["kernel"])


def test_each_model_gives_the_same_parameters_on_one_and_two_devices(tmp_path):
  """The batch-coupled terms (TC over the batch, DIP's covariance, the annealed |KL - C|,
  FactorVAE's permutation) are computed on the global batch on any device count."""
  out = tmp_path / "two.npz"
  script = ("import sys, numpy as np, jax\n"
            "from tests.objectives import test_disentanglement_models as t\n"
            "assert jax.device_count() == 2\n"
            "np.savez(sys.argv[1], **t.final_parameters())\n")
  proc = subprocess.run([sys.executable, "-c", script, str(out)], cwd=REPO, text=True,
                        capture_output=True, timeout=600,
                        env={**os.environ,
                             "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  two = dict(np.load(out))
  one = final_parameters()
  assert sorted(one) == sorted(two)
  for key, value in one.items():
    np.testing.assert_allclose(two[key], value, atol=2e-5, err_msg=key)


# FactorVAE runs fewer steps. Both its networks train with Adam, whose step is about ±lr for a
# gradient near zero whatever its size, so the float rounding that differs between device counts
# flips a few such steps. Through γ·TC that reaches the encoder: on an AMD EPYC, 8 steps moved
# a few encoder weights by 1e-3, one Adam step, while 4 steps stayed within 6e-6 (the
# discriminator's Adam moments included, which would show a mis-scaled gradient).
STEPS = {"factor_vae": 4}


def final_parameters(steps=8) -> dict:
  """Every model's parameters (and FactorVAE's discriminator's and its moments) after ``steps``
  steps (FactorVAE: STEPS)."""
  out = {}
  for name, setting in ON.items():
    state, metrics = test_regularizers._train({"objective.regularizer": name, **setting},
                                              STEPS.get(name, steps))
    assert np.all(np.isfinite(metrics["loss"])), name
    leaves = jax.tree_util.tree_leaves_with_path({"params": state.params, "aux": state.aux})
    for path, leaf in leaves:
      if np.issubdtype(np.asarray(leaf).dtype, np.floating):
        out[f"{name}{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
  return out


def test_factor_vae_members_train_in_a_population_as_alone(tmp_path):
  """gamma traced per member; each member's discriminator is its own."""
  members = [{"objective.gamma": 10.0, "seed": 0}, {"objective.gamma": 40.0, "seed": 1}]
  configs = [_config("factor_vae", **m) for m in members]
  for i, config in enumerate(configs):
    train.train_and_evaluate(config, str(tmp_path / f"solo{i}"))
  outcomes = train.train_population(configs, [str(tmp_path / f"m{i}") for i in range(2)])
  assert all(isinstance(o, dict) for o in outcomes), outcomes
  for i, config in enumerate(configs):
    solo, _ = saved_state(tmp_path / f"solo{i}", config)
    member, _ = saved_state(tmp_path / f"m{i}", config)
    for a, b in zip(jax.tree.leaves(solo), jax.tree.leaves(member)):
      np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                 atol=1e-5)
    with open(tmp_path / f"m{i}" / "results.json", encoding="utf-8") as f:
      results = json.load(f)
    assert results["steps"] == 20
