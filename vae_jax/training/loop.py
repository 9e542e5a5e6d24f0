"""train_and_evaluate: one run of any model family, from config to results.json.

The loop dispatches chunks of ``steps_per_dispatch`` scanned steps to all
devices; Python runs once per chunk, at log, evaluation and checkpoint points.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from vae_jax import models
from vae_jax import parallel
from vae_jax import validation
from vae_jax.data import datasets
from vae_jax.data import idx
from vae_jax.data import tfds_files
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.models import interface
from vae_jax.pictures import images
from vae_jax.training import checkpoints
from vae_jax.training import metrics as metrics_lib
from vae_jax.training import preemption
from vae_jax.training import selection as selection_lib
from vae_jax.training import state as state_lib
from vae_jax.training import step as training
from vae_jax.training import workdir as workdir_lib

# Errors that explain themselves: entry points print them without a traceback.
USER_ERRORS = (validation.ConfigError, workdir_lib.WorkdirError,
               datasets.DatasetUnavailableError, idx.IdxError, training.NonFiniteError,
               checkpoints.CheckpointError, tfds_files.ManualFileError)


def _next_stop(step: int, total: int, config: ml_collections.ConfigDict) -> int:
  """The next step at which the host must act (dispatch end, log, eval, checkpoint, end).

  Every stop is a multiple of its interval, counted from step 0, so a resumed run
  dispatches exactly the chunks an uninterrupted run would.
  """
  stops = [total]
  for every in (config.steps_per_dispatch, config.log_every, config.eval_every,
                config.checkpoint_every):
    stops.append((step // every + 1) * every)
  return min(stops)


def _format(metrics: dict[str, float]) -> str:
  return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))


def describe(summary: dict[str, Any]) -> str:
  """One log line for an evaluation summary."""
  text = (f"-ELBO {summary['neg_elbo']:.3f} nats (rate {summary['rate']:.3f}, "
          f"distortion {summary['distortion']:.3f})")
  if "bits_per_dim" in summary:
    text += f", {summary['bits_per_dim']:.4f} bits/dim"
  if "nll" in summary:
    text += (f" | NLL(k={summary['num_importance_samples']}) {summary['nll']:.3f}, "
             f"gap {summary['gap']:.3f}")
  if "active_units" in summary:
    text += (f" | active units {summary['active_units']}/{len(summary['activity_per_dim'])}, "
             f"MI {summary['mutual_information']:.3f}")
  return text + f" | {summary['eval_seconds']:.1f}s"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       overwrite: bool = False,
                       allow_changes: Sequence[str] = ()) -> dict[str, Any]:
  """Trains and evaluates one VAE; writes everything into ``workdir``; returns results.

  Restarting on the same workdir resumes from the latest intact checkpoint.
  ``overwrite`` / ``allow_changes``: see ``workdir.prepare``. Raises
  ``preemption.Preempted`` after saving when SIGTERM asks it to stop.
  """
  start_time = time.time()
  validation.validate(config)
  workdir = os.path.abspath(workdir)
  main_process = jax.process_index() == 0  # alone writes the workdir's files
  with contextlib.ExitStack() as stack:
    planned, refused = None, None
    if main_process:
      try:
        stack.enter_context(workdir_lib.lock(workdir))
        planned = workdir_lib.plan(workdir, config, overwrite=overwrite,
                                   allow_changes=allow_changes)
      except Exception as e:  # pylint: disable=broad-except  # re-raised below
        refused = e
    if not parallel.process_zero_agrees(refused is None):  # other processes stop too
      raise refused or workdir_lib.WorkdirError(
          f"Process 0 could not use {workdir}; its log says why.")
    return _train(config, workdir, planned, start_time, main_process)


def _train(config: ml_collections.ConfigDict, workdir: str,
           planned: workdir_lib.Plan | None, start_time: float,
           main_process: bool) -> dict[str, Any]:
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
               "%d devices (%d processes); %d steps of global batch %d (%d per epoch).",
               dataset.name, dataset.source, num_train, num_validation,
               dataset.validation_source, len(dataset.test), preprocessing,
               parallel.device_count(), jax.process_count(), total_steps, config.batch_size,
               steps_per_epoch)

  model = models.build(config, dataset.info)
  tx = state_lib.make_optimizer(config.optim, total_steps, steps_per_epoch)
  state = state_lib.create_train_state(config.seed, model, tx)
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints,
                                  keep_best=config.keep_best_checkpoint)
  # Every process restores: hosts that saw different checkpoints would run different
  # programs and hang, so they must agree first.
  latest = parallel.gather_int(-1 if ckpt.latest_step() is None else ckpt.latest_step())
  if len(set(latest)) > 1:
    raise checkpoints.CheckpointError(
        f"The processes see different latest checkpoints in {ckpt.directory} (by process, "
        f"-1 for none: {latest}). To resume a multi-host run, the workdir must be on storage "
        f"every host sees at the same path (NFS, Filestore, a gcsfuse mount).")
  restored = ckpt.restore_latest(state)
  meta = {"alarm_steps": [], "train_seconds": 0.0, "selection": {}}
  if restored is not None:
    state, saved_meta = restored
    meta.update({k: saved_meta[k] for k in meta if k in saved_meta})
    logging.info("Resumed from checkpoint %d (epoch %.2f).", int(state.step),
                 int(state.step) / steps_per_epoch)
  step = int(state.step)
  if step > total_steps:
    raise validation.ConfigError(
        f"The run's checkpoint is at step {step}, past the {total_steps} steps the config "
        f"asks for (num_epochs / num_train_steps); it cannot train backwards. Ask for at "
        f"least {step} steps (num_train_steps >= {step}, or num_epochs >= "
        f"{step / steps_per_epoch:.4g}); nothing in {workdir} was changed.")
  if planned is not None:  # every check passed: only now the workdir changes
    workdir_lib.apply(planned, step)

  selection = selection_lib.Selection(config.selection.metric, config.selection.patience,
                                      meta["selection"])
  skip = config.optim.on_nonfinite == "skip"
  train_chunk = training.DataParallelTrainChunk(
      model, tx, training.spec_from_config(config, num_train, preprocessing, dataset.render))
  def evaluator(split):
    return evaluation.Evaluator(model, preprocessing, config.eval.seed, dataset.arrays(split),
                                config.eval.batch_size, config.eval.iwae_chunk_size,
                                config.eval.collapse_rate_floor, dataset.render,
                                dataset.image_shape)
  validator = evaluator("validation") if num_validation else None
  tester = evaluator("test")  # evaluated once, after training, on the selected checkpoint
  train_data = parallel.replicate(dataset.arrays("train"))
  rstate = parallel.replicate(state)
  writer = metrics_lib.create_writer(workdir, is_main_process=main_process)

  during = config.eval.num_importance_samples_during_training
  periodic = {}  # step -> the validation summary of the periodic evaluation there
  def evaluate(split, params, num_importance_samples, record=True):
    summary = (validator if split == "validation" else tester).evaluate(
        params, num_importance_samples)
    logging.info("step %d %s | %s", step, split, describe(summary))
    if not record:
      return summary
    writer.write_scalars(step, {f"{split}/{k}": v for k, v in evaluation.scalars(summary).items()})
    if split == "validation":
      periodic.clear()
      periodic[step] = summary
    if summary["posterior_collapse"] and split == "validation":
      meta["alarm_steps"].append(step)
      logging.warning("step %d: %s", step, summary["posterior_collapse"])
    return summary

  def save(validation_summary):
    score = None
    if config.keep_best_checkpoint:  # scored on validation; never on test
      score = selection.score(validation_summary or validator.evaluate(
          rstate.params, during if config.selection.metric == "nll" else 0))
    meta["selection"] = selection.state()
    ckpt.save(step, parallel.unreplicate(rstate), dict(
        meta, epoch=step // steps_per_epoch, step_in_epoch=step % steps_per_epoch,
        examples_seen=step * config.batch_size), score)
    return step

  pending, logged = [], []  # device metrics of dispatches not yet fetched / not yet logged
  last_log_step, interval_start = step, time.time()
  compiled, compiling = set(), False  # chunk lengths seen; a new one means a compilation
  saved_step = step if restored is not None else None
  with preemption.PreemptionWatcher(ckpt.reached_preemption) as watcher, \
       contextlib.closing(ckpt), contextlib.closing(writer):
    if step < total_steps and watcher.should_stop(step):  # a stop asked during start-up
      raise preemption.Preempted(step, saved_step)
    while step < total_steps and not selection.should_stop:
      num_steps = _next_stop(step, total_steps, config) - step
      compiling |= num_steps not in compiled
      compiled.add(num_steps)
      rstate, chunk_metrics = train_chunk(rstate, train_data, step, num_steps)
      pending.append((step, chunk_metrics))
      step += num_steps
      final = step == total_steps
      stop = watcher.should_stop(step)
      log = step % config.log_every == 0 or final or stop
      checkpoint = step % config.checkpoint_every == 0 or final or stop
      run_eval = step % config.eval_every == 0 or final
      if not (log or checkpoint or run_eval):
        continue
      # Each dispatch's metrics come to the host once (pmean-ed: device 0's copy).
      fetched = [(start, parallel.unreplicate(m)) for start, m in pending]
      logged += fetched
      pending = []
      problem = training.first_nonfinite(
          fetched, config.optim.max_consecutive_nonfinite if skip else None)
      if problem:
        last = ckpt.latest_step()
        raise training.NonFiniteError(
            f"{problem}. Stopped without saving it; " +
            (f"the last good checkpoint is {last}" if last is not None else "no checkpoint "
             "was saved yet") + f" in {ckpt.directory}. Lower optim.learning_rate, set "
            f"optim.grad_clip_norm, or set optim.on_nonfinite='skip' to drop such updates.")
      now = time.time()
      if log:
        meta["train_seconds"] += now - interval_start
        _log_train(writer, logged, step, last_log_step, total_steps, steps_per_epoch,
                   config.batch_size, now - interval_start, compiling)
        logged, last_log_step, compiling = [], step, False
      validation_summary = None
      if run_eval and validator is not None:  # before the save, which records its score
        validation_summary = evaluate("validation", rstate.params, during)
        selection.update(step, validation_summary)
      if checkpoint or selection.should_stop:
        saved_step = save(validation_summary)
      if selection.should_stop:
        logging.info("Early stopping at step %d: validation %s has not improved on %.4f "
                     "(step %d) for %d evaluations.", step, selection.metric,
                     selection.best_value, selection.best_step, selection.patience)
      if stop and not final:
        raise preemption.Preempted(step, saved_step)
      interval_start = time.time() if log else interval_start + time.time() - now
    # The test split, once: the selected checkpoint (best on validation, or the last).
    selected_step = step
    if config.keep_best_checkpoint:
      ckpt.wait_until_finished()
      selected_step = ckpt.best_step()
    selected = (rstate.params if selected_step == step else parallel.replicate(
        ckpt.restore(selected_step, state)[0].params))  # state: a template
    with watcher.interruptible(step):
      validation_final = (None if validator is None else periodic.get(selected_step) or
                          evaluate("validation", selected, during, record=False))
      test_summary = evaluate("test", selected, config.eval.num_importance_samples)
      nll_by_k = {}
      for k in config.eval.extra_num_importance_samples:
        nll_by_k[str(k)] = tester.evaluate(selected, k)["nll"]
        logging.info("step %d test | NLL(k=%d) %.3f", step, k, nll_by_k[str(k)])
      if "nll" in test_summary:
        nll_by_k[str(config.eval.num_importance_samples)] = test_summary["nll"]
      test_summary["nll_by_k"] = nll_by_k
      test_summary["step"] = selected_step

    params = parallel.unreplicate(selected)
    if main_process:
      _write_pictures(writer, workdir, model, params, dataset, config, preprocessing, step)
    writer.flush()

  results = {
      "test": test_summary,
      "validation": validation_final,
      "selection": selection.report(selected_step, config.keep_best_checkpoint,
                                    selection.should_stop),
      "posterior_collapse": {"final": test_summary["posterior_collapse"],
                             "alarm_steps": meta["alarm_steps"]},
      "unit": "nats per example" + (" (bits_per_dim: bits per dimension)"
                                    if "bits_per_dim" in test_summary else ""),
      "dataset": {"requested": config.data.name, "used": dataset.name,
                  "source": dataset.source, "fallback_reason": fallback_reason,
                  "preprocessing": preprocessing, "num_train": num_train,
                  "num_test": len(dataset.test), "train_split": config.data.train_split,
                  "test_split": config.data.test_split,
                  "validation_split": config.data.validation_split,
                  "validation_source": dataset.validation_source,
                  "num_validation": num_validation,
                  "validation_indices": (None if dataset.validation_indices is None
                                         else dataset.validation_indices.tolist())},
      "steps": step, "planned_steps": total_steps, "epochs": step / steps_per_epoch,
      "batch_size": config.batch_size,
      "skipped_updates": (int(parallel.unreplicate(rstate.opt_state).total_notfinite)
                          if skip else 0),
      "wall_time_s": time.time() - start_time, "train_time_s": meta["train_seconds"],
      "seconds_per_epoch": meta["train_seconds"] / max(step / steps_per_epoch, 1e-9),
      "device_count": parallel.device_count(), "process_count": jax.process_count(),
      "platform": jax.default_backend(),
      "seed": config.seed, "eval_seed": config.eval.seed, "versions": workdir_lib.versions(),
  }
  if main_process:
    workdir_lib.write_json(os.path.join(workdir, workdir_lib.RESULTS_FILE), results)
  logging.info("Done on %s in %.0fs: %s", dataset.name, results["wall_time_s"],
               describe(test_summary))
  return results


def _log_train(writer, logged: list, step: int, last_log_step: int, total_steps: int,
               steps_per_epoch: int, batch_size: int, seconds: float, compiling: bool) -> None:
  """Means over the steps since the last log (finite values: skipped updates excluded)."""
  stacked = {k: np.concatenate([m[k] for _, m in logged]) for k in logged[0][1]}
  counters = {k: stacked.pop(k)[-1] for k in ("skipped_updates", "consecutive_nonfinite")
              if k in stacked}
  means = {k: float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")
           for k, v in stacked.items()}
  steps_per_s = (step - last_log_step) / seconds
  skipped = int(counters.get("skipped_updates", 0))
  logging.info("step %d/%d (epoch %.2f) | %s | %.1f steps/s, %.0f examples/s%s, ETA %.0fs%s",
               step, total_steps, step / steps_per_epoch, _format(means), steps_per_s,
               steps_per_s * batch_size, " (incl. compilation)" if compiling else "",
               (total_steps - step) / steps_per_s,
               f" | {skipped} non-finite updates skipped so far" if skipped else "")
  writer.write_scalars(step, {f"train/{k}": v for k, v in means.items()})
  writer.write_scalars(step, {"train/steps_per_sec": steps_per_s,
                              "train/examples_per_sec": steps_per_s * batch_size,
                              **({"train/skipped_updates": skipped} if counters else {})})


def _write_pictures(writer, workdir: str, model: interface.Model, params: dict,
                    dataset: datasets.Dataset, config: ml_collections.ConfigDict,
                    preprocessing: str, step: int) -> None:
  """Reconstructions of the first test images (as the model sees them) and samples."""
  count = min(config.images.num_reconstructions, len(dataset.test))
  test = {k: v[:count] for k, v in dataset.arrays("test").items()}
  batch = evaluation.eval_batch(test, np.arange(count), preprocessing, config.eval.seed,
                                dataset.render)
  pictures = images.model_pictures(model, params, batch, config.images.num_samples,
                                   config.eval.seed)
  for name, picture in pictures.items():
    images.save_png(os.path.join(workdir, f"{name}.png"), picture)
  writer.write_images(step, {k: v[None] for k, v in pictures.items()})
