"""Per-data-point variational inference with the decoder fixed (non-amortized SVI).

An encoder predicts q(z|x) for every x in one forward pass; that is amortization,
and it costs something: the encoder's q is in general not the best Gaussian for
each x. Here each example i gets its own free q_i = N(m_i, diag exp(lv_i)),
optimised directly to maximise its ELBO under the fixed decoder (Hoffman et al.
2013's local step; Cremer et al. 2018, "Inference suboptimality in variational
autoencoders"). Started from the encoder's output this "refines" q and measures
the amortization gap ELBO(q*) - ELBO(q_encoder); started from the prior N(0, I)
it is SVI from scratch.

The per-point problems are independent, yet one Adam runs over the [B, d]
arrays: the loss is a *sum* of per-example ELBOs, so example i's gradient only
involves (m_i, lv_i), and Adam's moments and update are elementwise. One
optimizer over the batch is therefore exactly B separate Adams, vectorised.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from vae_jax.core import distributions as D
from vae_jax.models import interface
from vae_jax.objectives import elbo

LogLikelihood = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class SVIResult:
  """The optimised per-example posteriors and how the ELBO got there."""
  mean: jax.Array          # [B, d]
  logvar: jax.Array        # [B, d]
  elbo_trace: jax.Array    # [num_steps, B]: each step's S-sample ELBO estimate (before it)


def elbo_estimate(mean: jax.Array, logvar: jax.Array, log_likelihood: LogLikelihood,
                  keys: jax.Array, chunk: Optional[int] = None) -> dict[str, jax.Array]:
  """Per-example ELBO terms ([B] each), averaged over S reparameterized samples.

  keys [S, B]: draw s of example i uses keys[s, i]. The KL is analytic, so only
  log p(x|z) is estimated. Two q's given the same keys share their noise (common
  random numbers), so their difference is precise. ``chunk``: decode that many
  of the S draws at a time (``lax.map``) to bound memory; None: all at once.
  """
  q = D.DiagonalGaussian(mean, logvar)
  draw = lambda k: elbo.gaussian_elbo_terms(q, log_likelihood, k)
  terms = jax.vmap(draw)(keys) if chunk is None else jax.lax.map(draw, keys, batch_size=chunk)
  return jax.tree.map(lambda v: jnp.mean(v, axis=0), terms)


def sample_keys(keys: jax.Array, num_samples: int) -> jax.Array:
  """Per-example keys [B] -> [S, B]: S independent draws for each example."""
  return jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, num_samples))(keys), 0, 1)


@functools.partial(jax.jit, static_argnums=(0, 6, 7))
def _fit(log_likelihood_fn, data, mean: jax.Array, logvar: jax.Array, keys: jax.Array,
         learning_rate: jax.Array, num_steps: int, num_samples: int):
  log_likelihood = log_likelihood_fn(data)
  # Cosine decay to a tenth: with S-sample gradients a constant step size keeps q
  # jittering around its optimum, which would blur a gap measured to a tenth of a nat.
  tx = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.1))
  params = (mean, logvar)

  def loss(p, keys):
    elbo = elbo_estimate(*p, log_likelihood, keys)["elbo"]
    return -jnp.sum(elbo), elbo   # a sum: each example's gradient is its own ELBO's

  def step(carry, t):
    p, opt_state = carry
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
    grads, elbo = jax.grad(loss, has_aux=True)(p, sample_keys(step_keys, num_samples))
    updates, opt_state = tx.update(grads, opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), elbo

  (params, _), trace = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(num_steps))
  return params, trace


def fit(log_likelihood_fn: Callable[[Any], LogLikelihood], data: Any, init_mean: jax.Array,
        init_logvar: jax.Array, keys: jax.Array, *, num_steps: int, num_samples: int,
        learning_rate: float) -> SVIResult:
  """Maximises each example's ELBO over its own (mean, logvar), starting from the init.

  Args:
    log_likelihood_fn: data -> (z [B, d] -> log p(x|z) [B]). A static argument of
      the compiled program, so it must be hashable and stable (a module-level
      function, or a frozen dataclass); ``data`` (a pytree: images, decoder params)
      is traced, so new batches and models of the same shapes reuse the compilation.
    data: what ``log_likelihood_fn`` needs, e.g. (params, x).
    init_mean, init_logvar: [B, d] starting q's: the encoder's (refinement) or zeros
      (the prior: SVI from scratch).
    keys: [B] per-example keys of the reparameterization noise (folded with the step):
      example i's problem does not depend on which examples share its batch.
    num_steps: Adam steps (one ``lax.scan``).
    num_samples: S reparameterized samples per example per step.
    learning_rate: Adam's initial step size, cosine-decayed to a tenth.
  """
  if num_steps < 1 or num_samples < 1 or not learning_rate > 0:
    raise ValueError(f"SVI needs num_steps >= 1, num_samples >= 1 and learning_rate > 0; "
                     f"got {num_steps}, {num_samples}, {learning_rate}.")
  (mean, logvar), trace = _fit(log_likelihood_fn, data, jnp.asarray(init_mean, jnp.float32),
                               jnp.asarray(init_logvar, jnp.float32), keys,
                               jnp.float32(learning_rate), int(num_steps), int(num_samples))
  return SVIResult(mean, logvar, trace)


@dataclasses.dataclass(frozen=True)
class DecoderLikelihood:
  """(params, x) -> (z -> log p(x|z)) for a model's decoder; hashable by its model.

  For families with a decoder ``log_likelihood(params, batch)`` (a diagonal-Gaussian
  posterior family such as the Gaussian VAE).
  """
  model: interface.Model

  def __call__(self, data: tuple[dict, jax.Array]) -> LogLikelihood:
    params, x = data
    return self.model.log_likelihood(params, {"image": x})


def refine(model: interface.Model, params: dict, x: jax.Array, init_mean: jax.Array,
           init_logvar: jax.Array, keys: jax.Array, **svi_kwargs) -> SVIResult:
  """``fit`` with a model's decoder on images x [B, H, W, C] (its encoder is not used)."""
  return fit(DecoderLikelihood(model), (params, x), init_mean, init_logvar, keys,
             **svi_kwargs)
