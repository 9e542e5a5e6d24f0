"""Plots of a sweep's ablation: the rate–distortion curve over β, capacity over latent dim.

β weighs rate R = E KL(q(z|x) || p(z)) (the nats the code carries) against
distortion D = -E_q log p(x|z); the points (R, D) across β trace the
rate–distortion trade-off of Alemi et al. 2018 ("Fixing a broken ELBO"), on
which -ELBO = R + D is constant along lines of slope -1. Active units show how
much of the latent space a β or a latent dim actually uses: at most latent_dim
units can be active, and posterior collapse shows as few. Each point is the
mean over seeds with ±1 sample-std error bars (none when one seed finished).
Any sweep whose runs logged several test evaluations also gets its training
curves (active units, rate, NLL over steps: how collapse unfolds, or does not).

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

from vae_jax.analysis import tables

BETA = "objective.beta"
LATENT_DIM = "model.latent_dim"


def _series(ab: tables.Ablation, x_field: str) -> list[tuple[str, list[tables.Row]]]:
  """Rows grouped by the other swept fields (one curve each), numeric x only, sorted by x."""
  others = [f for f in ab.swept if f != x_field]
  groups: dict[str, list[tables.Row]] = {}
  for row in ab.rows:
    if isinstance(row.setting.get(x_field), (int, float)):
      label = tables.setting_label(row.setting, others)
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
      ax.annotate(tables.setting_label(r.setting, [BETA]), (x, y), textcoords="offset points",
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


# Panels of the training curves: (metrics.jsonl key, y label); the last panel shows the
# IWAE NLL when the periodic evaluations estimated it, else -ELBO.
CURVE_PANELS = (("eval/active_units", "active units"), ("eval/rate", "rate KL (nats)"))


def _test_records(ab: tables.Ablation, name: str) -> dict[int, dict]:
  """{step: record} of a finished member's periodic evaluations, keys as "eval/KEY".

  Runs evaluate on validation during training ("validation/KEY") and on test once
  at the end; runs recorded before validation splits evaluated test periodically
  ("test/KEY"), and their curves are read from those. {} without metrics.jsonl.
  """
  records = tables.member_metrics(ab.workdir, name)
  prefix = ("validation/" if any("validation/rate" in r for r in records.values())
            else "test/")
  return {step: {"eval/" + k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}
          for step, r in sorted(records.items()) if prefix + "rate" in r}


def training_curves(ab: tables.Ablation) -> dict[str, dict[str, dict[int, list[float]]]]:
  """{setting label: {key: {step: [one value per seed]}}} from the finished members' metrics."""
  curves = {}
  for row in ab.rows:
    label = tables.setting_label(row.setting, ab.swept) or "all runs"
    per_key: dict[str, dict[int, list[float]]] = {}
    for name in row.members:
      for step, record in _test_records(ab, name).items():
        for key, value in record.items():
          if key.startswith("eval/") and isinstance(value, (int, float)):
            per_key.setdefault(key, {}).setdefault(step, []).append(float(value))
    if per_key:
      curves[label] = per_key
  return curves


def has_training_curves(ab: tables.Ablation) -> bool:
  """Whether some finished member logged at least two periodic evaluations."""
  return any(len(_test_records(ab, m.name)) >= 2 for m in ab.with_status("done"))


def plot_training_curves(ab: tables.Ablation, path: str) -> None:
  """Active units, rate and NLL (or -ELBO) at each periodic evaluation, mean over seeds.

  A point is drawn only at steps every seed of the setting evaluated. The final
  evaluation usually uses more importance samples than the periodic ones; its NLL
  is then a separate marker, not joined to a curve of a looser bound.
  """
  curves = training_curves(ab)
  nll = all(len(c.get("eval/nll", {})) >= 2 for c in curves.values())
  panels = CURVE_PANELS + ((("eval/nll", "NLL (IWAE, nats)") if nll else
                            ("eval/neg_elbo", "−ELBO (nats)")),)
  fig = Figure(figsize=(13, 4.2), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, len(panels))
  fig.suptitle("\n".join(["Periodic evaluations during training: validation (test in runs "
                          "before validation splits), mean over seeds"]
                         + textwrap.wrap(tables.summary_line(ab), 150)), fontsize=9)
  for i, (label, per_key) in enumerate(curves.items()):
    n = max(len(v) for v in per_key["eval/rate"].values())
    ks = per_key.get("eval/num_importance_samples", {})
    for ax, (key, ylabel) in zip(axes, panels):
      points = sorted((s, np.mean(v)) for s, v in per_key.get(key, {}).items() if len(v) == n)
      final = []
      if key == "eval/nll" and ks:  # split off the points scored with another k
        k_train = max({k for v in ks.values() for k in v}, key=lambda k: sum(
            k in v for v in ks.values()))
        final = [(s, y) for s, y in points if k_train not in ks.get(s, [k_train])]
        points = [(s, y) for s, y in points if (s, y) not in final]
        if final:
          k_final = sorted({k for s, _ in final for k in ks[s]})
          ylabel = (f"NLL (IWAE k={k_train:g}; ★ k={'/'.join(f'{k:g}' for k in k_final)})")
      if points:
        ax.plot(*zip(*points), "o-", ms=3, color=f"C{i}", label=label)
      if final:
        ax.plot(*zip(*final), "*", ms=10, color=f"C{i}")
      ax.set_xlabel("training step")
      ax.set_ylabel(ylabel)
      ax.grid(True, alpha=0.3)
  axes[0].legend(fontsize=7)
  _save(fig, path)


def disentanglement_metrics(ab: tables.Ablation) -> list[str]:
  """The disentanglement columns (members' disentanglement.json) the table shows."""
  return [key for key in ab.metrics if key.startswith("disentanglement.")]


def plot_disentanglement(ab: tables.Ablation, x_field: str, path: str) -> None:
  """Each disentanglement score (mean ± std over seeds) against the swept field, one panel each."""
  keys = disentanglement_metrics(ab)
  names = {key: md for key, md, *_ in tables.METRICS}
  columns = min(4, len(keys))
  rows = -(-len(keys) // columns)
  fig = Figure(figsize=(3.2 * columns, 2.6 * rows + 0.6), layout="constrained")
  FigureCanvasAgg(fig)
  fig.suptitle("\n".join(textwrap.wrap(tables.summary_line(ab), 120)), fontsize=8)
  for i, key in enumerate(keys):
    ax = fig.add_subplot(rows, columns, i + 1)
    ax.grid(True, alpha=0.3)
    for label, series in _series(ab, x_field):
      series, means, stds = _stats(series, key)
      xs = [r.setting[x_field] for r in series]
      ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label or None)
      _log_x(ax, xs)
    ax.set_title(names[key], fontsize=9)
    ax.set_xlabel(tables.FIELD_NAMES.get(x_field, x_field), fontsize=8)
  _save(fig, path)


def write_plots(ab: tables.Ablation, out_dir: Optional[str] = None) -> list[str]:
  """The plots the swept fields call for, as PNGs in DIR/plots; returns their paths."""
  out_dir = out_dir or os.path.join(ab.workdir, tables.PLOTS_DIR)
  jobs = []
  if BETA in ab.swept:
    jobs += [("rate_distortion.png", plot_rate_distortion),
             ("active_units_vs_beta.png", lambda a, p: plot_active_units(a, BETA, p))]
    if disentanglement_metrics(ab):
      jobs.append(("disentanglement_vs_beta.png",
                   lambda a, p: plot_disentanglement(a, BETA, p)))
  if LATENT_DIM in ab.swept:
    jobs += [("nll_vs_latent_dim.png", plot_nll_vs_latent_dim),
             ("active_units_vs_latent_dim.png", lambda a, p: plot_active_units(a, LATENT_DIM, p))]
  if has_training_curves(ab):
    jobs.append(("training_curves.png", plot_training_curves))
  if jobs:
    os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name, plot in jobs:
    paths.append(os.path.join(out_dir, name))
    plot(ab, paths[-1])
  return paths
