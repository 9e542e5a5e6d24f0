"""The train state and the optimizer a config asks for (optax).

``TrainState`` is what a checkpoint holds: the step, the parameters, the
optimizer state and the run's base key, from which every random draw of the
run is derived by folding in (stream, step, example), so a resumed run draws
exactly what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

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


def iwae_3i_schedule(lr: float, total_steps: int, stages: int = 8) -> optax.Schedule:
  """Burda et al. (2015)'s schedule, stretched onto ``total_steps``: stage i = 0..7 takes
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


def learning_rate_schedule(optim: ml_collections.ConfigDict,
                           total_steps: int) -> optax.Schedule:
  lr, warmup = optim.learning_rate, optim.warmup_steps
  if optim.schedule == "iwae_3i":
    return iwae_3i_schedule(lr, total_steps)
  if optim.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, max(total_steps, warmup + 1))
  if warmup:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  return optax.constant_schedule(lr)


def make_optimizer(optim: ml_collections.ConfigDict,
                   total_steps: int) -> optax.GradientTransformation:
  schedule = learning_rate_schedule(optim, total_steps)
  if optim.optimizer == "adam":
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


def create_train_state(seed: int, model: interface.Model,
                       tx: optax.GradientTransformation) -> TrainState:
  """The state at step 0: the model's parameters from the seed's first key."""
  init_rng, run_rng = jax.random.split(jax.random.PRNGKey(seed))
  params = model.init(init_rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), rng=run_rng)
