"""The amortization study's record, table and figures (see ``studies.amortization.study``).

Every figure is in nats per example: a mean over the N test examples with its
standard error (std / sqrt(N)); gaps are means of per-example differences, so
their errors are paired (the same x, the same noise for every q).
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vae_jax.pictures import images
from vae_jax.training import workdir as workdir_lib

POSTERIORS = {  # per-example prefix -> (what q is, whose decoder)
    "global": ("global q(z), one for all x", "global-q VAE"),
    "encoder": ("encoder q(z|x) (amortized)", "amortized VAE"),
    "refined": ("refined: SVI from the encoder's q", "amortized VAE"),
    "from_prior": ("SVI from the prior N(0, I)", "amortized VAE"),
}


def _stat(values: np.ndarray) -> dict[str, float]:
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "se": float(v.std(ddof=1) / math.sqrt(len(v)))
          if len(v) > 1 else 0.0}


def data_mean(run) -> np.ndarray:
  """The training images' mean in [0, 1], as the model sees them on average."""
  train = run.dataset.train.astype(np.float64)
  if run.preprocessing == "dequantize":
    return (train.mean(0) + 0.5) / 256.0
  return train.mean(0) / (1.0 if run.dataset.binary else 255.0)


def decoded(run, codes: np.ndarray) -> np.ndarray:
  return np.asarray(run.model.decode(run.params, jnp.asarray(codes)))


def summarize(ex: dict[str, np.ndarray], runs: dict, config: ml_collections.ConfigDict
              ) -> dict[str, Any]:
  """The study's JSON record from its per-example arrays."""
  amortized, glob = runs["amortized"], runs["global"]
  study = config.study
  # log p(x): IWAE with the refined q as proposal, a stochastic lower bound like any
  # IWAE (a per-example max over proposals would not be); the encoder's for comparison.
  log_px = ex["log_px/refined"]
  posteriors = {name: {term: _stat(ex[f"{name}/{term}"]) for term in
                       ("elbo", "rate", "distortion")} for name in POSTERIORS}
  gaps = {
      "amortization": _stat(ex["refined/elbo"] - ex["encoder/elbo"]),
      "approximation": _stat(log_px - ex["refined/elbo"]),
      "inference": _stat(log_px - ex["encoder/elbo"]),
      "from_prior_minus_refined": _stat(ex["from_prior/elbo"] - ex["refined/elbo"]),
      "encoder_minus_global": _stat(ex["encoder/elbo"] - ex["global/elbo"]),
  }
  mean_image = data_mean(amortized)
  global_output = decoded(glob, ex["code/global"][:1])[0]
  recon = {name: decoded(run, ex[f"code/{name}"]) for name, run in
           (("global", glob), ("encoder", amortized), ("refined", amortized))}
  runs_info = {}
  for name, run in runs.items():
    results = workdir_lib.read_json(os.path.join(run.workdir, workdir_lib.RESULTS_FILE))
    runs_info[name] = {"workdir": run.workdir, "encoder": run.config.model.encoder,
                       "step": run.step, "test_neg_elbo": results["test"]["neg_elbo"],
                       "test_rate": results["test"]["rate"],
                       "wall_time_s": results["wall_time_s"]}
  return {
      "dataset": amortized.dataset.name, "preprocessing": amortized.preprocessing,
      "num_test": int(len(ex["x"])), "unit": "nats per example; mean and standard error "
      "over the test examples", "study": study.to_dict(), "runs": runs_info,
      "posteriors": posteriors,
      "log_px": {"proposal_refined": _stat(log_px),
                 "proposal_encoder": _stat(ex["log_px/encoder"])},
      "gaps": gaps,
      "global_output": {
          "max_abs_minus_data_mean": float(np.max(np.abs(global_output - mean_image))),
          "mean_abs_minus_data_mean": float(np.mean(np.abs(global_output - mean_image))),
          "max_abs_minus_half": float(np.max(np.abs(global_output - 0.5))),
          "min": float(global_output.min()), "max": float(global_output.max())},
      "reconstruction_mean_abs_error": {
          name: float(np.mean(np.abs(r - ex["x"]))) for name, r in recon.items()},
      "svi_trace": {name: np.mean(ex[f"trace/{name}"], axis=0, dtype=np.float64).tolist()
                    for name in ("refined", "from_prior")},
  }


def _pm(stat: dict[str, float]) -> str:
  return f"{stat['mean']:.3f} ± {stat['se']:.3f}"


def markdown(record: dict[str, Any]) -> str:
  """The two tables (posteriors, gaps) and the global q's output, as Markdown."""
  s = record["study"]
  head = (f"{record['dataset']} ({record['preprocessing']}), first {record['num_test']} test "
          f"examples; ELBO with {s['elbo_samples']} samples (analytic KL); SVI: "
          f"{s['svi_steps']} Adam steps, {s['svi_samples']} samples, learning rate "
          f"{s['svi_learning_rate']:g} (cosine-decayed to a tenth); log p̂(x): IWAE with "
          f"k = {s['iwae_samples']}, the refined q as proposal; nats per example, mean ± "
          f"standard error over examples.")
  lines = [f"**Table.** Posteriors on {head}", "",
           "| posterior q | decoder | ELBO | KL (rate) | distortion |",
           "|---|---|---:|---:|---:|"]
  for name, (what, decoder) in POSTERIORS.items():
    p = record["posteriors"][name]
    lines.append(f"| {what} | {decoder} | {_pm(p['elbo'])} | {_pm(p['rate'])} | "
                 f"{_pm(p['distortion'])} |")
  lp = record["log_px"]
  lines += [f"| log p̂(x), IWAE k = {s['iwae_samples']} | amortized VAE | "
            f"{_pm(lp['proposal_refined'])} | – | – |", "",
            "| gap | definition | nats |", "|---|---|---:|"]
  g = record["gaps"]
  for name, definition in (
      ("amortization", "ELBO(refined) − ELBO(encoder)"),
      ("approximation", "log p̂(x) − ELBO(refined)"),
      ("inference", "log p̂(x) − ELBO(encoder)"),
      ("from_prior_minus_refined", "ELBO(SVI from the prior) − ELBO(refined)"),
      ("encoder_minus_global", "ELBO(encoder) − ELBO(global q), two decoders")):
    lines.append(f"| {name.replace('_', ' ')} | {definition} | {_pm(g[name])} |")
  o, r = record["global_output"], record["reconstruction_mean_abs_error"]
  lines += ["", f"The global-q decoder's output E[x|z] at the global mean lies in "
            f"[{o['min']:.3f}, {o['max']:.3f}]; max |E[x|z] − data mean| = "
            f"{o['max_abs_minus_data_mean']:.3f} (mean {o['mean_abs_minus_data_mean']:.4f}), "
            f"max |E[x|z] − 0.5| = {o['max_abs_minus_half']:.3f}. Mean |E[x|z] − x| per pixel: "
            f"global q {r['global']:.3f}, encoder {r['encoder']:.3f}, refined "
            f"{r['refined']:.3f}. IWAE with the encoder's q as proposal instead: "
            f"{_pm(lp['proposal_encoder'])}.", ""]
  return "\n".join(lines)


def write_pictures(ex: dict[str, np.ndarray], runs: dict, num: int,
                   paths: dict[str, str]) -> None:
  """Rows: input, global-q output, amortized and refined reconstructions; plus the data mean."""
  num = min(num, len(ex["x"]))
  rows = [("input x", ex["x"][:num]),
          ("global q: E[x|z̄]", decoded(runs["global"], ex["code/global"][:num])),
          ("encoder q(z|x)", decoded(runs["amortized"], ex["code/encoder"][:num])),
          ("refined q (SVI)", decoded(runs["amortized"], ex["code/refined"][:num]))]
  grid = images.grid(np.concatenate([r for _, r in rows]), num)
  images.save_png(paths["grid"], grid)
  mean_image = data_mean(runs["amortized"])
  height = grid.shape[0]
  fig = Figure(figsize=(1.0 + 0.7 * (num + 1.5), 0.8 + 0.7 * len(rows)), layout="constrained")
  FigureCanvasAgg(fig)
  left, right = fig.subplots(1, 2, width_ratios=[grid.shape[1], 1.5 * mean_image.shape[1]])
  left.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
  step = height / len(rows)
  left.set_yticks([step * (i + 0.5) for i in range(len(rows))], [n for n, _ in rows])
  left.set_xticks([])
  left.set_title(f"{ex['x'].shape[0]} test images of {runs['amortized'].dataset.name}; "
                 f"the first {num}", fontsize=9)
  img = np.clip(mean_image, 0, 1)
  right.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
  right.set_axis_off()
  right.set_title("data mean\n(train)", fontsize=9)
  _save(fig, paths["pictures"])


def plot_trace(record: dict[str, Any], path: str) -> None:
  """Mean ELBO over the test examples against SVI steps, from the encoder and from the prior."""
  fig = Figure(figsize=(10, 4), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 2)
  enc = record["posteriors"]["encoder"]["elbo"]["mean"]
  log_px = record["log_px"]["proposal_refined"]["mean"]
  # Each step's estimate uses study.svi_samples draws per example: a moving average
  # over a fiftieth of the steps shows the trend through their noise.
  window = max(1, len(record["svi_trace"]["refined"]) // 50)
  smooth = lambda v: np.convolve(np.asarray(v), np.ones(window) / window, mode="valid")
  refined = smooth(record["svi_trace"]["refined"])
  scratch = smooth(record["svi_trace"]["from_prior"])
  steps = np.arange(len(refined)) + window - 1
  for ax, zoom in zip(axes, (False, True)):
    ax.plot(steps, refined, label="SVI from the encoder's q (refined)")
    ax.plot(steps, scratch, label="SVI from the prior N(0, I)")
    ax.axhline(enc, color="k", ls="--", lw=0.8, label=f"encoder q: ELBO {enc:.2f}")
    ax.axhline(log_px, color="C3", ls=":", lw=1.0, label=f"log p̂(x) (IWAE): {log_px:.2f}")
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("SVI step")
    if zoom:
      span = max(log_px - enc, 0.5)
      ax.set_ylim(enc - 1.5 * span, log_px + 0.5 * span)
      ax.set_title("zoom", fontsize=9)
    else:
      ax.set_ylabel(f"mean ELBO (nats), {window}-step moving average")
      ax.set_title(f"Per-point SVI on {record['num_test']} test images of "
                   f"{record['dataset']}, decoder fixed", fontsize=9)
      ax.legend(fontsize=8, loc="lower right")
  _save(fig, path)


def _save(fig: Figure, path: str) -> None:
  tmp = f"{path}.tmp.png"
  fig.savefig(tmp, dpi=120)
  os.replace(tmp, path)
