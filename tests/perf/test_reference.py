"""The benchmark's hand-written loop trains the project's model, and says when it cannot."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tests.conftest import make_config
from vae_jax import models
from vae_jax.core import distributions as D
from vae_jax.data import datasets
from vae_jax.perf import reference


def _as_reference(params):
  """The project's MLP VAE parameters (depth 1) in the reference's layout."""
  dense = lambda p: (p["kernel"], p["bias"])
  enc, dec = params["enc"], params["dec"]
  return {"enc": [dense(enc["hidden_0"])], "mean": dense(enc["mean"]),
          "logvar": dense(enc["logvar"]), "dec": [dense(dec["hidden_0"])],
          "out": dense(dec["out"])}


def test_its_loss_is_the_projects_negative_elbo_with_the_same_noise():
  config = make_config(model__width=32)
  info = datasets.info(config.data.name)
  model = models.build(config, info)
  params = model.init(jax.random.PRNGKey(0))
  images = jax.random.bernoulli(jax.random.PRNGKey(1), 0.3, (16, *info.image_shape))
  batch = {"image": images.astype(jnp.float32)}
  eps = jax.random.normal(jax.random.PRNGKey(2), (16, config.model.latent_dim))
  q = model.posterior(params, batch)
  z = q.mean + jnp.exp(0.5 * q.logvar) * eps
  theirs = jnp.mean(jnp.sum(q.kl_per_dim(), -1) - model.log_likelihood(params, batch)(z))
  ours = reference.loss(_as_reference(params), batch["image"].reshape(16, -1), eps)
  np.testing.assert_allclose(ours, theirs, rtol=1e-5)
  assert isinstance(q, D.DiagonalGaussian)


def test_a_chunk_trains_on_its_batches():
  config = make_config(model__width=32)
  tx = optax.adam(config.optim.learning_rate)
  images = np.random.default_rng(0).integers(0, 2, (256, 8, 8, 1), dtype=np.uint8)
  carry, flat, perm = reference.start(config, images, tx)
  assert flat.shape == (256, 64) and sorted(np.asarray(perm)) == list(range(256))
  carry, losses = jax.jit(reference.make_chunk(tx, 32, config.model.latent_dim, 40))(
      carry, flat, perm)
  assert int(carry[2]) == 40 and losses.shape == (40,)
  assert float(losses[-8:].mean()) < float(losses[:8].mean())


def test_other_models_have_no_reference():
  assert reference.unsupported(make_config()) is None
  why = reference.unsupported(make_config(model__encoder="conv", optim__optimizer="sgd"))
  assert "model.encoder='conv'" in why and "optim.optimizer='sgd'" in why
