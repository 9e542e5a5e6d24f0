"""Plots of a sweep's ablation: the rate–distortion curve over β, capacity over latent dim.

β weighs rate R = E KL(q(z|x) || p(z)) (the nats the code carries) against
distortion D = -E_q log p(x|z); the points (R, D) across β trace the
rate–distortion trade-off of Alemi et al. 2018 ("Fixing a broken ELBO"), on
which -ELBO = R + D is constant along lines of slope -1. Active units show how
much of the latent space a β or a latent dim actually uses: at most latent_dim
units can be active, and posterior collapse shows as few. Each point is the
mean over seeds with ±1 sample-std error bars (none when one seed finished).

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no display,
no global backend state) and written to DIR/plots/, a generated folder.
"""

from __future__ import annotations

import os
import textwrap
from typing import Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from vae_jax import tables

BETA = "objective.beta"
LATENT_DIM = "model.latent_dim"


def _label(field: str, value) -> str:
  return f"{tables.FIELD_NAMES.get(field, field)}={tables.format_value(value)}"


def _series(ab: tables.Ablation, x_field: str) -> list[tuple[str, list[tables.Row]]]:
  """Rows grouped by the other swept fields (one curve each), numeric x only, sorted by x."""
  others = [f for f in ab.swept if f != x_field]
  groups: dict[str, list[tables.Row]] = {}
  for row in ab.rows:
    if isinstance(row.setting.get(x_field), (int, float)):
      label = ", ".join(_label(f, row.setting[f]) for f in others)
      groups.setdefault(label, []).append(row)
  return [(label, sorted(rows, key=lambda r: r.setting[x_field])) for label, rows in groups.items()]


def _stats(rows: list[tables.Row], key: str) -> tuple[list[tables.Row], np.ndarray, np.ndarray]:
  """(rows that report key, their means, their stds with 0 for single seeds)."""
  rows = [r for r in rows if key in r.stats]
  means = np.array([r.stats[key].mean for r in rows])
  stds = np.array([r.stats[key].std or 0.0 for r in rows])
  return rows, means, stds


def _figure(ab: tables.Ablation, what: str):
  fig = Figure(figsize=(6.4, 4.8), layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  ax.set_title("\n".join([what] + textwrap.wrap(tables.summary_line(ab), 90)), fontsize=8)
  ax.grid(True, alpha=0.3)
  return fig, ax


def _log_x(ax, values: list[float]) -> None:
  """Log x with the swept values as tick labels (linear when a value is not positive)."""
  values = sorted(set(values))
  if values and min(values) > 0:
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
  ax.set_xticks(values, [f"{v:g}" for v in values])


def _save(fig: Figure, path: str) -> None:
  tmp = f"{path}.tmp.png"
  fig.savefig(tmp, dpi=120)
  os.replace(tmp, path)


def plot_rate_distortion(ab: tables.Ablation, path: str) -> None:
  """Distortion against rate, one point per β, with the line of the best -ELBO."""
  fig, ax = _figure(ab, "Rate–distortion across β (mean ± std over seeds)")
  best = None
  for label, rows in _series(ab, BETA):
    rows = [r for r in rows if "rate" in r.stats and "distortion" in r.stats]
    _, rate, rate_std = _stats(rows, "rate")
    _, dist, dist_std = _stats(rows, "distortion")
    ax.errorbar(rate, dist, xerr=rate_std, yerr=dist_std, marker="o", capsize=3,
                label=label or None)
    for r, x, y in zip(rows, rate, dist):
      ax.annotate(_label(BETA, r.setting[BETA]), (x, y), textcoords="offset points",
                  xytext=(5, 5), fontsize=8)
    if len(rate):
      best = min(best if best is not None else np.inf, float(np.min(rate + dist)))
  if best is not None:  # R + D = -ELBO: the best point's line of constant -ELBO.
    (lo, hi), ylim = ax.get_xlim(), ax.get_ylim()
    ax.plot([lo, hi], [best - lo, best - hi], "k--", lw=0.8, alpha=0.5,
            label=f"−ELBO = {best:.2f} (best)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(*ylim)
  ax.set_xlabel("rate KL(q(z|x) ‖ p(z)) (nats)")
  ax.set_ylabel("distortion −E log p(x|z) (nats)")
  ax.legend(fontsize=8)
  _save(fig, path)


def plot_active_units(ab: tables.Ablation, x_field: str, path: str) -> None:
  """Active units against β or latent dim; against latent dim, the y = x ceiling too."""
  name = tables.FIELD_NAMES.get(x_field, x_field)
  fig, ax = _figure(ab, f"Active latent units across {name} (mean ± std over seeds)")
  xs = []
  for label, rows in _series(ab, x_field):
    rows, mean, std = _stats(rows, "active_units")
    if not rows:
      continue
    x = [r.setting[x_field] for r in rows]
    xs += x
    ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label or "active units")
  if x_field == LATENT_DIM and xs:
    ax.plot(sorted(set(xs)), sorted(set(xs)), "k--", lw=0.8, alpha=0.5,
            label="y = x (all units active)")
  _log_x(ax, xs)
  ax.set_xlabel(name)
  ax.set_ylabel("active units (Cov_x E_q[z_d] > 0.01)")
  ax.legend(fontsize=8)
  _save(fig, path)


def plot_nll_vs_latent_dim(ab: tables.Ablation, path: str) -> None:
  """IWAE NLL and -ELBO against latent dim; the gap between them is the ELBO's looseness."""
  k = ab.num_importance_samples
  fig, ax = _figure(ab, "Test NLL and −ELBO across latent dim (mean ± std over seeds)")
  xs = []
  for i, (label, rows) in enumerate(_series(ab, LATENT_DIM)):
    color = f"C{i}"
    for key, name, style in (("nll", f"NLL (IWAE, k={k})", "o-"), ("neg_elbo", "−ELBO", "s--")):
      kept, mean, std = _stats(rows, key)
      if kept:
        x = [r.setting[LATENT_DIM] for r in kept]
        xs += x
        ax.errorbar(x, mean, yerr=std, fmt=style, color=color, capsize=3,
                    label=f"{name}, {label}" if label else name)
  _log_x(ax, xs)
  ax.set_xlabel("latent dim")
  ax.set_ylabel("test nats per example (lower is better)")
  ax.legend(fontsize=8)
  _save(fig, path)


def write_plots(ab: tables.Ablation, out_dir: Optional[str] = None) -> list[str]:
  """The plots the swept fields call for, as PNGs in DIR/plots; returns their paths."""
  out_dir = out_dir or os.path.join(ab.workdir, tables.PLOTS_DIR)
  jobs = []
  if BETA in ab.swept:
    jobs += [("rate_distortion.png", plot_rate_distortion),
             ("active_units_vs_beta.png", lambda a, p: plot_active_units(a, BETA, p))]
  if LATENT_DIM in ab.swept:
    jobs += [("nll_vs_latent_dim.png", plot_nll_vs_latent_dim),
             ("active_units_vs_latent_dim.png", lambda a, p: plot_active_units(a, LATENT_DIM, p))]
  if jobs:
    os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name, plot in jobs:
    paths.append(os.path.join(out_dir, name))
    plot(ab, paths[-1])
  return paths
