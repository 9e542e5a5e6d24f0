"""One member of a population, on the host: its workdir, checkpoints, metrics and selection.

The devices hold every member's train state stacked on a member axis (``population``);
what a run keeps on the host is kept here once per member, so each member's workdir
ends with exactly the files a solo run writes: config.json, metrics, checkpoints of
its own slice at its own size, pictures and results.json. ``experiments.tables``,
``pictures``, ``evaluate`` and a resume read a member's workdir as any run's.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers

from vae_jax import parallel
from vae_jax.data import datasets
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.models import interface
from vae_jax.pictures import images
from vae_jax.training import checkpoints
from vae_jax.training import selection as selection_lib
from vae_jax.training import workdir as workdir_lib

ACTIVE, STOPPED, FAILED = "active", "stopped", "failed"


@dataclasses.dataclass(eq=False)
class Member:
  """A run of a population (a solo run is a population of one)."""
  index: int
  config: ml_collections.ConfigDict
  workdir: str
  planned: Optional[workdir_lib.Plan]
  model: Optional[interface.Model] = None    # at the member's own size
  template: Any = None                        # its step-0 state: restores are shaped like it
  ckpt: Optional[checkpoints.Checkpointer] = None
  selection: Optional[selection_lib.Selection] = None
  writer: Optional[metric_writers.MetricWriter] = None
  meta: dict[str, Any] = dataclasses.field(default_factory=lambda: {
      "alarm_steps": [], "train_seconds": 0.0, "selection": {}})
  step: int = 0                 # its own step: a stopped member's stays where it stopped
  status: str = ACTIVE          # ACTIVE, STOPPED (early stopping) or FAILED (non-finite)
  error: Optional[Exception] = None
  restored: bool = False
  saved_step: Optional[int] = None
  periodic: dict[int, dict] = dataclasses.field(default_factory=dict)  # step -> validation
  logged: list = dataclasses.field(default_factory=list)  # (start, metrics) since the log
  prefix: str = ""              # '' in a solo run's log lines; "name: " in a population's

  @property
  def name(self) -> str:
    return os.path.basename(self.workdir)

  def restore(self, step: Optional[int] = None) -> Optional[Any]:
    """Its latest intact checkpoint (or ``step``'s): sets step, meta, selection, status."""
    restored = (self.ckpt.restore_latest(self.template) if step is None
                else self.ckpt.restore(step, self.template))
    if restored is None:
      state = self.template
    else:
      state, saved_meta = restored
      self.meta.update({k: saved_meta[k] for k in self.meta if k in saved_meta})
      self.restored, self.saved_step = True, int(state.step)
    self.step = int(state.step)
    config = self.config.selection
    self.selection = selection_lib.Selection(config.metric, config.patience,
                                             self.meta["selection"])
    self.status = STOPPED if self.selection.should_stop else ACTIVE
    return state

  def save(self, state: Any, steps_per_epoch: int, score: Optional[float]) -> None:
    """Checkpoints its own-size ``state`` (host arrays) at its step, with its meta.

    A checkpoint already at this step is kept: a population resumed from an older step
    (its members' saves were cut short unevenly) recomputes exactly what it holds.
    """
    self.meta["selection"] = self.selection.state()
    if self.step in self.ckpt.all_steps():
      self.saved_step = self.step
      return
    self.ckpt.save(self.step, state, dict(
        self.meta, epoch=self.step // steps_per_epoch, step_in_epoch=self.step % steps_per_epoch,
        examples_seen=self.step * self.config.batch_size), score)
    self.saved_step = self.step

  def record_validation(self, step: int, summary: dict[str, Any]) -> None:
    """A periodic validation: metrics, the selection curve and the collapse alarm."""
    self.writer.write_scalars(step, {f"validation/{k}": v
                                     for k, v in evaluation.scalars(summary).items()})
    self.periodic.clear()
    self.periodic[step] = summary
    if summary["posterior_collapse"]:
      self.meta["alarm_steps"].append(step)
      logging.warning("%sstep %d: %s", self.prefix, step, summary["posterior_collapse"])
    self.selection.update(step, summary)

  def results(self, dataset: datasets.Dataset, fallback_reason: Optional[str], preprocessing: str,
              test_summary: dict, validation_final: Optional[dict], selected_step: int,
              total_steps: int, steps_per_epoch: int, skipped_updates: int,
              start_time: float) -> dict[str, Any]:
    """results.json: the selected checkpoint's test figures and how the run went."""
    config, num_train = self.config, len(dataset.train)
    num_validation = 0 if dataset.validation is None else len(dataset.validation)
    return {
        "test": test_summary,
        "validation": validation_final,
        "selection": self.selection.report(selected_step, config.keep_best_checkpoint,
                                           self.selection.should_stop),
        "posterior_collapse": {"final": test_summary["posterior_collapse"],
                               "alarm_steps": self.meta["alarm_steps"]},
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
        "steps": self.step, "planned_steps": total_steps,
        "epochs": self.step / steps_per_epoch, "batch_size": config.batch_size,
        "skipped_updates": skipped_updates,
        "wall_time_s": time.time() - start_time, "train_time_s": self.meta["train_seconds"],
        "seconds_per_epoch": self.meta["train_seconds"] / max(self.step / steps_per_epoch,
                                                              1e-9),
        "device_count": parallel.device_count(), "process_count": jax.process_count(),
        "platform": jax.default_backend(),
        "seed": config.seed, "eval_seed": config.eval.seed, "versions": workdir_lib.versions(),
    }

  def write_pictures(self, params: Any, dataset: datasets.Dataset, preprocessing: str,
                     step: int) -> None:
    """Reconstructions of the first test images (as the model sees them) and samples."""
    config = self.config
    count = min(config.images.num_reconstructions, len(dataset.test))
    test = {k: v[:count] for k, v in dataset.arrays("test").items()}
    batch = evaluation.eval_batch(test, np.arange(count), preprocessing, config.eval.seed,
                                  dataset.render)
    pictures = images.model_pictures(self.model, params, batch, config.images.num_samples,
                                     config.eval.seed)
    for name, picture in pictures.items():
      images.save_png(os.path.join(self.workdir, f"{name}.png"), picture)
    self.writer.write_images(step, {k: v[None] for k, v in pictures.items()})
