"""A population's run as the loop shares it: data, models, restored states, evaluators.

``set_up`` makes a ``Run`` once, before the first dispatch: it loads the data, builds
every member's model at its own size (and the population's at the largest), restores
each member's latest checkpoint and lays the states out on the devices, stacked on a
member axis (padded where latent dimensions differ). The ``Run`` then answers what the
loop asks per member: its slice of the state at its own size, and evaluations batched
over members of one model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from vae_jax import models
from vae_jax import parallel
from vae_jax import validation
from vae_jax.data import datasets
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.objectives import auxiliary
from vae_jax.training import checkpoints
from vae_jax.training import members as members_lib
from vae_jax.training import metrics as metrics_lib
from vae_jax.training import population
from vae_jax.training import state as state_lib
from vae_jax.training import step as training
from vae_jax.training import workdir as workdir_lib
from vae_jax.training.members import ACTIVE


@dataclasses.dataclass(eq=False)
class Run:
  """Everything the loop shares across members, made once by ``_set_up``."""
  members: list[members_lib.Member]
  dataset: datasets.Dataset
  fallback_reason: Optional[str]
  preprocessing: str
  total_steps: int
  steps_per_epoch: int
  step: int                          # the population's: that of its active members
  rstate: Any                        # replicated; stacked on a member axis unless solo
  hyper: population.Hyper
  train_chunk: training.DataParallelTrainChunk
  train_data: dict[str, jax.Array]
  evaluators: dict[tuple[str, Any], evaluation.Evaluator]   # (split, member model) ->
  big_template: Any                  # the padded layout's params (None: no padding)
  start_time: float
  main_process: bool
  split: str                         # population.choose_split: "batch" or "members"

  @property
  def solo(self) -> bool:
    return len(self.members) == 1

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.members[0].config

  def active(self) -> list[members_lib.Member]:
    return [m for m in self.members if m.status == ACTIVE]

  # --- laying trees out on the devices and reading them back ----------------------------
  def place(self, tree: Any) -> Any:
    """A host tree (with the member axis, unless solo) as the chunk takes it."""
    return parallel.shard(tree) if self.split == "members" else parallel.replicate(tree)

  def host(self, tree: Any) -> Any:
    """The inverse of ``place``, as host arrays (metrics too: [members, steps])."""
    return parallel.unshard(tree) if self.split == "members" else parallel.unreplicate(tree)

  # --- parameters, per member ---------------------------------------------------------
  def host_state(self) -> Any:
    return self.host(self.rstate)

  def own_state(self, host_state: Any, member: members_lib.Member) -> Any:
    """A member's slice of the population's (host) state, at its own size."""
    state = host_state if self.solo else population.member(host_state, member.index)
    if self.big_template is None:
      return state
    return population.unpad_state(state, member.template)

  def own_params(self, host_params: Any, member: members_lib.Member) -> Any:
    """A member's slice of the population's (host) parameters, at its own size."""
    params = host_params if self.solo else population.member(host_params, member.index)
    if self.big_template is None:
      return params
    return population.unpad(params, member.template.params)

  # --- evaluation, batched over members of one model -----------------------------------
  def evaluate(self, split: str, chosen: Sequence[members_lib.Member], k: int,
               params_of: Optional[Callable[[int], Any]] = None) -> dict[int, dict]:
    """Summaries of ``split`` for ``chosen`` members (index -> summary); ``params_of``:
    member index -> own-size host params (default: their current ones)."""
    if self.solo and params_of is None:
      member = self.members[0]
      return {member.index: self.evaluators[split, member.model].evaluate(
          self.rstate.params, k)}
    host = None if params_of is not None else self.host_state().params
    out = {}
    for model in dict.fromkeys(m.model for m in chosen):
      group = [m for m in chosen if m.model == model]
      own = [params_of(m.index) if params_of else self.own_params(host, m) for m in group]
      if self.solo:
        summaries = [self.evaluators[split, model].evaluate(parallel.replicate(own[0]), k)]
      else:
        summaries = self.evaluators[split, model].evaluate_members(
            parallel.replicate(population.stack(own)), len(group), k)
      out.update({m.index: s for m, s in zip(group, summaries)})
    return out

def set_up(members: list[members_lib.Member], start_time: float, main_process: bool,
           split: str = "auto") -> Run:
  config = members[0].config
  dataset, fallback_reason = datasets.load_configured(config.data)
  observes = models.observes(config)
  preprocessing = validation.resolve_preprocessing(
      dataset.name, config.data.preprocessing, observes)
  validation.check_data_model(dataset.name, preprocessing, observes)
  num_train = len(dataset.train)
  if config.batch_size > num_train:
    raise validation.ConfigError(
        f"config.batch_size={config.batch_size} exceeds the {num_train} training examples "
        f"of {dataset.name!r}; use at most {num_train}.")
  steps_per_epoch = num_train // config.batch_size
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else math.ceil(config.num_epochs * steps_per_epoch))
  num_validation = 0 if dataset.validation is None else len(dataset.validation)
  logging.info("Dataset %s (%s): %d train / %d validation (%s) / %d test, preprocessing=%s; "
               "%d devices (%d processes); %d steps of global batch %d (%d per epoch)%s.",
               dataset.name, dataset.source, num_train, num_validation,
               dataset.validation_source, len(dataset.test), preprocessing,
               parallel.device_count(), jax.process_count(), total_steps, config.batch_size,
               steps_per_epoch, f"; {len(members)} members train as one population"
               if len(members) > 1 else "")

  solo = len(members) == 1
  try:
    split = population.choose_split(len(members), parallel.device_count(), split)
  except ValueError as e:
    raise validation.ConfigError(str(e)) from None
  tx = state_lib.make_optimizer(config.optim, total_steps, steps_per_epoch,
                               batch_size=config.batch_size)
  for member in members:
    member.model = models.build(member.config, dataset.info)
    member.template = state_lib.create_train_state(member.config.seed, member.model, tx,
                                                   auxiliary.get(member.config))
    member.ckpt = checkpoints.Checkpointer(member.workdir, member.config.keep_checkpoints,
                                           keep_best=member.config.keep_best_checkpoint)
    if not solo:
      member.prefix = f"[{member.name}] "
  states, step = _restore(members, total_steps, steps_per_epoch)
  for member in members:
    if member.planned is not None:  # every check passed: only now the workdir changes
      workdir_lib.apply(member.planned, member.step)
    member.writer = metrics_lib.create_writer(member.workdir, is_main_process=main_process)

  hyper = population.hyper_arrays([m.config for m in members])
  big = max(members, key=lambda m: m.model.latent_dim or 0)
  padded = population.LATENT_MASK in hyper
  if padded and not population.supports_latent_mask(big.model):
    raise validation.ConfigError(
        f"{type(big.model).__name__} (config.model.name) cannot pad its latent units "
        f"(no with_latent_mask): members with other model.latent_dim train apart.")
  if solo:
    state = states[0]
  else:
    hyper[population.ACTIVE] = np.asarray([m.status == ACTIVE for m in members], np.float32)
    state = population.stack([population.pad_state(s, big.template) if padded else s
                              for s in states])
  optimizer = lambda lr: state_lib.make_optimizer(config.optim, total_steps, steps_per_epoch,
                                                  learning_rate=lr,
                                                  batch_size=config.batch_size)
  train_chunk = training.DataParallelTrainChunk(
      big.model if padded else members[0].model, tx,
      training.spec_from_config(config, num_train, preprocessing, split, dataset.render),
      num_members=None if solo else len(members), optimizer=optimizer)
  evaluators = {}
  for model in dict.fromkeys(m.model for m in members):
    for split in ("validation", "test") if num_validation else ("test",):
      evaluators[split, model] = evaluation.Evaluator(
          model, preprocessing, config.eval.seed, dataset.arrays(split), config.eval.batch_size,
          config.eval.iwae_chunk_size, config.eval.collapse_rate_floor, dataset.render,
          dataset.image_shape)
  place = parallel.shard if split == "members" else parallel.replicate
  return Run(members, dataset, fallback_reason, preprocessing, total_steps, steps_per_epoch,
             step, place(state), hyper, train_chunk,
             parallel.replicate(dataset.arrays("train")), evaluators,
             big.template if padded else None, start_time, main_process, split)


def _restore(members: list[members_lib.Member], total_steps: int,
             steps_per_epoch: int) -> tuple[list[Any], int]:
  """Restores each member's latest checkpoint; returns the states and the population's step.

  Members still training were saved together; if a stop came between their saves, all
  go back to the newest step every one of them has, so the rerun is exact.
  """
  states = []
  for member in members:
    # Every process restores: hosts that saw different checkpoints would run different
    # programs and hang, so they must agree first.
    latest = parallel.gather_int(-1 if member.ckpt.latest_step() is None
                                 else member.ckpt.latest_step())
    if len(set(latest)) > 1:
      raise checkpoints.CheckpointError(
          f"The processes see different latest checkpoints in {member.ckpt.directory} (by "
          f"process, -1 for none: {latest}). To resume a multi-host run, the workdir must be "
          f"on storage every host sees at the same path (NFS, Filestore, a gcsfuse mount).")
    states.append(member.restore())
    if member.restored:
      logging.info("%sResumed from checkpoint %d (epoch %.2f).", member.prefix, member.step,
                   member.step / steps_per_epoch)
  steps = {m.step for m in members if m.status == ACTIVE}
  if len(steps) > 1:
    common = min(steps)
    for member in members:
      if member.status == ACTIVE and member.step > common:
        states[member.index] = member.restore(common)
  for member in members:
    if member.step > total_steps:
      raise validation.ConfigError(
          f"The run's checkpoint is at step {member.step}, past the {total_steps} steps the "
          f"config asks for (num_epochs / num_train_steps); it cannot train backwards. Ask "
          f"for at least {member.step} steps (num_train_steps >= {member.step}, or num_epochs "
          f">= {member.step / steps_per_epoch:.4g}); nothing in {member.workdir} was changed.")
  active = [m.step for m in members if m.status == ACTIVE]
  return states, active[0] if active else max(m.step for m in members)
