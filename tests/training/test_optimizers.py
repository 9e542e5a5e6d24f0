"""The IWAE paper's Adam ("adam_iwae") against a transcription of its Theano updates."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests.conftest import make_config
from vae_jax.training import state as state_lib


def _theano_adam(params, grads_per_step, lr, scale, b1=0.99, b2=0.999):
  """yburda/iwae optimizers.py as numpy: simultaneous updates of t, m, v and the params
  (the step uses the old m, v and t), gradients of the objective (ascent) = -loss grads."""
  m, v, t, p = np.zeros_like(params), np.ones_like(params), 1.0, params.copy()
  for g in grads_per_step:
    objective_grad = -scale * g
    alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
    p = p + alpha * m / (np.sqrt(v) + 1e-4)
    m, v, t = b1 * m + (1 - b1) * objective_grad, b2 * v + (1 - b2) * objective_grad**2, t + 1
  return p


def test_adam_iwae_is_the_papers_update_step_for_step():
  rng = np.random.default_rng(0)
  params = rng.standard_normal(5).astype(np.float32)
  grads = [rng.standard_normal(5).astype(np.float32) * 0.05 for _ in range(6)]
  opt = state_lib.iwae_adam(optax.constant_schedule(1e-3), scale=20.0)
  p, state = jnp.asarray(params), opt.init(jnp.asarray(params))
  for i, g in enumerate(grads):
    updates, state = opt.update(jnp.asarray(g), state)
    p = optax.apply_updates(p, updates)
    if i == 0:  # the first step moves nothing: its first moments were 0
      np.testing.assert_array_equal(np.asarray(p), params)
  np.testing.assert_allclose(np.asarray(p), _theano_adam(params, grads, 1e-3, 20.0),
                             rtol=1e-5, atol=1e-7)


def test_make_optimizer_builds_it_with_the_batch_as_its_scale():
  config = make_config(optim__optimizer="adam_iwae", optim__learning_rate=1e-3)
  tx = state_lib.make_optimizer(config.optim, 100, batch_size=20)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  g = {"w": jnp.full(3, 0.01)}
  for _ in range(2):
    updates, state = tx.update(g, state, params)
  # Step 2 moves by lr * sqrt(1 - b2^2) / (1 - b1^2) * m1 / (sqrt(v1) + 1e-4), m1 and v1
  # from the first gradient times 20.
  m1, v1 = 0.01 * 0.2, 0.999 + 0.001 * 0.2**2
  expected = -1e-3 * np.sqrt(1 - 0.999**2) / (1 - 0.99**2) * m1 / (np.sqrt(v1) + 1e-4)
  np.testing.assert_allclose(np.asarray(jax.tree.leaves(updates)[0]), expected, rtol=1e-5)
