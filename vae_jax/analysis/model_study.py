"""A study of several disentanglement models (``objective.regularizer`` swept), laid out as
Locatello et al. (2019) report theirs: each model with its own hyperparameter, each
metric as mean ± std over seeds per value, and each metric's spread over all of a
model's runs (values and seeds together) side by side: the paper's violin plots, which
show whether any model dominates and how much seeds move a score; and per model and
metric, the seeds' spread against the hyperparameter's.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any, Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vae_jax.analysis import tables

MODEL_FIELD = "objective.regularizer"
# Each model's name in the paper and the field its sweep varies.
MODELS = {"beta_vae": ("β-VAE", "objective.beta"),
          "annealed_vae": ("AnnealedVAE", "objective.c_max"),
          "factor_vae": ("FactorVAE", "objective.gamma"),
          "dip_vae_i": ("DIP-VAE-I", "objective.lambda_od"),
          "dip_vae_ii": ("DIP-VAE-II", "objective.lambda_od"),
          "beta_tc_vae": ("β-TCVAE", "objective.beta")}
# The columns besides the disentanglement scores.
BASE_METRICS = ("rate", "distortion")
TABLE_FILE, PLOT_FILE = "models.md", "metrics_by_model.png"


def applies(ab: tables.Ablation) -> bool:
  """Whether the sweep compares models (its members set ``objective.regularizer``)."""
  return MODEL_FIELD in ab.swept


def _model(setting: dict[str, Any]) -> str:
  return str(setting.get(MODEL_FIELD) or "beta_vae")


def _in_order(models) -> list[str]:
  """The models present, in the paper's order (``MODELS``), any other after them."""
  order = list(MODELS)
  return sorted(dict.fromkeys(models), key=lambda m: (order.index(m) if m in order
                                                      else len(order), m))


def columns(ab: tables.Ablation) -> list[str]:
  return [k for k in ab.metrics if k in BASE_METRICS or k.startswith("disentanglement.")]


def to_markdown(ab: tables.Ablation) -> str:
  """One table per model: its hyperparameter's values as rows, the metrics as columns."""
  names = {key: md for key, md, *_ in tables.METRICS}
  keys = columns(ab)
  out = [f"# Models ({tables.summary_line(ab)})", ""]
  for model in _in_order(_model(r.setting) for r in ab.rows):
    title, field = MODELS.get(model, (model, None))
    rows = [r for r in ab.rows if _model(r.setting) == model]
    out += [f"## {title}", "",
            "| " + " | ".join([tables.FIELD_NAMES.get(field, field or "setting"), "n"]
                             + [names[k] for k in keys]) + " |",
            "|" + "---:|" * (len(keys) + 2)]
    for row in rows:
      cells = [tables.format_value(row.setting.get(field)) if field else
               tables.setting_label(row.setting), str(row.n)]
      for key in keys:
        stat = row.stats.get(key)
        cells.append("" if stat is None else f"{stat.mean:.3f}" + (
            f" ± {stat.std:.3f}" if stat.std is not None else ""))
      out.append("| " + " | ".join(cells) + " |")
    out.append("")
  return "\n".join(out + seeds_against_settings(ab))


def seed_and_setting_spread(ab: tables.Ablation, model: str,
                            key: str) -> Optional[tuple[float, float]]:
  """(the mean over the model's settings of the std over seeds, the std over its settings of
  the seed means) of ``key``; None without two settings of two or more seeds."""
  stats = [r.stats[key] for r in ab.rows if _model(r.setting) == model and key in r.stats
           and r.stats[key].std is not None]
  if len(stats) < 2:
    return None
  return (float(np.mean([s.std for s in stats])),
          float(np.std([s.mean for s in stats], ddof=1)))


def seeds_against_settings(ab: tables.Ablation) -> list[str]:
  """Markdown lines: per metric and model, whether seeds or the hyperparameter moved it more.

  Locatello et al.'s finding that random seeds matter as much as hyperparameters, put as
  two spreads of the same metric: a pair whose first figure is the larger is one where the
  seeds moved the score more than the model's hyperparameter values did.
  """
  names = {key: md for key, md, *_ in tables.METRICS}
  models = _in_order(_model(r.setting) for r in ab.rows)
  lines, seeds_win, pairs = [], 0, 0
  for key in columns(ab):
    cells = []
    for model in models:
      pair = seed_and_setting_spread(ab, model, key)
      cells.append("" if pair is None else f"{pair[0]:.3g} / {pair[1]:.3g}")
      if pair is not None and key.startswith("disentanglement."):
        pairs += 1
        seeds_win += pair[0] > pair[1]
    lines.append(f"| {names[key]} | " + " | ".join(cells) + " |")
  if not pairs:
    return []
  return ["## Seeds against hyperparameters", "",
          "Per model: the mean over its settings of the std over seeds / the std over its "
          "settings of the seed means. The seeds moved a disentanglement score more than the "
          f"hyperparameter did in {seeds_win} of {pairs} (model, score) pairs.", "",
          "| metric | " + " | ".join(MODELS.get(m, (m,))[0] for m in models) + " |",
          "|---|" + "---:|" * len(models), *lines, ""]


def spread(ab: tables.Ablation, key: str) -> dict[str, list[float]]:
  """Every finished run's value of ``key`` by model (all its values and seeds)."""
  out: dict[str, list[float]] = {}
  for member in ab.with_status("done"):
    value = tables.metric_value(member.results, key)
    if value is not None:
      out.setdefault(_model(member.setting), []).append(float(value))
  return out


def plot_spread(ab: tables.Ablation, path: str) -> None:
  """Each metric's values over each model's runs: a box and every run as a point."""
  names = {key: md for key, md, *_ in tables.METRICS}
  keys = columns(ab)
  cols = min(4, len(keys))
  rows = -(-len(keys) // cols)
  fig = Figure(figsize=(3.6 * cols, 2.8 * rows + 0.6), layout="constrained")
  FigureCanvasAgg(fig)
  fig.suptitle("\n".join(textwrap.wrap(tables.summary_line(ab), 120)), fontsize=8)
  jitter = np.random.default_rng(0)
  for i, key in enumerate(keys):
    ax = fig.add_subplot(rows, cols, i + 1)
    by_model = spread(ab, key)
    labels = _in_order(by_model)
    ax.boxplot([by_model[m] for m in labels], widths=0.5, showfliers=False)
    for j, model in enumerate(labels):
      values = by_model[model]
      ax.plot(j + 1 + jitter.uniform(-0.15, 0.15, len(values)), values, ".", alpha=0.6)
    ax.set_xticks(range(1, len(labels) + 1),
                  [MODELS.get(m, (m,))[0] for m in labels], rotation=45, fontsize=7)
    ax.set_title(names[key], fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
  tmp = f"{path}.tmp.png"
  fig.savefig(tmp, dpi=120)
  os.replace(tmp, path)


def write(ab: tables.Ablation) -> list[str]:
  """DIR/tables/models.md and DIR/plots/metrics_by_model.png; their paths."""
  table = os.path.join(ab.workdir, tables.TABLES_DIR, TABLE_FILE)
  plot = os.path.join(ab.workdir, tables.PLOTS_DIR, PLOT_FILE)
  for path in (table, plot):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(table + ".tmp", "w", encoding="utf-8") as f:
    f.write(to_markdown(ab) + "\n")
  os.replace(table + ".tmp", table)
  plot_spread(ab, plot)
  return [table, plot]
