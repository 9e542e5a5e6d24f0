"""The autoregressive decoder: causal, normalized, sampled as it scores; IWAE; free bits."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import make_config
from vae_jax import validation
from vae_jax.core import distributions as D
from vae_jax.core import likelihoods
from vae_jax.models import gaussian_vae
from vae_jax.objectives import iwae
from vae_jax.training import loop as train


def _model(shape=(8, 8, 1), latent_dim=3, width=16):
  """A small decoder with every weight perturbed off its init (the direct part starts at 0)."""
  model = gaussian_vae.GaussianVAE(gaussian_vae.VAE(
      latent_dim=latent_dim, image_shape=shape, decoder="autoregressive", width=width, depth=1))
  params = model.init(jax.random.PRNGKey(0))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  noisy = [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
  return model, jax.tree.unflatten(tree, noisy)


def _binary(key, shape):
  return jax.random.bernoulli(key, 0.4, shape).astype(jnp.float32)


def test_logit_i_depends_on_earlier_pixels_only():
  model, params = _model()
  x = _binary(jax.random.PRNGKey(2), (1, 8, 8, 1))
  z = jax.random.normal(jax.random.PRNGKey(3), (1, 3))
  logits = lambda image: model.likelihood(params, z).score(image).logits.reshape(-1)
  jacobian = np.asarray(jax.jit(jax.jacobian(logits))(x)).reshape(64, 64)  # [i, j] = d logit_i / d x_j
  assert np.all(np.triu(jacobian) == 0)                            # j >= i: exactly nothing
  assert np.all(np.tril(jacobian, -1)[np.tril_indices(64, -1)] != 0)  # j < i: all reach it


def test_p_x_given_z_sums_to_one_over_all_images():
  model, params = _model(shape=(3, 3, 1))
  every = jnp.asarray(list(itertools.product((0.0, 1.0), repeat=9))).reshape(512, 3, 3, 1)
  for seed in range(3):
    z = jnp.repeat(jax.random.normal(jax.random.PRNGKey(seed), (1, 3)), 512, axis=0)
    log_p = model.log_likelihood(params, {"image": every})(z)
    assert float(jax.nn.logsumexp(log_p)) == pytest.approx(0.0, abs=1e-5)


def test_ancestral_sampling_matches_teacher_forcing():
  model, params = _model()
  z = jax.random.normal(jax.random.PRNGKey(4), (5, 3))
  p = model.likelihood(params, z)
  assert isinstance(p, likelihoods.Autoregressive)
  x, probs = p.draw(jax.random.PRNGKey(5))
  assert set(np.unique(np.asarray(x))) <= {0.0, 1.0}
  scored = p.score(x).mean()
  np.testing.assert_allclose(probs, scored, atol=1e-5)
  np.testing.assert_array_equal(model.sample_observation(params, z, jax.random.PRNGKey(5)), x)
  # The pictures show those probabilities, reproducibly, without an explicit key.
  np.testing.assert_allclose(model.decode(params, z, jax.random.PRNGKey(5)), probs)
  np.testing.assert_array_equal(model.decode(params, z), model.decode(params, z))


def test_misuse_is_refused_with_the_field():
  with pytest.raises(validation.ConfigError, match="model.likelihood='gaussian_fixed'"):
    validation.validate(make_config(model__decoder="autoregressive",
                                    model__likelihood="gaussian_fixed"))
  with pytest.raises(validation.ConfigError, match="data.name='cifar10'.*one-channel"):
    validation.validate(make_config(model__decoder="autoregressive", data__name="cifar10"))


def test_iwae_broadcasts_x_exactly_as_copies_would():
  model, params = _model()
  x = _binary(jax.random.PRNGKey(6), (4, 8, 8, 1))
  keys = jax.random.split(jax.random.PRNGKey(7), 4)
  batch = {"image": x}
  fast = iwae.log_px(model.log_weights(params, batch, keys), 30, 7)

  def copied(z):  # z [B, c, d] flattened with x repeated to match, the generic way
    b, c, d = z.shape
    repeated = jnp.repeat(x, c, axis=0)
    p = model.likelihood(params, z.reshape(b * c, d))
    return p.log_prob(repeated).reshape(b, c)

  q = model.posterior(params, batch)
  slow = iwae.log_px(iwae.gaussian_log_weights(D.DiagonalGaussian(q.mean, q.logvar), copied,
                                               keys), 30, 30)
  np.testing.assert_allclose(fast, slow, rtol=1e-5)
  terms = model.terms(params, batch, keys)
  assert np.all(np.isfinite(terms["elbo"]))
  assert float(jnp.mean(fast)) >= float(jnp.mean(terms["elbo"]))  # IWAE_30 >= ELBO, on average


def _train(tmp_path, name, free_bits):
  config = make_config(model__decoder="autoregressive", objective__free_bits=free_bits,
                       model__latent_dim=4, num_train_steps=300, eval_every=300,
                       checkpoint_every=300, log_every=100, steps_per_dispatch=100,
                       images__num_reconstructions=0, images__num_samples=4,
                       eval__num_importance_samples=10)
  return train.train_and_evaluate(config, str(tmp_path / name))


@pytest.mark.slow
def test_free_bits_keeps_every_dimension_at_its_floor(tmp_path):
  """Below lambda a dimension's batch KL gets no gradient from the rate, only from the
  reconstruction, which raises it; above lambda the rate pulls it back. So every
  dimension ends at about lambda, a little above (the test KL measured 0.52-0.55 for
  lambda = 0.5); without free bits the same run leaves dimensions below lambda."""
  free_bits = 0.5
  results = _train(tmp_path, "free_bits", free_bits)
  kl = np.asarray(results["test"]["kl_per_dim"])
  assert np.all(kl >= 0.95 * free_bits) and np.all(kl <= 1.5 * free_bits), kl
  assert np.all(np.isfinite([results["test"]["nll"], results["test"]["neg_elbo"]]))
  assert (tmp_path / "free_bits" / "samples.png").exists()  # pictures: ancestral samples
  plain = np.asarray(_train(tmp_path, "plain", 0.0)["test"]["kl_per_dim"])
  assert np.any(plain < 0.5 * free_bits), plain  # measured 0.08-0.24: the floor is the remedy's
