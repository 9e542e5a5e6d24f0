"""Train state, optimizer and the per-device train step, scanned over many steps.

``make_train_chunk`` returns a pure per-device function: it runs ``num_steps``
optimizer steps in one ``lax.scan`` (Python does not run per step), reading its
batches from the uint8 dataset already on the device, and averages gradients
over the devices with ``pmean`` on ``parallel.AXIS_NAME``. ``parallel``
maps it over devices; nothing here knows how many there are.

Non-finite numbers: every step's loss and gradient norm come back to the host,
which stops the run (``first_nonfinite``) before anything is saved; or, with
``optim.on_nonfinite="skip"``, ``optax.apply_if_finite`` drops such updates and
counts them in the optimizer state (so in checkpoints too).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import input_pipeline as pipeline
from vae_jax import models
from vae_jax import objectives
from vae_jax import parallel


@flax.struct.dataclass
class TrainState:
  step: jax.Array       # int32 scalar: optimizer steps taken
  params: Any
  opt_state: Any
  rng: jax.Array        # the run's base key; every draw folds in (stream, step, example)


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """Static facts the compiled train step is specialised on."""
  num_examples: int
  global_batch: int
  per_device_batch: int
  preprocessing: str
  beta: float
  kl_warmup_steps: int
  free_bits: float
  kl_estimator: str
  skip_nonfinite: bool = False
  nan_at_step: int = -1   # fault injection for tests: update N's loss becomes NaN

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.global_batch


def learning_rate_schedule(optim: ml_collections.ConfigDict,
                           total_steps: int) -> optax.Schedule:
  lr, warmup = optim.learning_rate, optim.warmup_steps
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
    opt = optax.adam(schedule)
  elif optim.optimizer == "adamw":
    opt = optax.adamw(schedule, weight_decay=optim.weight_decay)
  else:
    opt = optax.sgd(schedule)
  if optim.grad_clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), opt)
  if optim.on_nonfinite == "skip":
    opt = optax.apply_if_finite(opt, max_consecutive_errors=optim.max_consecutive_nonfinite)
  return opt


def create_train_state(seed: int, model: models.VAE,
                       tx: optax.GradientTransformation) -> TrainState:
  init_rng, run_rng = jax.random.split(jax.random.PRNGKey(seed))
  params = models.init_params(model, init_rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params), rng=run_rng)


def make_train_chunk(model: models.VAE, tx: optax.GradientTransformation,
                     spec: TrainSpec):
  """Per-device fn(state, images, num_steps) -> (state, metrics stacked over steps).

  The permutations of every epoch the chunk touches are drawn once at its start,
  so a chunk may cross epoch boundaries at no per-step cost. ``num_steps`` is
  static: one compilation per distinct chunk length.
  """
  axis = parallel.AXIS_NAME

  def train_step(state: TrainState, images: jax.Array, perms: jax.Array,
                 first_epoch: jax.Array):
    epoch, step_in_epoch = jnp.divmod(state.step, spec.steps_per_epoch)
    indices, positions = pipeline.local_batch_indices(
        perms, epoch - first_epoch, step_in_epoch, spec.global_batch, spec.per_device_batch,
        jax.lax.axis_index(axis))
    pixel_keys = pipeline.example_keys(
        pipeline.stream_key(state.rng, pipeline.STREAM_PIXELS, state.step), positions)
    latent_keys = pipeline.example_keys(
        pipeline.stream_key(state.rng, pipeline.STREAM_LATENT, state.step), positions)
    x = pipeline.preprocess(jnp.take(images, indices, axis=0), pixel_keys,
                            spec.preprocessing)
    beta = objectives.beta_at(state.step, spec.beta, spec.kl_warmup_steps)

    def loss_fn(params):
      terms = objectives.vae_terms(model, params, x, latent_keys, spec.kl_estimator)
      loss, metrics = objectives.training_loss(terms, beta, spec.free_bits, axis)
      if spec.nan_at_step > 0:
        loss = loss * jnp.where(state.step + 1 == spec.nan_at_step, jnp.nan, 1.0)
        metrics["loss"] = loss
      return loss, metrics

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, axis)
    metrics = jax.lax.pmean(metrics, axis)
    metrics["grad_norm"] = optax.tree.norm(grads)
    if spec.skip_nonfinite:  # a non-finite loss voids the update even if grads are finite
      grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(metrics["loss"]), g, jnp.nan),
                           grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if spec.skip_nonfinite:
      metrics["skipped_updates"] = opt_state.total_notfinite
      metrics["consecutive_nonfinite"] = opt_state.notfinite_count
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  def train_chunk(state: TrainState, images: jax.Array, num_steps: int):
    first_epoch = state.step // spec.steps_per_epoch
    num_epochs = -(-num_steps // spec.steps_per_epoch) + 1  # epochs a chunk can touch
    perms = jax.vmap(lambda e: pipeline.epoch_permutation(
        state.rng, e, spec.num_examples))(first_epoch + jnp.arange(num_epochs))
    return jax.lax.scan(lambda s, _: train_step(s, images, perms, first_epoch), state,
                        None, length=num_steps)

  return train_chunk


CHECKED = ("loss", "grad_norm")


class NonFiniteError(FloatingPointError):
  """A NaN or Inf in the loss or gradient norm; nothing after it was saved."""


def first_nonfinite(chunks: list[tuple[int, dict]],
                    max_consecutive: Optional[int] = None) -> Optional[str]:
  """Describes the first step whose loss or gradient norm is not finite, or None.

  ``chunks``: (first step, host metrics [steps]) per dispatch. With
  ``max_consecutive`` (skip mode) only a run of that many skipped updates counts.
  """
  for start, metrics in chunks:
    if max_consecutive is not None:
      consecutive = metrics["consecutive_nonfinite"]
      if (consecutive >= max_consecutive).any():
        i = int(np.argmax(consecutive >= max_consecutive))
        return (f"{max_consecutive} consecutive non-finite updates, the last at step "
                f"{start + i + 1} (optim.max_consecutive_nonfinite)")
      continue
    values = {k: metrics[k] for k in CHECKED}
    bad = np.logical_or.reduce([~np.isfinite(v) for v in values.values()])
    if bad.any():
      i = int(np.argmax(bad))
      named = " and ".join(f"{k} ({v[i]})" for k, v in values.items() if not np.isfinite(v[i]))
      return f"non-finite {named} at step {start + i + 1}"
  return None
