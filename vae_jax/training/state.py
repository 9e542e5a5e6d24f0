"""The train state and the optimizer a config asks for (optax).

``TrainState`` is what a checkpoint holds: the step, the parameters, the
optimizer state and the run's base key, from which every random draw of the
run is derived by folding in (stream, step, example), so a resumed run draws
exactly what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vae_jax.models import interface


@flax.struct.dataclass
class TrainState:
  step: jax.Array       # int32 scalar: optimizer steps taken
  params: Any
  opt_state: Any
  rng: jax.Array        # the run's base key; every draw folds in (stream, step, example)
  # An auxiliary network's {"params", "opt_state"} (objectives/auxiliary.py: FactorVAE's
  # discriminator), trained in the same step by its own loss; {} for every other objective.
  aux: Any = flax.struct.field(default_factory=dict)


def iwae_3i_stretched_schedule(lr: float, total_steps: int, stages: int = 8) -> optax.Schedule:
  """"iwae_3i_stretched": the 3^i schedule stretched onto ``total_steps``: stage i = 0..7 takes
  3^i / sum_j 3^j of the steps at lr * 10^(-i/7) (their 3^i epochs of 3,280 at lr 0.001).

  Given as fractions of the run, a shorter run keeps the schedule's shape.
  """
  weights = [3**i for i in range(stages)]
  bounds, done = [], 0
  for w in weights[:-1]:
    done += w
    bounds.append(max(1, round(total_steps * done / sum(weights))))
  return optax.join_schedules(
      [optax.constant_schedule(lr * 10 ** (-i / (stages - 1))) for i in range(stages)], bounds)


# The IWAE paper's schedule (Burda, Grosse & Salakhutdinov 2016, section 5): pass i = 0..7
# lasts 3^i epochs at learning rate lr0 * 10^(-i/7): 3,280 epochs in all (the rate stays
# at the last pass's value after that).
IWAE_3I_PASSES = 8


def iwae_3i_boundaries(steps_per_epoch: int) -> list[int]:
  """The steps at which the "iwae_3i" schedule moves to its next pass (i = 1..7)."""
  return [steps_per_epoch * sum(3 ** j for j in range(i)) for i in range(1, IWAE_3I_PASSES)]


def learning_rate_schedule(optim: ml_collections.ConfigDict, total_steps: int,
                           steps_per_epoch: int = 1,
                           learning_rate: Optional[jax.Array] = None) -> optax.Schedule:
  """The learning rate at each step; the decays papers quote are in epochs.

  "step": x ``decay_factor`` at each epoch of ``decay_epochs`` (pythae's VAE:
  x10^(-1/5) at epochs 200, 350, 500, 750, 1000). "exponential": x ``decay_rate``
  per epoch, continuously. "iwae_3i": the IWAE paper's 3^i schedule (above);
  "iwae_3i_stretched": its shape laid over a run of any length (budget protocols). A
  linear warm-up (``warmup_steps``) precedes any of them. Every schedule is linear in
  the learning rate, so ``learning_rate`` (a population member's traced value, in place
  of ``optim.learning_rate``) scales it, and 0 freezes a member.
  """
  lr = optim.learning_rate if learning_rate is None else learning_rate
  warmup = optim.warmup_steps
  if optim.schedule == "iwae_3i_stretched":
    return iwae_3i_stretched_schedule(lr, total_steps)
  if optim.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, max(total_steps, warmup + 1))
  if optim.schedule == "step":
    boundaries = [int(round(e * steps_per_epoch)) for e in optim.decay_epochs]
    main = optax.piecewise_constant_schedule(
        lr, {b: optim.decay_factor for b in boundaries})
  elif optim.schedule == "exponential":
    main = optax.exponential_decay(lr, transition_steps=steps_per_epoch,
                                   decay_rate=optim.decay_rate)
  elif optim.schedule == "iwae_3i":
    main = optax.piecewise_constant_schedule(
        lr, {b: 10.0 ** (-1.0 / 7.0) for b in iwae_3i_boundaries(steps_per_epoch)})
  else:
    main = optax.constant_schedule(lr)
  if warmup:  # join_schedules restarts the count at the boundary: epochs count from step 0
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),
                                 lambda count: main(count + warmup)], [warmup])
  return main


class IwaeAdamState(NamedTuple):
  count: jax.Array   # int32: updates so far (the paper's timestep is count + 1)
  mu: Any            # first moments, from 0
  nu: Any            # second moments, from 1


def iwae_adam(learning_rate: optax.Schedule, scale: float = 1.0, b1: float = 0.99,
              b2: float = 0.999, eps: float = 1e-4) -> optax.GradientTransformation:
  """"adam_iwae": the Adam of the IWAE paper's code (yburda/iwae ``optimizers.py`` 11-33).

  It differs from Adam as published in four ways, each kept: beta1 = 0.99; the second
  moments start at 1, not 0 (against gradients far below 1, a long implicit warm-up);
  the step at timestep t moves by lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + 1e-4)
  with the moments *before* this step's gradient (Theano's simultaneous updates: the first
  step does not move); and its gradients are those of the batch's sum, ``scale`` (the batch
  size) times the mean's this code differentiates, which v0 = 1 and eps do not ignore.
  docs/objectives.md shows what it changes in the two-layer model's collapse.
  """
  def init(params):
    return IwaeAdamState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params),
                         jax.tree.map(jnp.ones_like, params))

  def update(grads, state, params=None):
    del params
    t = (state.count + 1).astype(jnp.float32)
    alpha = learning_rate(state.count) * jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    updates = jax.tree.map(lambda m, v: -alpha * m / (jnp.sqrt(v) + eps), state.mu, state.nu)
    grads = jax.tree.map(lambda g: g * scale, grads)
    mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.nu, grads)
    return updates, IwaeAdamState(state.count + 1, mu, nu)

  return optax.GradientTransformation(init, update)


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int,
                   steps_per_epoch: int = 1,
                   learning_rate: Optional[jax.Array] = None,
                   batch_size: int = 1) -> optax.GradientTransformation:
  """The optimizer of ``optim``; ``learning_rate``: a traced value in place of the field's
  (a population's members: the state's structure does not depend on it). ``batch_size``:
  the global batch, for "adam_iwae", whose gradients are of the batch's sum."""
  schedule = learning_rate_schedule(optim, total_steps, steps_per_epoch, learning_rate)
  if optim.optimizer == "adam_iwae":
    opt = iwae_adam(schedule, scale=float(batch_size))
  elif optim.optimizer == "adam":
    opt = optax.adam(schedule, eps=optim.get("adam_eps", 1e-8))
  elif optim.optimizer == "adamw":
    opt = optax.adamw(schedule, eps=optim.get("adam_eps", 1e-8),
                      weight_decay=optim.weight_decay)
  else:
    opt = optax.sgd(schedule)
  if optim.grad_clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), opt)
  # One vector for all parameters: the per-parameter update (memory-bound, a few
  # elementwise passes) runs as a few large loops instead of a few per leaf.
  opt = optax.flatten(opt)
  if optim.on_nonfinite == "skip":
    opt = optax.apply_if_finite(opt, max_consecutive_errors=optim.max_consecutive_nonfinite)
  return opt


def create_train_state(seed: int, model: interface.Model, tx: optax.GradientTransformation,
                       auxiliary: Optional[Any] = None) -> TrainState:
  """The state at step 0: the model's parameters from the seed's first key; an auxiliary
  network's (``objectives.auxiliary``) from that key folded with 1, so the model's
  parameters are those of a run without one."""
  init_rng, run_rng = jax.random.split(jax.random.PRNGKey(seed))
  params = model.init(init_rng)
  aux = {}
  if auxiliary is not None:
    aux_params = auxiliary.init(jax.random.fold_in(init_rng, 1), model.latent_dim)
    aux = {"params": aux_params, "opt_state": auxiliary.optimizer().init(aux_params)}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), rng=run_rng, aux=aux)
