"""Evaluating a saved checkpoint of a finished or running run, read-only.

``load_run`` restores a run's model for studies and pictures; ``evaluate_checkpoint``
is ``python -m experiments.evaluate``. The run's own config.json decides the
model and data; its checkpoints are opened read-only and its training state,
metrics and results are never touched. Each evaluation writes its own file,
``eval/step_STEP_kK.json``, and refuses to replace an existing one.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional, Union

import jax
import ml_collections
from absl import logging

from vae_jax import models
from vae_jax import parallel
from vae_jax import validation
from vae_jax.data import datasets
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.models import interface
from vae_jax.objectives import auxiliary
from vae_jax.training import checkpoints
from vae_jax.training import state as state_lib
from vae_jax.training import workdir as workdir_lib


def _dataset_of_run(workdir: str, config) -> datasets.Dataset:
  """The data the run actually trained on (its fallback, if results.json says so)."""
  results = workdir_lib.read_json(os.path.join(workdir, workdir_lib.RESULTS_FILE))
  used = results["dataset"]["used"] if results else None
  if used and used != config.data.name:
    logging.warning("The run used %r (fallback for %r); evaluating on %r.", used,
                    config.data.name, used)
    return datasets.load(used)
  dataset, fallback_reason = datasets.load_configured(config.data)
  if fallback_reason and not results:
    logging.warning("Evaluating a running run on the fallback %r: %s", dataset.name,
                    fallback_reason)
  return dataset


@dataclasses.dataclass(frozen=True)
class Run:
  """A run's trained model, read back from its workdir: what studies and pictures start from."""
  workdir: str
  config: ml_collections.ConfigDict
  model: interface.Model
  params: dict
  step: int
  checkpoint: str                   # the checkpoint directory the params came from
  dataset: datasets.Dataset
  preprocessing: str


def parse_step(flag: Optional[str]) -> Union[int, str, None]:
  """A --step flag's value: None (the latest), 'best', or a step number."""
  if flag in (None, "best"):
    return flag
  if not flag.isdigit():
    raise ValueError(f"--step={flag}: use a checkpoint step number or 'best'.")
  return int(flag)


def load_run(workdir: str, step: Union[int, str, None] = None) -> Run:
  """Restores checkpoint ``step`` of the run in ``workdir`` (read-only for the run).

  ``step``: a number, "best" (best on validation, runs with keep_best_checkpoint)
  or None for the latest intact one.
  """
  workdir = os.path.abspath(workdir)
  config = workdir_lib.load_config(workdir)
  validation.validate(config)
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints,
                                  keep_best=config.keep_best_checkpoint, read_only=True)
  steps = ckpt.all_steps()
  if not steps:
    raise workdir_lib.WorkdirError(f"No checkpoint in {ckpt.directory} yet.")
  if step == "best":
    if not config.keep_best_checkpoint:
      raise workdir_lib.WorkdirError(
          "--step=best: this run did not track the best checkpoint (keep_best_checkpoint "
          f"was False); pick one of {steps}.")
    step = ckpt.best_step()
  if step is not None and step not in steps:
    raise workdir_lib.WorkdirError(
        f"--step={step}: no such checkpoint in {ckpt.directory}; available: {steps}.")

  dataset = _dataset_of_run(workdir, config)
  preprocessing = validation.preprocessing_of(config, dataset.name)
  model = models.build(config, dataset.info)
  template = state_lib.create_train_state(
      config.seed, model, state_lib.make_optimizer(config.optim, total_steps=1),
      auxiliary.get(config))
  if step is None:
    state, _ = ckpt.restore_latest(template)
    step = int(state.step)
  else:
    state, _ = ckpt.restore(step, template)
  return Run(workdir, config, model, state.params, step,
             os.path.join(ckpt.directory, str(step)), dataset, preprocessing)


def evaluate_checkpoint(workdir: str, *, step: Union[int, str, None] = None,
                        num_importance_samples: Optional[int] = None) -> dict[str, Any]:
  """Evaluates checkpoint ``step`` of the run in ``workdir`` (see ``load_run``)."""
  start = time.time()
  workdir = os.path.abspath(workdir)
  config = workdir_lib.load_config(workdir)
  validation.validate(config)
  k = config.eval.num_importance_samples if num_importance_samples is None else (
      num_importance_samples)
  if k < 0:
    raise validation.ConfigError(f"--num_importance_samples={k} is invalid: must be >= 0.")
  if jax.process_index() == 0:  # it writes eval/ there: say so now, not after evaluating
    workdir_lib.check_directory(os.path.join(workdir, "eval"),
                                f"--workdir={workdir} (the evaluation is written to eval/)")
  run = load_run(workdir, step)
  step, dataset, preprocessing = run.step, run.dataset, run.preprocessing
  out_path = os.path.join(workdir, "eval", f"step_{step:08d}_k{k}.json")
  if os.path.exists(out_path):
    raise workdir_lib.WorkdirError(
        f"{out_path} exists: this checkpoint was already evaluated with k={k} (evaluation is "
        f"deterministic). Move that file away to recompute it.")
  evaluator = evaluation.Evaluator(
      run.model, preprocessing, config.eval.seed, dataset.arrays("test"), config.eval.batch_size,
      config.eval.iwae_chunk_size, config.eval.collapse_rate_floor, dataset.render,
      dataset.image_shape)
  summary = evaluator.evaluate(parallel.replicate(run.params), k)
  record = {
      "step": step, "test": summary, "checkpoint": run.checkpoint,
      "dataset": {"used": dataset.name, "source": dataset.source,
                  "preprocessing": preprocessing, "num_test": len(dataset.test),
                  "test_split": config.data.test_split},
      "unit": "nats per example", "device_count": parallel.device_count(),
      "wall_time_s": time.time() - start, "versions": workdir_lib.versions(),
  }
  if jax.process_index() == 0:  # every process evaluated its share; one writes
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    workdir_lib.write_json(out_path, record)
    logging.info("Wrote %s", out_path)
  return record
