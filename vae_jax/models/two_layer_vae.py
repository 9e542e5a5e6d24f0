"""A VAE with two stochastic layers (Burda et al. 2015, Sec. 5 and appendix A).

  q(z1|x) q(z2|z1)       inference: x -> width -> width -> z1 -> top_width -> top_width -> z2
  p(z2) p(z1|z2) p(x|z1)  generation: z2 -> top_width -> top_width -> z1 -> width -> width -> x

With width 200, top_width 100, z1 of 100 and z2 of 50 and tanh, this is the
paper's 784-200-200-100-100-100-50 model. Every stochastic layer but p(z2) =
N(0, I) is a diagonal Gaussian whose mean is linear in the hidden units and
whose standard deviation is exp of a linear function; pixels are Bernoulli.

Config (``config.model``, with ``name = "two_layer_vae"``): latent_dim (z1),
top_latent_dim (z2), width, top_width, depth (hidden layers of each network),
activation, init (layers.DENSE_INITS: "glorot_uniform" is the paper's code's),
z2_mean_draws (optional; absent: RECORDED_Z2_MEAN_DRAWS); likelihood must be "bernoulli".

Terms: rate_z1 = log q(z1|x) - log p(z1|z2) (one draw: q(z2|z1) couples z2 to
z1, so the KL to p(z1|z2) has no closed form under q), rate_z2 = KL(q(z2|z1)
|| N(0, I)) (analytic given the drawn z1); kl_per_dim is the two layers' per-dim
KLs side by side. ``interface.LATENT_GROUPS`` gives E_q[z1|x] (exact) and the
mean of q(z2|z1) averaged over ``z2_mean_draws`` draws of z1 ~ q(z1|x), so
active units are counted per layer. The paper's code counts z2 at one draw of
z1 per example (yburda/iwae iwae.py get_units_variances), so the spread z1's
noise passes to z2's mean counts as activity; more draws approach
E_q[z2|x] = E_{q(z1|x)}[mean of q(z2|z1)] and count fewer units
(docs/objectives.md). The ``posterior`` (mutual information, pictures' codes)
is q(z1|x): the codes are z1.

Parameters: {'q1', 'q2'} (q) and {'p1', 'px'} (p): ``posterior_params`` tells
DReG which is which.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.core import checks
from vae_jax.core import distributions as D
from vae_jax.core import likelihoods
from vae_jax.data import datasets
from vae_jax.models import interface
from vae_jax.models import layers

# Draws of z1 averaged into the mean of q(z2|z1) for z2's active-unit count: the paper's
# code takes one; runs recorded without model.z2_mean_draws counted with 16, and a config
# without the field still does, so a run and its resumption count alike.
PAPER_Z2_MEAN_DRAWS = 1
RECORDED_Z2_MEAN_DRAWS = 16
_LAYER2_STREAM = 1      # fold_in tags: z2's noise and the E_q[z2|x] draws use their own keys
# Its configs start from configs/default.py, whose model.init came later: runs recorded
# before then read as that default (which is what the family then used, whatever the field).
ADDED_FIELDS = {"init": "lecun_normal", "z2_mean_draws": RECORDED_Z2_MEAN_DRAWS}
_MEAN_STREAM = 2


class _GaussianLayer(nn.Module):
  """Hidden tanh layers, then a Gaussian's mean and log-variance (2 x the log-std).

  The std is exp of a linear function of the last hidden layer, as in the paper's code
  (yburda/iwae iwae.py GaussianSampler.random: Linear then Exponential), not a softplus.
  """
  out_dim: int
  width: int
  depth: int
  activation: str
  dense_init: str = "lecun_normal"   # layers.DENSE_INITS ("init" is flax's Module.init)

  @nn.compact
  def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    act = layers.ACTIVATIONS[self.activation]
    for i in range(self.depth):
      h = act(layers.dense(h, self.width, f"hidden_{i}", self.dense_init))
    return (layers.dense(h, self.out_dim, "mean", self.dense_init),
            2.0 * layers.dense(h, self.out_dim, "log_std", self.dense_init))


class TwoLayer(nn.Module):
  image_shape: Sequence[int]
  latent_dim: int = 100
  top_latent_dim: int = 50
  width: int = 200
  top_width: int = 100
  depth: int = 2
  activation: str = "tanh"
  dense_init: str = "lecun_normal"   # model.init (layers.DENSE_INITS), every dense layer

  def setup(self):
    args = (self.depth, self.activation, self.dense_init)
    self.q1 = _GaussianLayer(self.latent_dim, self.width, *args)
    self.q2 = _GaussianLayer(self.top_latent_dim, self.top_width, *args)
    self.p1 = _GaussianLayer(self.latent_dim, self.top_width, *args)
    self.px = layers.Decoder(tuple(self.image_shape), "mlp", self.width, self.depth,
                             self.activation, dense_init=self.dense_init)

  def encode1(self, x: jax.Array):
    return self.q1(x.reshape(x.shape[0], -1))

  def encode2(self, z1: jax.Array):
    return self.q2(z1)

  def prior1(self, z2: jax.Array):
    return self.p1(z2)

  def logits(self, z1: jax.Array) -> jax.Array:
    return self.px(z1)

  def __call__(self, x: jax.Array, z1: jax.Array, z2: jax.Array):
    """Touches every submodule; used by ``init`` only."""
    return self.encode1(x), self.encode2(z1), self.prior1(z2), self.logits(z1)


def _fold(keys: jax.Array, tag: int) -> jax.Array:
  return jax.vmap(lambda k: jax.random.fold_in(k, tag))(keys)


def _flat_apply(fn, z: jax.Array):
  """fn on [..., d] through its 2-D form; outputs get z's leading axes back."""
  out = fn(z.reshape(-1, z.shape[-1]))
  return jax.tree.map(lambda a: a.reshape(*z.shape[:-1], *a.shape[1:]), out)


@dataclasses.dataclass(frozen=True)
class TwoLayerVAE(interface.Model):
  """The family's model (see the module docstring); hashable, so a static jit argument."""
  module: TwoLayer
  z2_mean_draws: int = PAPER_Z2_MEAN_DRAWS

  @property
  def latent_dim(self) -> int:
    return self.module.latent_dim

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.module.image_shape)

  def _apply(self, params, *args, method):
    return self.module.apply({"params": params}, *args, method=method)

  def init(self, rng: jax.Array) -> interface.Params:
    x = jnp.zeros((1, *self.image_shape), jnp.float32)
    z1 = jnp.zeros((1, self.module.latent_dim), jnp.float32)
    z2 = jnp.zeros((1, self.module.top_latent_dim), jnp.float32)
    return self.module.init(rng, x, z1, z2)["params"]

  def posterior(self, params, batch: interface.Batch) -> D.DiagonalGaussian:
    """q(z1|x) of each example."""
    return D.DiagonalGaussian(*self._apply(params, batch["image"], method=TwoLayer.encode1))

  def _q2(self, params, z1: jax.Array) -> D.DiagonalGaussian:
    return D.DiagonalGaussian(*_flat_apply(
        lambda z: self._apply(params, z, method=TwoLayer.encode2), z1))

  def _p1(self, params, z2: jax.Array) -> D.DiagonalGaussian:
    return D.DiagonalGaussian(*_flat_apply(
        lambda z: self._apply(params, z, method=TwoLayer.prior1), z2))

  def _likelihood(self, params, z1: jax.Array) -> likelihoods.Bernoulli:
    return likelihoods.Bernoulli(_flat_apply(
        lambda z: self._apply(params, z, method=TwoLayer.logits), z1))

  def _draws(self, params, batch, keys, sample_ids, stop_posterior: bool = False):
    """Draws (z1, z2) [B, c, d] of q and the per-dim log-densities of every layer."""
    q1 = self.posterior(params, batch)
    z1 = q1.sample_indexed(keys, sample_ids)
    q_params = jax.lax.stop_gradient(params) if stop_posterior else params
    q2 = self._q2(q_params, z1)
    q2_draw = self._q2(params, z1)  # the draw keeps its path to q's parameters
    zeros = jnp.zeros(z1.shape[:1] + (self.module.top_latent_dim,), z1.dtype)
    eps = D.DiagonalGaussian(zeros, zeros).sample_indexed(_fold(keys, _LAYER2_STREAM), sample_ids)
    z2 = q2_draw.mean + jnp.exp(0.5 * q2_draw.logvar) * eps
    scored_q1 = jax.lax.stop_gradient(q1) if stop_posterior else q1
    p1 = self._p1(params, z2)
    x = batch["image"]
    log_px = self._likelihood(params, z1).log_prob(x.reshape(x.shape[:1] + (1,) + x.shape[1:]))
    return {"z1": z1, "q2": q2, "log_px": log_px,
            "log_q1": D.gaussian_log_prob_per_dim(z1, scored_q1.mean[:, None],
                                                  scored_q1.logvar[:, None]),
            "log_p1": D.gaussian_log_prob_per_dim(z1, p1.mean, p1.logvar),
            "log_q2": D.gaussian_log_prob_per_dim(z2, q2.mean, q2.logvar),
            "log_p2": D.standard_normal_log_prob_per_dim(z2), "q1": q1}

  def _log_weights(self, params, batch, keys, stop_posterior: bool) -> interface.LogWeights:
    def log_weights(sample_ids: jax.Array) -> jax.Array:
      d = self._draws(params, batch, keys, sample_ids, stop_posterior)
      return (d["log_px"] + jnp.sum(d["log_p1"] - d["log_q1"], -1)
              + jnp.sum(d["log_p2"] - d["log_q2"], -1))
    return log_weights

  def log_weights(self, params, batch: interface.Batch,
                  keys: jax.Array) -> interface.LogWeights:
    return self._log_weights(params, batch, keys, stop_posterior=False)

  def log_weights_stopped_posterior(self, params, batch: interface.Batch,
                                    keys: jax.Array) -> interface.LogWeights:
    """The DReG capability: log q(z1|x) and log q(z2|z1) with q's parameters stopped."""
    return self._log_weights(params, batch, keys, stop_posterior=True)

  def posterior_params(self, params) -> interface.Params:
    return {k: jax.tree.map(lambda _, q=k.startswith("q"): q, v) for k, v in params.items()}

  def terms(self, params, batch: interface.Batch, keys: jax.Array) -> interface.Terms:
    d = jax.tree.map(lambda a: a[:, 0] if a.ndim > 1 else a,
                     self._draws(params, batch, keys, jnp.arange(1)))
    q1 = self.posterior(params, batch)
    kl1 = d["log_q1"] - d["log_p1"]
    kl2 = d["q2"].kl_per_dim()
    rate_z1, rate_z2 = jnp.sum(kl1, -1), jnp.sum(kl2, -1)
    # The mean of q(z2|z1) over z2_mean_draws draws of z1: a diagnostic, no gradient.
    z1s = q1.sample_indexed(_fold(keys, _MEAN_STREAM), jnp.arange(self.z2_mean_draws))
    z2_mean = jax.lax.stop_gradient(jnp.mean(self._q2(params, z1s).mean, axis=1))
    return {"elbo": d["log_px"] - rate_z1 - rate_z2, "rate": rate_z1 + rate_z2,
            "distortion": -d["log_px"], "rate_z1": rate_z1, "rate_z2": rate_z2,
            interface.KL_PER_DIM: jnp.concatenate([kl1, kl2], -1),
            interface.POSTERIOR: q1,
            interface.LATENT_GROUPS: {"z1": q1.mean, "z2": z2_mean}}

  def encode(self, params, batch: interface.Batch) -> jax.Array:
    return self.posterior(params, batch).mean

  def decode(self, params, codes: jax.Array, rng: Optional[jax.Array] = None,
             condition: Optional[interface.Batch] = None) -> jax.Array:
    del condition  # unconditional
    return self._likelihood(params, codes).mean(rng)

  def sample_observation(self, params, codes: jax.Array, rng: jax.Array,
                         condition: Optional[interface.Batch] = None) -> jax.Array:
    del condition
    return self._likelihood(params, codes).sample(rng)

  def sample_prior(self, rng: jax.Array, num: int,
                   condition: Optional[interface.Batch] = None) -> jax.Array:
    """Not available: the codes are z1, whose prior p(z1|z2) needs the parameters (the
    interface's sample_prior takes none); ``sample`` draws through both layers."""
    raise NotImplementedError("two_layer_vae: codes z1 ~ p(z1|z2) need the parameters; "
                              "use Model.sample(params, rng, num)")

  def sample(self, params, rng: jax.Array, num: int,
             condition: Optional[interface.Batch] = None) -> jax.Array:
    del condition
    k2, k1 = jax.random.split(rng)
    z2 = jax.random.normal(k2, (num, self.module.top_latent_dim))
    p1 = self._p1(params, z2)
    z1 = p1.mean + jnp.exp(0.5 * p1.logvar) * jax.random.normal(k1, p1.mean.shape)
    return self.decode(params, z1)


def observes(config: ml_collections.ConfigDict) -> str:
  del config
  return "binary"


def validate(config: ml_collections.ConfigDict, data: datasets.DataInfo) -> None:
  del data  # any image size: the networks are MLPs
  for field in ("model.latent_dim", "model.top_latent_dim", "model.width", "model.top_width"):
    checks.number(config, field, minimum=1, integer=True)
  checks.number(config, "model.depth", minimum=0, integer=True)
  checks.choice(config, "model.activation", layers.ACTIVATIONS)
  checks.choice(config, "model.init", layers.DENSE_INITS)
  if "z2_mean_draws" in config.model:
    checks.number(config, "model.z2_mean_draws", minimum=1, integer=True)
  if checks.get(config, "model.likelihood") != "bernoulli":
    checks.fail("model.likelihood", config.model.likelihood,
                "this family's p(x|z1) is Bernoulli; use 'bernoulli'")


def build(config: ml_collections.ConfigDict, data: datasets.DataInfo) -> TwoLayerVAE:
  m = config.model
  return TwoLayerVAE(TwoLayer(image_shape=tuple(data.image_shape), latent_dim=m.latent_dim,
                              top_latent_dim=m.top_latent_dim, width=m.width,
                              top_width=m.top_width, depth=m.depth, activation=m.activation,
                              dense_init=m.init),
                     z2_mean_draws=m.get("z2_mean_draws", RECORDED_Z2_MEAN_DRAWS))
