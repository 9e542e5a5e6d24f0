"""The objective a train step maximizes, from any family's log-weights (Burda et al. 2015).

  "elbo"           the ELBO from ``Model.terms`` (analytic or MC KL), with beta,
                   KL warm-up and free bits (``elbo.training_loss``)
  "k_sample_elbo"  (1/k) sum_i log w_i: k draws of the ELBO averaged (the paper's
                   "VAE" at k); the same bound as k = 1, with a less noisy gradient
  "iwae"           log (1/k) sum_i w_i: the IWAE bound, tighter as k grows

with log w_i = log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x) reparameterized
(``Model.log_weights``), so both work for every family. The gradient is
``config.objective.gradient_estimator``:

  "reparam"  the gradient of the bound's estimate itself
  "dreg"     for "iwae": the doubly-reparameterized estimator of Tucker et al.
             (2018), whose encoder gradient keeps its signal-to-noise ratio as k
             grows (the plain one's falls as 1/sqrt(k): Rainforth et al. 2018).
             The decoder gets sum_i w~_i grad log w_i (as "reparam"), the
             encoder sum_i w~_i^2 (d log w_i / d z_i)(d z_i / d phi), with
             w~ = softmax(log w) and log q scored with q's parameters stopped.
             Needs the model's optional DReG capability (interface.DREG_METHODS).

beta != 1, KL warm-up and free bits act on an analytic rate the bounds here
do not have; ``validate`` refuses them with these objectives.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.core import checks
from vae_jax.objectives import iwae
from vae_jax.objectives import regularizers

OBJECTIVES = ("elbo", "k_sample_elbo", "iwae")
ESTIMATORS = ("reparam", "dreg")
# The optional model methods DReG needs (documented in models/interface.py; named here
# too because objectives rank below models).
DREG_METHODS = ("log_weights_stopped_posterior", "posterior_params")
# Fields added to configs since runs were first recorded, with the values that reproduce them.
ADDED_FIELDS = {"objective.name": "elbo", "objective.num_samples": 1,
                "objective.gradient_estimator": "reparam", "optim.adam_eps": 1e-8,
                **{f"objective.{f}": v for f, v in regularizers.FIELDS.items()}}


def settings(config: ml_collections.ConfigDict) -> tuple[str, int, str]:
  """(name, k, estimator) of a config; a run recorded before the fields existed is "elbo"."""
  objective = config.objective
  return (objective.get("name", "elbo"), objective.get("num_samples", 1),
          objective.get("gradient_estimator", "reparam"))


def validate(config: ml_collections.ConfigDict, model: Any) -> None:
  """Refuses, in one line naming the field, objectives that make no sense together."""
  name = checks.choice(config, "objective.name", OBJECTIVES)
  k = checks.number(config, "objective.num_samples", minimum=1, integer=True)
  estimator = checks.choice(config, "objective.gradient_estimator", ESTIMATORS)
  if "regularizer" in config.objective:
    _validate_regularizer(config, model, name)
  if name == "elbo":
    if k != 1:
      checks.fail("objective.num_samples", k, "objective.name='elbo' takes one sample; for k "
                  "samples use objective.name='k_sample_elbo' (mean of k ELBOs) or 'iwae'")
    if estimator != "reparam":
      checks.fail("objective.gradient_estimator", estimator,
                  "'dreg' is an estimator of the IWAE bound's gradient; use "
                  "objective.name='iwae', or 'reparam'")
    return
  for field, neutral in (("objective.beta", 1.0), ("objective.warmup_steps", 0),
                         ("objective.free_bits", 0.0)):
    value = checks.get(config, field)
    if value != neutral:
      checks.fail(field, value, f"objective.name={name!r} is a bound on log p(x) with no "
                  f"separate rate to weight, warm up or floor; use {neutral} (or "
                  "objective.name='elbo')")
  if not getattr(model, "reparameterized_log_weights", True):
    checks.fail("objective.name", name, f"{type(model).__name__} (config.model.name) draws "
                "discrete codes, so its log-weights carry no reparameterized gradient to train "
                "a k-sample bound on; use objective.name='elbo'")
  if estimator == "dreg":
    if name != "iwae":
      checks.fail("objective.gradient_estimator", estimator,
                  f"'dreg' is an estimator of the IWAE bound's gradient, not of {name!r}'s; "
                  "use 'reparam' or objective.name='iwae'")
    missing = [m for m in DREG_METHODS if not callable(getattr(model, m, None))]
    if missing:
      checks.fail("objective.gradient_estimator", estimator,
                  f"DReG scores log q with q's parameters stopped, which "
                  f"{type(model).__name__} (config.model.name) cannot: it lacks "
                  f"{', '.join(missing)}; use 'reparam'")


def _validate_regularizer(config: ml_collections.ConfigDict, model: Any, name: str) -> None:
  """A disentanglement regularizer: its fields in range, and what it cannot go with."""
  regularizer = checks.choice(config, "objective.regularizer", regularizers.REGULARIZERS)
  checks.number(config, "objective.gamma", minimum=0)
  checks.number(config, "objective.c_max", minimum=0)
  checks.number(config, "objective.iteration_threshold", minimum=1)
  checks.number(config, "objective.lambda_od", minimum=0)
  checks.number(config, "objective.lambda_d_factor", minimum=0)
  if regularizer == "beta_vae":
    return
  if name != "elbo":
    checks.fail("objective.regularizer", regularizer, f"a disentanglement regularizer "
                f"replaces the ELBO's KL term; objective.name={name!r} has none: use "
                "objective.name='elbo' or objective.regularizer='beta_vae'")
  for field, neutral in (("objective.warmup_steps", 0), ("objective.free_bits", 0.0)):
    value = checks.get(config, field)
    if value != neutral:
      checks.fail(field, value, f"KL warm-up and free bits act on beta * KL; "
                  f"objective.regularizer={regularizer!r} has its own schedule of the KL "
                  f"term: use {neutral}")
  if not callable(getattr(model, "posterior", None)):
    checks.fail("objective.regularizer", regularizer,
                f"{type(model).__name__} (config.model.name) has no diagonal-Gaussian "
                "posterior q(z|x) for the regularizer to act on; use 'beta_vae'")


def per_example(name: str, log_w: jax.Array) -> jax.Array:
  """The objective's value per example [B] from log-weights [B, k]."""
  if name == "iwae":
    return iwae.bound(log_w)
  return jnp.mean(log_w, axis=-1)


def _only(params: Any, mask: Any, keep: bool) -> Any:
  """``params`` with gradients flowing only into leaves whose mask equals ``keep``."""
  return jax.tree.map(lambda p, m: p if m == keep else jax.lax.stop_gradient(p), params, mask)


def loss(model: Any, params: Any, batch: dict, keys: jax.Array, name: str, num_samples: int,
         estimator: str) -> tuple[jax.Array, dict]:
  """(surrogate loss whose gradient is the estimator's, metrics) on the local batch.

  Metrics: ``objective`` (the bound's batch mean, nats), ``loss`` (its negative),
  ``elbo`` (the mean log-weight: the ELBO's k-draw estimate).
  """
  ids = jnp.arange(num_samples)
  if estimator == "dreg":
    log_weights = lambda p: model.log_weights_stopped_posterior(p, batch, keys)(ids)
    mask = model.posterior_params(params)
    log_w_q = log_weights(_only(params, mask, True))    # only q's, and only through z
    log_w_p = log_weights(_only(params, mask, False))   # only p's (same values)
    w = jax.nn.softmax(jax.lax.stop_gradient(log_w_p), axis=-1)
    surrogate = jnp.sum(jnp.square(w) * log_w_q + w * log_w_p, axis=-1)
    log_w = log_w_p
  else:
    log_w = model.log_weights(params, batch, keys)(ids)
    surrogate = None
  value = per_example(name, log_w)
  objective = jnp.mean(value)
  out = -objective if surrogate is None else -jnp.mean(surrogate)
  metrics = {"loss": -objective, "objective": objective,
             "elbo": jnp.mean(jax.lax.stop_gradient(log_w))}
  return out, metrics
