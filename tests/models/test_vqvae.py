"""The VQ-VAE family: straight-through gradients, the EMA codebook, dead-code restarts, config
checks, and (slow) a short run with its pictures and exact resume."""

import json
import math
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vqvae as vqvae_config
from tests.conftest import REPO, assert_trees_equal, concurrently, saved_state, set_fields
from vae_jax import validation
from vae_jax.data import datasets
from vae_jax.models import interface
from vae_jax.models import vqvae
from vae_jax.training import loop as train

DIGITS = datasets.DataInfo("digits", (8, 8, 1), False, 10)


def small_config(**overrides):
  config = vqvae_config.get_config("data=mnist_5k")
  set_fields(config, {"data.name": "digits", "model.num_codes": 8, "model.code_dim": 4,
                      "model.width": 8, "model.depth": 1, "model.num_residual": 1,
                      "batch_size": 32, "num_train_steps": 20, "steps_per_dispatch": 10,
                      "log_every": 10, "eval_every": 10, "checkpoint_every": 10,
                      "eval.batch_size": 100, "images.num_reconstructions": 8,
                      "images.num_samples": 8})
  return set_fields(config, {k.replace("__", "."): v for k, v in overrides.items()})


def test_straight_through_gradient_is_the_identity_on_the_lookup():
  z_e = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 4))
  codebook = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
  z_q = codebook[vqvae.nearest_codes(z_e, codebook)]
  f = lambda y: jnp.sum(jnp.sin(y) * jnp.arange(4.0))  # any downstream loss
  y = vqvae.straight_through(z_e, z_q)
  np.testing.assert_allclose(y, z_q, atol=1e-6)              # forward: the codes
  np.testing.assert_allclose(jax.grad(lambda z: f(vqvae.straight_through(z, z_q)))(z_e),
                             jax.grad(f)(z_q), rtol=1e-6)    # backward: dL/dz_q, passed to z_e
  through_codebook = jax.grad(
      lambda c: f(vqvae.straight_through(z_e, c[vqvae.nearest_codes(z_e, c)])))(codebook)
  np.testing.assert_array_equal(through_codebook, 0.0)       # the decoder never moves codes


def test_nearest_codes_are_the_brute_force_argmin():
  z = jax.random.normal(jax.random.PRNGKey(2), (50, 3))
  codebook = jax.random.normal(jax.random.PRNGKey(3), (7, 3))
  brute = np.argmin(((np.asarray(z)[:, None] - np.asarray(codebook)[None]) ** 2).sum(-1), 1)
  np.testing.assert_array_equal(vqvae.nearest_codes(z, codebook), brute)


def _model(**overrides):
  config = small_config(**overrides)
  validation.validate(config)
  return vqvae.build(config, DIGITS)


def test_terms_are_the_bound_with_a_uniform_prior_and_carry_the_vq_gradients():
  model = _model(model__ema=False)  # the codebook trained by gradients
  params = model.init(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (4, 8, 8, 1))
  keys = jax.random.split(jax.random.PRNGKey(2), 4)
  terms = model.terms(params, {"image": x}, keys)
  z_e = model.encoder_outputs(params, {"image": x})
  z_q = params["codebook"][vqvae.nearest_codes(z_e, params["codebook"])]
  log_px = model.likelihood(params, z_q).log_prob(x)
  np.testing.assert_allclose(terms["distortion"], -log_px, rtol=1e-5)
  np.testing.assert_allclose(terms["rate"], model.num_positions * math.log(8), rtol=1e-6)
  np.testing.assert_allclose(terms["elbo"], log_px - terms["rate"], rtol=1e-5)
  # The loss's gradient on the codebook is that of ||sg[z_e] - e||^2 alone.
  grad = jax.grad(lambda p: jnp.sum(model.terms(p, {"image": x}, keys)["distortion"]))(params)
  expected = jax.grad(lambda c: jnp.sum((jax.lax.stop_gradient(z_e) - c[
      vqvae.nearest_codes(z_e, c)]) ** 2))(params["codebook"])
  np.testing.assert_allclose(grad["codebook"], expected, rtol=1e-5, atol=1e-6)
  # Deterministic q: every importance weight is the bound itself.
  log_w = model.log_weights(params, {"image": x}, keys)(jnp.arange(3))
  np.testing.assert_allclose(log_w, np.repeat(np.asarray(terms["elbo"])[:, None], 3, 1))


def test_statistics_of_a_hand_made_batch_and_the_ema_update_formula():
  codebook = jnp.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  z_e = jnp.array([[[[1.0, 0.0], [9.0, 1.0]]], [[[0.0, 1.0], [11.0, 0.0]]]])  # [2, 1, 2, 2]
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  stats = vqvae.batch_statistics(z_e, codebook, keys)
  np.testing.assert_allclose(stats["counts"], [1.0, 1.0, 0.0])   # per example
  np.testing.assert_allclose(stats["sums"], [[0.5, 0.5], [10.0, 0.5], [0.0, 0.0]])
  np.testing.assert_allclose(stats["offers"].sum(), 1.0)
  model = _model(model__ema=True, model__restart_dead_codes=False, model__num_codes=3,
                 model__code_dim=2, model__ema_decay=0.9, model__ema_epsilon=0.01)
  previous = {"codebook": codebook, "state": {
      "usage": jnp.array([1.0, 1.0, 1.0]), "cluster_size": jnp.array([2.0, 1.0, 0.5]),
      "embed_sum": jnp.array([[1.0, 1.0], [9.0, 0.0], [0.0, 4.0]])}}
  moved = {"codebook": codebook + 5.0, "state": previous["state"]}  # what an optimizer did
  new, metrics = model.after_update(previous, moved, stats)
  size = 0.9 * np.array([2.0, 1.0, 0.5]) + 0.1 * np.array([1.0, 1.0, 0.0])
  embed = 0.9 * np.array([[1.0, 1.0], [9.0, 0.0], [0.0, 4.0]]) + 0.1 * np.array(
      [[0.5, 0.5], [10.0, 0.5], [0.0, 0.0]])
  smoothed = (size + 0.01) / (size.sum() + 3 * 0.01) * size.sum()
  np.testing.assert_allclose(new["state"]["cluster_size"], size, rtol=1e-6)
  np.testing.assert_allclose(new["state"]["embed_sum"], embed, rtol=1e-6)
  np.testing.assert_allclose(new["codebook"], embed / smoothed[:, None], rtol=1e-6)
  np.testing.assert_allclose(metrics["codebook_perplexity"], 2.0, rtol=1e-6)


def test_dead_code_restart_replaces_exactly_the_unused_codes():
  model = _model(model__ema=False, model__num_codes=4, model__code_dim=2,
                 model__restart_dead_codes=True,
                 model__dead_code_threshold=0.1, model__ema_decay=0.5)
  codebook = jnp.arange(8.0).reshape(4, 2)
  previous = {"codebook": codebook, "state": {"usage": jnp.array([1.0, 0.0, 0.5, 0.05])}}
  stats = {"counts": jnp.array([1.0, 0.0, 0.0, 0.0]), "sums": jnp.zeros((4, 2)),
           "offers": jnp.array([0.5, 0.5, 0.25, 0.25]),
           "offered": jnp.array([[1.0, 1.0], [-1.0, -2.0], [3.0, 3.0], [0.5, 0.25]])}
  new, metrics = model.after_update(previous, previous, stats)
  # usage after the update: [1.0, 0.0, 0.25, 0.025]: codes 1 and 3 are below 0.1.
  np.testing.assert_array_equal(new["codebook"][np.array([0, 2])], codebook[np.array([0, 2])])
  np.testing.assert_allclose(new["codebook"][1], [-2.0, -4.0])   # offered / offers
  np.testing.assert_allclose(new["codebook"][3], [2.0, 1.0])
  assert float(metrics["dead_codes"]) == 2 and float(metrics["restarted_codes"]) == 2
  assert (new["state"]["usage"] >= 0.1).all()


def test_statistics_are_means_so_devices_average_to_the_global_batch():
  model = _model()
  params = model.init(jax.random.PRNGKey(0))
  x = jax.random.uniform(jax.random.PRNGKey(1), (6, 8, 8, 1))
  keys = jax.random.split(jax.random.PRNGKey(2), 6)
  whole = model.update_statistics(params, {"image": x}, keys)
  halves = [model.update_statistics(params, {"image": x[s]}, keys[s])
            for s in (slice(0, 3), slice(3, 6))]
  for name, value in whole.items():
    np.testing.assert_allclose((halves[0][name] + halves[1][name]) / 2, value, rtol=1e-5,
                               atol=1e-6)
  assert interface.has_after_update(model)


@pytest.mark.parametrize("overrides, message", [
    ({"objective.free_bits": 0.5}, "objective.free_bits"),
    ({"model.depth": 4}, "model.depth=4 is invalid: conv stages halve the 8x8"),
    ({"model.ema_decay": 1.0}, "model.ema_decay"),
    ({"model.likelihood": "poisson"}, "model.likelihood"),
])
def test_bad_configs_are_refused_naming_the_field(overrides, message):
  config = set_fields(small_config(), overrides)
  with pytest.raises(validation.ConfigError, match=message):
    validation.validate(config)


@pytest.mark.slow
def test_short_run_end_to_end_and_exact_resume(tmp_path):
  # EMA codebook, restarts, and an optimizer with weight decay that must not move the codebook.
  config = small_config(model__ema=True, optim__optimizer="adamw", optim__weight_decay=0.1)
  full, crashed = str(tmp_path / "full"), str(tmp_path / "crashed")
  results = train.train_and_evaluate(config, full)
  assert results["test"]["gap"] == 0.0 and math.isfinite(results["test"]["neg_elbo"])
  assert "codebook_loss" in results["test"] and "image_perplexity" in results["test"]
  for name in ("reconstructions.png", "samples.png"):
    assert os.path.getsize(os.path.join(full, name)) > 0
  state, init = saved_state(full, config, image_shape=(8, 8, 1))
  ema = state.params["state"]
  np.testing.assert_allclose(state.params["codebook"], ema["embed_sum"] / vqvae.laplace_smoothed(
      ema["cluster_size"], config.model.ema_epsilon)[:, None], rtol=1e-5)
  assert not np.allclose(state.params["codebook"], init.params["codebook"])
  train.train_and_evaluate(config, crashed)
  os.remove(os.path.join(crashed, "results.json"))
  shutil.rmtree(os.path.join(crashed, "checkpoints", "20"))
  assert train.train_and_evaluate(config, crashed)["steps"] == 20
  assert_trees_equal(saved_state(full, config, image_shape=(8, 8, 1))[0],
                     saved_state(crashed, config, image_shape=(8, 8, 1))[0])


@pytest.mark.slow
def test_same_codebook_on_one_and_two_devices(tmp_path):
  """The EMA statistics and restart candidates are per-example means: device-count invariant."""
  fields = {"data.name": "digits", "model.num_codes": 8, "model.code_dim": 4, "model.width": 8,
            "model.depth": 1, "batch_size": 32, "num_train_steps": 20, "steps_per_dispatch": 10,
            "log_every": 10, "eval_every": 20, "checkpoint_every": 20, "eval.batch_size": 100,
            "images.num_reconstructions": 0, "images.num_samples": 0}
  def run(n):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "run_with_devices.py"), str(n),
         str(tmp_path / f"dev{n}"), json.dumps(fields)], capture_output=True, text=True,
        cwd=REPO, timeout=600, env={**os.environ, "RUN_CONFIG": "configs/vqvae.py:data=mnist_5k"})
  for proc in concurrently(run, (1, 2)):
    assert proc.returncode == 0, proc.stderr[-3000:]
  config = set_fields(vqvae_config.get_config("data=mnist_5k"), fields)
  one, init = saved_state(tmp_path / "dev1", config, image_shape=(8, 8, 1))
  two, _ = saved_state(tmp_path / "dev2", config, image_shape=(8, 8, 1))
  diff = jax.tree.map(lambda a, b: np.max(np.abs(a - b)), one.params, two.params)
  assert max(jax.tree.leaves(diff)) < 1e-4
  assert not np.allclose(one.params["codebook"], init.params["codebook"])
  assert json.load(open(tmp_path / "dev2" / "results.json"))["device_count"] == 2
