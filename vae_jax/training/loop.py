"""train_population: runs of any model family, from configs to results.json, as one program.

A solo run (``train_and_evaluate``) is a population of one. The loop dispatches chunks
of ``steps_per_dispatch`` scanned steps to all devices; Python runs once per chunk, at
log, evaluation and checkpoint points. Its parts: ``run.set_up`` (data, models, restored
states), ``_dispatch_loop`` (training, non-finite checks, logs), ``_validate_and_save``
(selection, early stopping, checkpoints) and ``_finish`` (the test split, once, on each
member's selected checkpoint). What differs between members, and how it enters the
program, is ``population``'s; what is kept per member on the host, ``members``'.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from vae_jax import parallel
from vae_jax import validation
from vae_jax.data import datasets
from vae_jax.data import idx
from vae_jax.data import tfds_files
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.training import checkpoints
from vae_jax.training import members as members_lib
from vae_jax.training import population
from vae_jax.training import preemption
from vae_jax.training import step as training
from vae_jax.training import run as run_lib
from vae_jax.training import workdir as workdir_lib
from vae_jax.training.members import ACTIVE, FAILED, STOPPED

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
  outcome = train_population([config], [workdir], overwrite=overwrite,
                             allow_changes=allow_changes)[0]
  if isinstance(outcome, Exception):
    raise outcome
  return outcome


def train_population(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str], *,
                     overwrite: bool = False, allow_changes: Sequence[str] = (),
                     split: str = "auto") -> list[dict[str, Any] | Exception]:
  """Trains the runs of ``configs`` (one population: ``population.compatibility_key``
  equal) together, each in its workdir; returns each one's results, or the error that
  ended it (a non-finite member stops alone; the others go on). ``split``: how the
  members share the devices (``population.choose_split``).
  """
  start_time = time.time()
  for config in configs:
    validation.validate(config)
  if len({population.compatibility_key(c, maskable=True) for c in configs}) > 1:
    raise validation.ConfigError(
        f"These runs differ in more than seed, {', '.join(population.HYPER_FIELDS)} and "
        f"model.latent_dim, so they cannot train as one population.")
  workdirs = [os.path.abspath(w) for w in workdirs]
  main_process = jax.process_index() == 0  # alone writes the workdirs' files
  with contextlib.ExitStack() as stack:
    planned, refused = [None] * len(configs), None
    if main_process:
      try:
        for i, (config, workdir) in enumerate(zip(configs, workdirs)):
          stack.enter_context(workdir_lib.lock(workdir))
          planned[i] = workdir_lib.plan(workdir, config, overwrite=overwrite,
                                        allow_changes=allow_changes)
      except Exception as e:  # pylint: disable=broad-except  # re-raised below
        refused = e
    if not parallel.process_zero_agrees(refused is None):  # other processes stop too
      raise refused or workdir_lib.WorkdirError(
          f"Process 0 could not use {workdirs[0]}; its log says why.")
    members = [members_lib.Member(i, c, w, p)
               for i, (c, w, p) in enumerate(zip(configs, workdirs, planned))]
    run = run_lib.set_up(members, start_time, main_process, split)
    return _train(run)


def _train(run: run_lib.Run) -> list[dict[str, Any] | Exception]:
  """The dispatch loop and the final evaluation, with every member's files closed after."""
  members = run.members
  with preemption.PreemptionWatcher(members[0].ckpt.reached_preemption) as watcher, \
       contextlib.ExitStack() as closing:
    for member in members:
      closing.callback(member.writer.close)
      closing.callback(member.ckpt.close)
    _dispatch_loop(run, watcher)
    results = _finish(run, watcher)
  for member, result in zip(members, results):
    if isinstance(result, dict):
      logging.info("%sDone on %s in %.0fs: %s", member.prefix, run.dataset.name,
                   result["wall_time_s"], describe(result["test"]))
  return results


def _dispatch_loop(run: run_lib.Run, watcher: preemption.PreemptionWatcher) -> None:
  """Trains until the total, or until every member has stopped; saves on the way."""
  config, skip = run.config, run.config.optim.on_nonfinite == "skip"
  pending, last_log_step, interval_start = [], run.step, time.time()
  compiled, compiling = set(), False  # chunk lengths seen; a new one means a compilation
  rhyper = run.place(run.hyper)
  saved_step = run.step if any(m.restored for m in run.members) else None
  if run.step < run.total_steps and watcher.should_stop(run.step):  # asked during start-up
    raise preemption.Preempted(run.step, saved_step)
  while run.step < run.total_steps and run.active():
    num_steps = _next_stop(run.step, run.total_steps, config) - run.step
    compiling |= num_steps not in compiled
    compiled.add(num_steps)
    run.rstate, chunk_metrics = run.train_chunk(run.rstate, rhyper, run.train_data, run.step,
                                                num_steps)
    pending.append((run.step, chunk_metrics))
    run.step += num_steps
    for member in run.active():
      member.step = run.step
    final = run.step == run.total_steps
    stop = watcher.should_stop(run.step)
    log = run.step % config.log_every == 0 or final or stop
    checkpoint = run.step % config.checkpoint_every == 0 or final or stop
    run_eval = run.step % config.eval_every == 0 or final
    if not (log or checkpoint or run_eval):
      continue
    # Each dispatch's metrics come to the host once (pmean-ed over a batch split: device 0's).
    fetched = [(start, run.host(m)) for start, m in pending]
    pending = []
    for member in run.active():
      mine = fetched if run.solo else [
          (start, {k: v[member.index] for k, v in m.items()}) for start, m in fetched]
      member.logged += mine
      problem = training.first_nonfinite(
          mine, config.optim.max_consecutive_nonfinite if skip else None)
      if problem:
        last = member.ckpt.latest_step()
        error = training.NonFiniteError(
            f"{member.prefix}{problem}. Stopped without saving it; " +
            (f"the last good checkpoint is {last}" if last is not None else "no checkpoint "
             "was saved yet") + f" in {member.ckpt.directory}. Lower optim.learning_rate, set "
            f"optim.grad_clip_norm, or set optim.on_nonfinite='skip' to drop such updates.")
        if run.solo:
          raise error
        logging.warning("%s", error)
        member.status, member.error = FAILED, error
    now = time.time()
    if log:
      _log_train(run, last_log_step, now - interval_start, compiling)
      last_log_step, compiling = run.step, False
    saved_step = _validate_and_save(run, run_eval, checkpoint, saved_step) or saved_step
    rhyper = _refresh_hyper(run, rhyper)
    if stop and not final:
      raise preemption.Preempted(run.step, saved_step)
    interval_start = time.time() if log else interval_start + time.time() - now


def _refresh_hyper(run: run_lib.Run, rhyper: population.Hyper) -> population.Hyper:
  """Freezes members that stopped or failed (their learning rate becomes 0)."""
  if run.solo:
    return rhyper
  active = np.asarray([m.status == ACTIVE for m in run.members], np.float32)
  if np.array_equal(active, run.hyper[population.ACTIVE]):
    return rhyper
  run.hyper[population.ACTIVE] = active
  return run.place(run.hyper)


def _validate_and_save(run: run_lib.Run, run_eval: bool, checkpoint: bool,
                       saved_step: Optional[int]) -> Optional[int]:
  """Validation (selection, early stopping), then checkpoints; returns the saved step.

  A stop asked during the validation drops it with the steps since ``saved_step`` (the
  rerun redoes them exactly), so the time to exit does not grow with its k. One asked
  before it (during the dispatch) lets it finish and saves, as every stop in training.
  """
  config, active = run.config, run.active()
  during = config.eval.num_importance_samples_during_training
  has_validation = run.dataset.validation is not None
  summaries = {}
  stopping_already = preemption.requested() is not None

  def abandon():
    if stopping_already:
      return contextlib.nullcontext()
    return preemption.abandonable(lambda: preemption.Preempted(run.step, saved_step))
  if run_eval and has_validation:  # before the saves, which record their scores
    with abandon():
      summaries = run.evaluate("validation", active, during)
    for member in active:
      logging.info("%sstep %d validation | %s", member.prefix, run.step,
                   describe(summaries[member.index]))
      member.record_validation(run.step, summaries[member.index])
  stopping = [m for m in active if m.selection.should_stop]
  to_save = active if checkpoint else stopping
  if not to_save:
    return None
  if config.keep_best_checkpoint:  # scored on validation; never on test
    missing = [m for m in to_save if m.index not in summaries]
    if missing:
      with abandon():
        summaries.update(run.evaluate("validation", missing,
                                      during if config.selection.metric == "nll" else 0))
  host = run.host_state()
  for member in to_save:
    score = (member.selection.score(summaries[member.index])
             if config.keep_best_checkpoint else None)
    member.save(run.own_state(host, member), run.steps_per_epoch, score)
  for member in stopping:
    member.status = STOPPED
    selection = member.selection
    logging.info("%sEarly stopping at step %d: validation %s has not improved on %.4f "
                 "(step %d) for %d evaluations.", member.prefix, run.step, selection.metric,
                 selection.best_value, selection.best_step, selection.patience)
  return run.step


def _finish(run: run_lib.Run, watcher: preemption.PreemptionWatcher) -> list[dict | Exception]:
  """The test split, once per member: its selected checkpoint (best on validation, or
  its last), evaluated in one batched program per model; then pictures and results."""
  config, done = run.config, [m for m in run.members if m.status != FAILED]
  host = None if run.solo else run.host_state().params
  selected, params = {}, {}
  for member in done:
    selected[member.index] = member.step
    if config.keep_best_checkpoint:
      member.ckpt.wait_until_finished()
      selected[member.index] = member.ckpt.best_step()
    if selected[member.index] != member.step:
      params[member.index] = member.ckpt.restore(selected[member.index],
                                                 member.template)[0].params
    elif not run.solo:
      params[member.index] = run.own_params(host, member)
  # A solo run's current parameters stay on the devices (as they always were).
  params_of = None if run.solo and not params else params.__getitem__
  during, k = config.eval.num_importance_samples_during_training, config.eval.num_importance_samples
  with watcher.interruptible(run.step):
    validation_final = {m.index: m.periodic.get(selected[m.index]) for m in done}
    redo = [m for m in done if validation_final[m.index] is None]
    if redo and run.dataset.validation is not None:
      validation_final.update(run.evaluate("validation", redo, during, params_of))
    tests = run.evaluate("test", done, k, params_of)
    for member in done:
      logging.info("%sstep %d test | %s", member.prefix, run.step, describe(tests[member.index]))
      member.writer.write_scalars(run.step, {
          f"test/{k}": v for k, v in evaluation.scalars(tests[member.index]).items()})
    nll_by_k = {m.index: {} for m in done}
    for extra_k in config.eval.extra_num_importance_samples:
      for index, summary in run.evaluate("test", done, extra_k, params_of).items():
        nll_by_k[index][str(extra_k)] = summary["nll"]
        logging.info("%sstep %d test | NLL(k=%d) %.3f", run.members[index].prefix, run.step,
                     extra_k, summary["nll"])
  skipped = ([0] * len(run.members) if config.optim.on_nonfinite != "skip" else
             np.atleast_1d(run.host_state().opt_state.total_notfinite))
  results = []
  for member in run.members:
    if member.status == FAILED:
      results.append(member.error)
      continue
    test = tests[member.index]
    if "nll" in test:
      nll_by_k[member.index][str(k)] = test["nll"]
    test["nll_by_k"] = nll_by_k[member.index]
    test["step"] = selected[member.index]
    if run.main_process:
      own = params.get(member.index)
      member.write_pictures(parallel.unreplicate(run.rstate.params) if own is None else own,
                            run.dataset, run.preprocessing, member.step)
    member.writer.flush()
    result = member.results(run.dataset, run.fallback_reason, run.preprocessing, test,
                            validation_final.get(member.index), selected[member.index],
                            run.total_steps, run.steps_per_epoch,
                            int(skipped[member.index]), run.start_time)
    if run.main_process:
      workdir_lib.write_json(os.path.join(member.workdir, workdir_lib.RESULTS_FILE), result)
    results.append(result)
  return results


def _log_train(run: run_lib.Run, last_log_step: int, seconds: float, compiling: bool) -> None:
  """Means over the steps since the last log (finite values: skipped updates excluded),
  to each member's metrics; one log line (a population's: the spread over members)."""
  steps_per_s = (run.step - last_log_step) / seconds
  losses, text, note = [], "", ""
  for member in [m for m in run.members if m.logged]:
    stacked = {k: np.concatenate([m[k] for _, m in member.logged]) for k in member.logged[0][1]}
    counters = {k: stacked.pop(k)[-1] for k in ("skipped_updates", "consecutive_nonfinite")
                if k in stacked}
    means = {k: float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")
             for k, v in stacked.items()}
    member.logged = []
    member.meta["train_seconds"] += seconds
    skipped = int(counters.get("skipped_updates", 0))
    member.writer.write_scalars(run.step, {f"train/{k}": v for k, v in means.items()})
    member.writer.write_scalars(run.step, {
        "train/steps_per_sec": steps_per_s,
        "train/examples_per_sec": steps_per_s * member.config.batch_size,
        **({"train/skipped_updates": skipped} if counters else {})})
    if member.status != FAILED:
      losses.append(means["loss"])
    text, note = _format(means), (f" | {skipped} non-finite updates skipped so far"
                                  if skipped else "")
  if not run.solo:
    text, note = (f"{len(losses)} of {len(run.members)} members training, loss median "
                  f"{np.median(losses):.4g} (min {np.min(losses):.4g}, max "
                  f"{np.max(losses):.4g})" if losses else "no member training"), ""
  logging.info("step %d/%d (epoch %.2f) | %s | %.1f steps/s, %.0f examples/s%s, ETA %.0fs%s",
               run.step, run.total_steps, run.step / run.steps_per_epoch, text, steps_per_s,
               steps_per_s * run.config.batch_size * max(len(losses), 1),
               " (incl. compilation)" if compiling else "",
               (run.total_steps - run.step) / steps_per_s, note)
