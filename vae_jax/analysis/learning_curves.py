"""A sweep's training loss over training, per setting: DIR/tables/learning_curves.md.

A final figure says which setting ends ahead, not why. A setting that loses while its loss
still falls steeply at the last step lost to the budget; one that flattened out above the
others lost on its own. Runs whose periodic evaluations are sparse or absent (a budget of a
few epochs evaluated once at the end) have only the loop's training log to tell these apart.
The loop logs each member's loss averaged over the steps since its previous log
(``train/loss`` in metrics.jsonl); this table pools a setting's seeds at each logged step,
mean ± std (ddof = 1) as the ablation table does, and adds how much the loss fell over the
last logged interval.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from vae_jax.analysis import tables

LEARNING_CURVES = "learning_curves.md"
KEY = "train/loss"
# Steps shown as columns at most (evenly spread over the logged ones, the last always shown):
# enough to see a curve's shape, few enough for a page.
MAX_COLUMNS = 8


def _curve(ab: tables.Ablation, name: str) -> dict[int, float]:
  """{step: logged training loss} of one member; {} without metrics.jsonl."""
  records = tables.member_metrics(ab.workdir, name)
  return {step: float(r[KEY]) for step, r in sorted(records.items())
          if isinstance(r.get(KEY), (int, float))}


def curves(ab: tables.Ablation) -> list[tuple[tables.Row, dict[int, list[float]]]]:
  """Each row with {step: [its seeds' losses]} at the steps every one of its seeds logged."""
  out = []
  for row in ab.rows:
    per_seed = [_curve(ab, name) for name in row.members]
    steps = set.intersection(*(set(c) for c in per_seed)) if per_seed else set()
    out.append((row, {s: [c[s] for c in per_seed] for s in sorted(steps)}))
  return out


def _has_curve(rows: list[tuple[tables.Row, dict[int, list[float]]]]) -> bool:
  """Whether some setting has a curve: at least two logged steps common to its seeds."""
  return any(len(c) >= 2 for _, c in rows)


def _columns(steps: list[int]) -> list[int]:
  if len(steps) <= MAX_COLUMNS:
    return steps
  picks = np.linspace(0, len(steps) - 1, MAX_COLUMNS).round().astype(int)
  return [steps[i] for i in sorted(set(picks))]


def _stat(values: Optional[list[float]]) -> str:
  if not values:
    return "—"
  mean = f"{np.mean(values):.2f}"
  return mean if len(values) == 1 else f"{mean} ± {np.std(values, ddof=1):.2f}"


def to_markdown(ab: tables.Ablation,
                rows: Optional[list[tuple[tables.Row, dict[int, list[float]]]]] = None) -> str:
  """One row per setting: the loss at up to MAX_COLUMNS logged steps and its last fall."""
  rows = curves(ab) if rows is None else rows
  steps = _columns(sorted({s for _, c in rows for s in c}))
  fields = [tables.FIELD_NAMES.get(f, f) for f in ab.swept]
  header = fields + ["n"] + [f"step {s}" for s in steps] + ["fall over the last interval"]
  lines = [f"**Training loss** ({KEY}: each member's mean over the steps since its previous "
           f"log) of {ab.config or 'the sweep'}: {tables.summary_line(ab)}; nats per "
           "example, mean ± std over seeds. The last column is the loss at the last common "
           "logged step but one minus the loss at the last: how fast it was still falling.",
           "", "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
  for row, curve in rows:
    cells = [tables.format_value(row.setting[f]) for f in ab.swept] + [str(row.n)]
    cells += [_stat(curve.get(s)) for s in steps]
    logged = sorted(curve)
    falls = ([a - b for a, b in zip(curve[logged[-2]], curve[logged[-1]])]
             if len(logged) >= 2 else None)
    cells.append(_stat(falls))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write(ab: tables.Ablation) -> list[str]:
  """Writes DIR/tables/learning_curves.md where some setting has a curve; returns [its path]."""
  rows = curves(ab)
  if not _has_curve(rows):
    return []
  path = os.path.join(ab.workdir, tables.TABLES_DIR, LEARNING_CURVES)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(to_markdown(ab, rows))
  return [path]
