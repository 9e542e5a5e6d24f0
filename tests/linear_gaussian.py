"""Probabilistic PCA: a latent-variable model whose log p(x) and posterior are known.

z ~ N(0, I_k), x | z ~ N(W z + b, s2 I_d). W has orthogonal columns, so the exact
posterior is a *diagonal* Gaussian that a VAE's q(z|x) can express.
"""

import jax.numpy as jnp
import numpy as np

from vae_jax.core import distributions as D

K, DIM, S2 = 2, 5, 0.3
_U, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(DIM, K)))
W = _U * np.array([2.0, 0.7])
B = np.linspace(-1.0, 1.0, DIM)
X = np.array([[0.5, -1.0, 2.0, 0.1, -0.3], [1.5, 0.2, -0.4, -2.0, 0.8]])


def log_px(x):
  """Closed form: x ~ N(b, W W^T + s2 I)."""
  cov = W @ W.T + S2 * np.eye(DIM)
  diff = x - B
  _, logdet = np.linalg.slogdet(cov)
  return -0.5 * (DIM * np.log(2 * np.pi) + logdet + diff @ np.linalg.solve(cov, diff))


def exact_posterior(x):
  m = W.T @ W + S2 * np.eye(K)  # diagonal here
  mean = np.linalg.solve(m, W.T @ (x - B).T).T
  var = S2 / np.diag(m)
  return mean, np.broadcast_to(np.log(var), mean.shape)


def log_likelihood_fn(x):
  """z [..., K] -> log p(x|z) [...]; x broadcasts against z's leading axes."""
  def fn(z):
    per_dim = D.gaussian_log_prob_per_dim(x, z @ W.T + B, jnp.log(S2))
    return jnp.sum(per_dim, axis=-1)
  return fn
