"""Train state, optimizer and the per-device train step, scanned over many steps.

``make_train_chunk`` returns a pure per-device function: it runs ``num_steps``
optimizer steps in one ``lax.scan`` (Python does not run per step), reading its
batches from the uint8 dataset already on the device, and averages gradients
over the devices with ``pmean`` on ``parallel.AXIS_NAME``. ``parallel``
maps it over devices; nothing here knows how many there are.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
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
      return objectives.training_loss(terms, beta, spec.free_bits, axis)

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, axis)
    metrics = jax.lax.pmean(metrics, axis)
    metrics["grad_norm"] = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
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
