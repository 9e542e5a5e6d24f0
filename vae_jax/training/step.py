"""The per-device train step of any model family, scanned over many steps.

``make_train_chunk`` returns a pure per-device function: it runs ``num_steps``
optimizer steps in one ``lax.scan`` (Python does not run per step), reading its
batches from the dataset already on the device (a dict: uint8 "image" and, where
the dataset has them, "label"), asking the model for its per-example terms
(``Model.terms``, or its log-weights for a k-sample objective) and the objective
(``config.objective.name``) for the loss, and averages gradients
over the devices (``parallel.mean`` on ``parallel.AXIS_NAME``). ``parallel``
maps it over devices; nothing here knows how many there are. A family with state
that is not trained by gradients (an EMA codebook: ``interface.AFTER_UPDATE``)
advances it after the optimizer update, from statistics averaged the same way.

Non-finite numbers: every step's loss and gradient norm come back to the host,
which stops the run (``first_nonfinite``) before anything is saved; or, with
``optim.on_nonfinite="skip"``, ``optax.apply_if_finite`` drops such updates and
counts them in the optimizer state (so in checkpoints too).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import parallel
from vae_jax.core import checks
from vae_jax.core import distributions as D
from vae_jax.data import pipeline
from vae_jax.models import interface
from vae_jax.objectives import auxiliary as auxiliary_lib
from vae_jax.objectives import elbo
from vae_jax.objectives import regularizers
from vae_jax.objectives import training_objectives
from vae_jax.training import population
from vae_jax.training import state as state_lib


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
  skip_nonfinite: bool = False
  objective: str = "elbo"          # training_objectives.OBJECTIVES
  num_samples: int = 1
  gradient_estimator: str = "reparam"
  nan_at_step: int = -1   # fault injection for tests: update N's loss becomes NaN
  # How a population shares the devices: "batch" (every device holds every member and takes
  # its slice of each one's batch; gradients are averaged over devices) or "members" (each
  # device holds its own members and their whole batches; nothing is averaged across
  # devices). A solo run is "batch".
  split: str = "batch"
  render: Optional[Callable] = None  # Dataset.render: rows -> uint8 images, after the gather
  # The disentanglement regularizer (objectives/regularizers.py) and its constants
  # (regularizers.FIELDS; a population's members may trace them instead, as beta).
  regularizer: str = "beta_vae"
  regularizer_constants: tuple = ()
  auxiliary: Optional[auxiliary_lib.Auxiliary] = None

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.global_batch


def spec_from_config(config: ml_collections.ConfigDict, num_examples: int,
                     preprocessing: str, split: str = "batch",
                     render: Optional[Callable] = None) -> TrainSpec:
  """The TrainSpec of a (validated) config on a training set of ``num_examples``."""
  objective, num_samples, estimator = training_objectives.settings(config)
  return TrainSpec(
      num_examples=num_examples, global_batch=config.batch_size, split=split,
      per_device_batch=(config.batch_size if split == "members" else
                        parallel.per_device(config.batch_size, "batch_size")),
      preprocessing=preprocessing, beta=config.objective.beta,
      kl_warmup_steps=config.objective.warmup_steps,
      free_bits=config.objective.free_bits,
      skip_nonfinite=config.optim.on_nonfinite == "skip",
      objective=objective, num_samples=num_samples, gradient_estimator=estimator,
      nan_at_step=config.debug.nan_at_step, render=render,
      regularizer=config.objective.get("regularizer", "beta_vae"),
      regularizer_constants=tuple(
          (f, config.objective.get(f, d)) for f, d in regularizers.FIELDS.items()
          if f != "regularizer"),
      auxiliary=auxiliary_lib.get(config))


def make_batch(data: dict[str, jax.Array], indices: jax.Array, pixel_keys: jax.Array,
               preprocessing: str, render: Optional[Callable] = None) -> interface.Batch:
  """The examples at ``indices`` as the model sees them: preprocessed images, labels as is.

  ``render``: a rendered dataset's ``Dataset.render``, drawing the images from the
  gathered rows (keyed per example) before they are preprocessed.

  Rows are gathered from a [N, -1] view of each array: XLA:CPU gathers whole
  rows of a 2-D array as row copies, but slices of a [N, 28, 28, 1] array
  element by element, several times slower. The indices come from a
  permutation, always in range: "clip" spares the out-of-range mask of "fill".
  """
  def rows(v: jax.Array) -> jax.Array:
    flat = jnp.take(v.reshape(v.shape[0], -1), indices, axis=0, mode="clip")
    return flat.reshape(indices.shape + v.shape[1:])
  batch = {k: rows(v) for k, v in data.items()}
  if render is not None:
    batch["image"] = render(batch["image"], pixel_keys)
  batch["image"] = pipeline.preprocess(batch["image"], pixel_keys, preprocessing)
  return batch


OptimizerFactory = Callable[[jax.Array], optax.GradientTransformation]


def make_train_chunk(model: interface.Model, tx: optax.GradientTransformation,
                     spec: TrainSpec, optimizer: Optional[OptimizerFactory] = None):
  """Per-device fn(state, hyper, data, perms, num_steps) -> (state, metrics stacked over steps).

  Written for one member: ``hyper`` (``population.Hyper``, one member's scalars) holds
  the values that differ between the members of a population; each one absent ({} in
  a solo run) is the compile-time constant of ``spec``, so a solo run compiles to the
  program it always did. ``optimizer``: learning rate -> the optimizer (``tx``'s
  state structure), for members whose learning rate is traced.
  ``perms``: the permutations of the ``epochs_touched(spec, num_steps)`` epochs
  from the state's epoch on (a tuple of [N] arrays), so a chunk may cross epoch
  boundaries at no per-step cost. ``num_steps`` is static: one compilation per
  distinct chunk length.
  """
  # Members split over devices: each device has whole batches, so its index selects nothing
  # and there is nothing to average over devices.
  axis = None if spec.split == "members" else parallel.AXIS_NAME
  mean = (lambda tree, _: tree) if axis is None else parallel.mean

  def train_step(state: state_lib.TrainState, hyper: population.Hyper,
                 data: dict[str, jax.Array], perms: jax.Array, first_epoch: jax.Array):
    epoch, step_in_epoch = jnp.divmod(state.step, spec.steps_per_epoch)
    indices, positions = pipeline.local_batch_indices(
        perms, epoch - first_epoch, step_in_epoch, spec.global_batch, spec.per_device_batch,
        0 if axis is None else jax.lax.axis_index(axis))
    pixel_keys = pipeline.example_keys(
        pipeline.stream_key(state.rng, pipeline.STREAM_PIXELS, state.step), positions)
    latent_keys = pipeline.example_keys(
        pipeline.stream_key(state.rng, pipeline.STREAM_LATENT, state.step), positions)
    batch = make_batch(data, indices, pixel_keys, spec.preprocessing, spec.render)
    beta = elbo.beta_at(state.step, hyper.get("beta", spec.beta),
                        hyper.get("kl_warmup_steps", spec.kl_warmup_steps))
    member_model = population.masked(model, hyper)
    nan_at_step = hyper.get("nan_at_step", spec.nan_at_step)

    def loss_fn(params):
      if spec.objective != "elbo":  # a bound of k log-weights (objectives/training_objectives)
        loss, metrics = training_objectives.loss(member_model, params, batch, latent_keys,
                                                 spec.objective, spec.num_samples,
                                                 spec.gradient_estimator)
      else:
        terms = interface.training_terms(member_model, params, batch, latent_keys, state.step)
        if spec.preprocessing == "dequantize":
          terms = elbo.add_bits_per_dim(terms, math.prod(batch["image"].shape[1:]))
        if spec.regularizer == "beta_vae":
          loss, metrics = elbo.training_loss(terms, beta,
                                             hyper.get("free_bits", spec.free_bits), axis)
        else:
          loss, metrics = regularized_loss(spec, hyper, terms, latent_keys, state, axis)
      if not isinstance(nan_at_step, int) or nan_at_step > 0:
        loss = loss * jnp.where(state.step + 1 == nan_at_step, jnp.nan, 1.0)
        metrics["loss"] = loss
      return loss, metrics

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = mean(grads, axis)
    aux_state, aux_metrics = state.aux, {}
    if spec.auxiliary is not None:  # its own loss on this step's draws, from the same params
      aux_state, aux_metrics = update_auxiliary(
          spec.auxiliary, state, metrics.pop("codes"), positions, hyper, axis, mean)
    metrics = mean(metrics, axis)
    metrics["grad_norm"] = optax.tree.norm(grads)
    if spec.skip_nonfinite:  # a non-finite loss voids the update even if grads are finite
      grads = jax.tree.map(lambda g: jnp.where(jnp.isfinite(metrics["loss"]), g, jnp.nan),
                           grads)
    member_tx = tx
    if "learning_rate" in hyper:  # a population: frozen members learn at rate 0
      member_tx = optimizer(hyper["learning_rate"] * hyper[population.ACTIVE])
    updates, opt_state = member_tx.update(grads, state.opt_state, state.params)
    if spec.skip_nonfinite:
      metrics["skipped_updates"] = opt_state.total_notfinite
      metrics["consecutive_nonfinite"] = opt_state.notfinite_count
    params = optax.apply_updates(state.params, updates)
    if interface.has_after_update(model):  # state that is not trained by gradients
      stats = mean(model.update_statistics(state.params, batch, latent_keys), axis)
      updated, extra = model.after_update(state.params, params, stats)
      if spec.skip_nonfinite:  # a skipped update skips this too
        ok = jnp.isfinite(metrics["loss"])
        updated = jax.tree.map(lambda new, old: jnp.where(ok, new, old), updated, params)
      params = population.frozen_updates(hyper.get(population.ACTIVE), updated, params)
      metrics = {**metrics, **extra}
    if spec.skip_nonfinite and spec.auxiliary is not None:  # a skipped update skips it too
      ok = jnp.isfinite(metrics["loss"])
      aux_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), aux_state, state.aux)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              aux=aux_state)
    return new_state, {**metrics, **aux_metrics}

  def train_chunk(state: state_lib.TrainState, hyper: population.Hyper,
                  data: dict[str, jax.Array], perms: tuple, num_steps: int):
    first_epoch = state.step // spec.steps_per_epoch
    perms = jnp.stack(perms)
    return jax.lax.scan(lambda s, _: train_step(s, hyper, data, perms, first_epoch), state,
                        None, length=num_steps)

  return train_chunk


def regularized_loss(spec: TrainSpec, hyper: population.Hyper, terms: dict,
                     latent_keys: jax.Array, state: state_lib.TrainState,
                     axis: Optional[str]) -> tuple[jax.Array, dict]:
  """distortion + a disentanglement regularizer (``spec.regularizer``), and its metrics.

  Its fields are the spec's constants or, where a population traces them, ``hyper``'s.
  The draws z are those of the terms (the posterior sampled with the same keys); with an
  auxiliary network they come back in the metrics as "codes" for its own loss.
  """
  q = terms.get(interface.POSTERIOR)
  if not isinstance(q, D.DiagonalGaussian):
    raise checks.ConfigError(
        f"objective.regularizer={spec.regularizer!r} needs a diagonal-Gaussian posterior "
        "q(z|x) in the model's terms, which config.model.name does not give; use "
        "objective.regularizer='beta_vae'.")
  z = q.sample(latent_keys)
  constants = dict(spec.regularizer_constants, beta=spec.beta)
  values = {f: hyper.get(f, constants[f]) for f in regularizers.USES[spec.regularizer]}
  model_term = None
  if spec.auxiliary is not None:
    model_term = lambda codes: spec.auxiliary.model_term(state.aux["params"], codes)
  distortion = jnp.mean(terms["distortion"])
  penalty, extra = regularizers.regularizer(spec.regularizer, values, q, z, terms["rate"],
                                            state.step, axis, model_term)
  loss = distortion + penalty
  metrics = elbo.with_term_means(
      {"loss": loss, "distortion": distortion, "regularizer": penalty, **extra}, terms)
  if spec.auxiliary is not None:
    metrics["codes"] = jax.lax.stop_gradient(z)
  return loss, metrics


def update_auxiliary(aux: auxiliary_lib.Auxiliary, state: state_lib.TrainState,
                     codes: jax.Array, positions: jax.Array, hyper: population.Hyper,
                     axis: Optional[str], mean: Callable) -> tuple[dict, dict]:
  """One step of the auxiliary network on its own loss (gradients averaged over devices
  like the model's); a frozen population member's stays as it is."""
  key = pipeline.stream_key(state.rng, pipeline.STREAM_AUXILIARY, state.step)
  grads, metrics = jax.grad(aux.loss, has_aux=True)(state.aux["params"], codes, positions,
                                                    key, axis)
  grads, metrics = mean(grads, axis), mean(metrics, axis)
  updates, opt_state = aux.optimizer().update(grads, state.aux["opt_state"],
                                              state.aux["params"])
  new = {"params": optax.apply_updates(state.aux["params"], updates), "opt_state": opt_state}
  return population.frozen_updates(hyper.get(population.ACTIVE), new, state.aux), metrics


def epochs_touched(spec: TrainSpec, num_steps: int) -> int:
  """How many epochs a chunk of ``num_steps`` can reach into, from wherever it starts."""
  return -(-num_steps // spec.steps_per_epoch) + 1


class DataParallelTrainChunk:
  """``make_train_chunk`` on every device, drawing each epoch's permutation once.

  Call as fn(replicated state, replicated hyper, replicated data dict, step, num_steps)
  -> (state, metrics), ``step`` being the population's step (the host knows it without
  waiting for the devices). With ``num_members`` the state, ``hyper`` and the
  permutations carry a leading member axis and the chunk is mapped over it
  (``population.over_members``: vmapped, or looped inside the program on CPU) within the
  data-parallel map; without, it is the solo program. The state's buffers are donated: use the
  returned state. A permutation of 50,000 examples takes about 16 ms on a 2-core CPU;
  drawn anew in every 200-step dispatch, the epochs it touches would cost ~8 % of the
  default model's training time.
  """

  def __init__(self, model: interface.Model, tx: optax.GradientTransformation,
               spec: TrainSpec, num_members: Optional[int] = None,
               optimizer: Optional[OptimizerFactory] = None,
               vectorized: Optional[bool] = None):
    self._spec = spec
    chunk = make_train_chunk(model, tx, spec, optimizer)
    permutation = lambda rng, epoch: pipeline.epoch_permutation(rng, epoch, spec.num_examples)
    if num_members is not None:  # population.over_members: vmapped, or looped on CPU
      member_chunk = chunk
      def chunk(state, hyper, data, perms, num_steps):  # pylint: disable=function-redefined
        return population.over_members(
            lambda s, h, p: member_chunk(s, h, data, p, num_steps), vectorized)(
                state, hyper, perms)
      member_permutation = permutation
      def permutation(rng, epoch):  # pylint: disable=function-redefined
        return population.over_members(lambda r: member_permutation(r, epoch), vectorized)(rng)
    self._chunk = parallel.data_parallel(chunk, static_argnums=(4,), donate_argnums=(0,))
    self._permutation = parallel.data_parallel(permutation)
    self._perms = {}  # epoch -> its permutation(s), replicated; only the current window kept

  def permutations(self, rng: jax.Array, step: int, num_steps: int) -> tuple:
    """The replicated permutations a chunk from ``step`` needs (``rng``: replicated)."""
    first = step // self._spec.steps_per_epoch
    epochs = range(first, first + epochs_touched(self._spec, num_steps))
    self._perms = {e: self._perms[e] if e in self._perms else
                   self._permutation(rng, parallel.replicate(np.int32(e))) for e in epochs}
    return tuple(self._perms[e] for e in epochs)

  def __call__(self, rstate: state_lib.TrainState, rhyper: population.Hyper,
               data: dict[str, jax.Array], step: int, num_steps: int):
    perms = self.permutations(rstate.rng, step, num_steps)
    return self._chunk(rstate, rhyper, data, perms, num_steps)


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
