"""Model selection on the validation split: the best evaluation so far, and early stopping.

Every periodic evaluation scores the model on validation; this record keeps the
curve, the best score and its step, and how many evaluations have passed
without improvement. ``keep_best_checkpoint`` keeps the checkpoint with the best
score (orbax, scored at save time with ``score``) and early stopping ends the
run after ``patience`` evaluations without improvement. The test split takes
no part: it is evaluated once, after training, on the selected checkpoint.

The record travels in every checkpoint's meta, so a resumed run continues the
same curve and the same patience count.
"""

from __future__ import annotations

from typing import Any, Optional

METRICS = ("neg_elbo", "nll")  # validation figures to select on; lower is better


class Selection:
  """The validation curve and the early-stopping count of one run."""

  def __init__(self, metric: str, patience: int, saved: Optional[dict[str, Any]] = None):
    self.metric, self.patience = metric, patience
    saved = saved or {}
    self.curve: list[list[float]] = [list(p) for p in saved.get("curve", [])]
    self.best_step: Optional[int] = saved.get("best_step")
    self.best_value: Optional[float] = saved.get("best_value")
    self.evaluations_since_best: int = saved.get("evaluations_since_best", 0)

  def score(self, summary: dict[str, Any]) -> float:
    """The selection figure of a validation summary."""
    return float(summary[self.metric])

  def update(self, step: int, summary: dict[str, Any]) -> bool:
    """Records the validation evaluation at ``step``; returns whether it is the best yet."""
    value = self.score(summary)
    if self.curve and self.curve[-1][0] == step:  # re-evaluated after a resume: once only
      return step == self.best_step
    self.curve.append([step, value])
    if self.best_value is None or value < self.best_value:
      self.best_step, self.best_value, self.evaluations_since_best = step, value, 0
      return True
    self.evaluations_since_best += 1
    return False

  @property
  def should_stop(self) -> bool:
    """Early stopping: ``patience`` evaluations in a row did not improve on the best."""
    return self.patience > 0 and self.evaluations_since_best >= self.patience

  def state(self) -> dict[str, Any]:
    """For the checkpoint's meta (JSON)."""
    return {"curve": self.curve, "best_step": self.best_step, "best_value": self.best_value,
            "evaluations_since_best": self.evaluations_since_best}

  def report(self, selected_step: int, keep_best: bool, stopped_early: bool) -> dict[str, Any]:
    """results.json's "selection": which checkpoint was tested, and why."""
    if keep_best and self.best_step is not None:
      reason = (f"lowest validation {self.metric} of the {len(self.curve)} evaluations "
                f"(keep_best_checkpoint)")
    else:
      reason = ("the last step (keep_best_checkpoint is off)" if self.curve else
                "the last step (no validation split: nothing to select on)")
    value = next((v for s, v in self.curve if s == selected_step), None)
    return {"split": "validation", "metric": self.metric, "checkpoint_step": selected_step,
            "value": value, "reason": reason, "best_step": self.best_step,
            "best_value": self.best_value, "patience": self.patience,
            "stopped_early": stopped_early, "curve": self.curve}
