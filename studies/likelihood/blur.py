"""Blur in numbers: how much of the data's edge energy a decoder's pictures keep.

A Gaussian decoder with a fixed scale is trained on squared error, whose best
mean for a code z is the average of the images z cannot tell apart; averages
lose edges. Edge energy measures that: G(x) = mean over pixels of the squared
finite differences (x[i+1, j] - x[i, j])^2 + (x[i, j+1] - x[i, j])^2. G is
convex, so G(E[x]) <= E[G(x)] (Jensen): averaging removes exactly the variance
of the gradients, and G(picture) / G(data) is 1 for pictures as sharp as the
data and falls with blur. (Total variation would not do: blurring a monotone
edge leaves it unchanged.)

Every model is scored on the same test images against the same target, the
grayscale image t = pixel / 255, which every decoder's mean estimates (a
dynamically binarized pixel has mean t, a dequantized one t + 1/512), and the
same prior draws z; so the numbers compare across likelihoods, unlike their NLLs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

from vae_jax.analysis import tables
from vae_jax.core import likelihoods
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.evaluation import saved_run as checkpoint_eval
from vae_jax.models import interface
from vae_jax.training import workdir as workdir_lib

OUT_DIR = "blur"

# (key, header, format) of each statistic, in table order.
COLUMNS = (("recon_rmse", "recon. RMSE", ".4f"),
           ("recon_edge_ratio", "recon. edges", ".3f"),
           ("sample_edge_ratio", r"sample E[x\|z] edges", ".3f"),  # \| : a bar in a table cell
           ("observation_edge_ratio", r"sample x ~ p(x\|z) edges", ".3f"),
           ("scale_median", "σ median", ".4f"),
           ("scale_min", "σ min", ".4f"),
           ("scale_max", "σ max", ".4f"))


@dataclasses.dataclass(frozen=True)
class BlurSpec:
  num_images: int = 1000   # the first test images (all of a smaller split)
  num_samples: int = 1000  # prior draws z ~ N(0, I)
  seed: int = 0


def edge_energy(images_: np.ndarray) -> np.ndarray:
  """G per image of [N, H, W, C] in [0, 1]: mean squared horizontal + vertical difference."""
  x = np.asarray(images_, np.float64)
  dy = np.diff(x, axis=1)[:, :, :-1]
  dx = np.diff(x, axis=2)[:, :-1, :]
  return np.mean(dy**2 + dx**2, axis=(1, 2, 3))


def blur_stats(run: checkpoint_eval.Run, spec: BlurSpec = BlurSpec()) -> dict[str, Any]:
  """Reconstruction error and edge-energy ratios of a run's pictures; its p(x|z) scale."""
  model, params = run.model, run.params
  test = run.dataset.test[:spec.num_images]
  targets = test.astype(np.float64) / 255.0
  inputs = evaluation.eval_inputs(test, np.arange(len(test)), run.preprocessing,
                                  run.config.eval.seed)
  recon = np.asarray(jax.jit(model.reconstruct)(params, {"image": inputs}))
  z_key, x_key = jax.random.split(jax.random.PRNGKey(spec.seed))
  z = model.sample_prior(z_key, spec.num_samples)
  means = np.asarray(jax.jit(lambda p: model.decode(p, z))(params))
  observed = np.asarray(jax.jit(lambda p: model.sample_observation(p, z, x_key))(params))
  data_energy = float(np.mean(edge_energy(targets)))
  out = {"num_images": len(test), "num_samples": spec.num_samples, "seed": spec.seed,
         "step": run.step, "likelihood": run.config.model.get("likelihood"),
         "data_edge_energy": data_energy,
         "recon_rmse": float(np.sqrt(np.mean((recon - targets) ** 2))),
         "recon_edge_ratio": float(np.mean(edge_energy(recon))) / data_energy,
         "sample_edge_ratio": float(np.mean(edge_energy(means))) / data_energy,
         "observation_edge_ratio": float(np.mean(edge_energy(observed))) / data_energy}
  interface.require(model, ("likelihood",), "The blur measure's scale of p(x|z)")
  observation = model.likelihood(params, z[:1])
  if isinstance(observation, likelihoods.Gaussian):
    scale = np.exp(np.asarray(observation.log_scale, np.float64))
    out.update(scale_median=float(np.median(scale)), scale_min=float(scale.min()),
               scale_max=float(scale.max()))
  return out


def to_markdown(rows: list[tuple[str, int, dict[str, tuple[float, float | None]]]],
                caption: str) -> str:
  """rows: (setting, n, {key: (mean, std or None)}); '—' where a key is absent."""
  headers = ["setting", "n"] + [h for _, h, _ in COLUMNS]
  lines = [f"**Table.** {caption}", "", "| " + " | ".join(headers) + " |",
           "|---|" + "---:|" * (len(headers) - 1)]
  for setting, n, stats in rows:
    cells = [setting, str(n)]
    for key, _, fmt in COLUMNS:
      if key not in stats:
        cells.append("—")
        continue
      mean, std = stats[key]
      cells.append(format(mean, fmt) + ("" if std is None else f" ± {format(std, fmt)}"))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def pool(values: list[dict[str, Any]]) -> dict[str, tuple[float, float | None]]:
  """Mean and sample std (None for one run) of each COLUMNS key the runs report."""
  out = {}
  for key, _, _ in COLUMNS:
    x = np.array([v[key] for v in values if key in v], np.float64)
    if x.size:
      out[key] = (float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else None)
  return out


def write_blur(workdir: str, spec: BlurSpec = BlurSpec()) -> list[str]:
  """blur_stats of a run, or of each finished member of a sweep pooled by setting.

  Writes DIR/blur/blur.{json,md}; refuses an existing DIR/blur (nothing is replaced).
  """
  shown, workdir = workdir, os.path.abspath(workdir)
  out_dir = os.path.join(workdir, OUT_DIR)
  if os.path.exists(out_dir):
    raise workdir_lib.WorkdirError(f"{out_dir} exists; move it away to recompute it.")
  if os.path.exists(os.path.join(workdir, tables.SWEEP_FILE)):
    _, members = tables.read_sweep(workdir)
    runs = [(m.name, m.setting) for m in members if m.status == "done"]
    if not runs:
      raise tables.TableError(f"no member of the sweep in {workdir} has finished.")
  else:
    runs = [("", {})]
  per_run, groups = {}, {}
  for name, setting in runs:
    per_run[name or "."] = blur_stats(checkpoint_eval.load_run(os.path.join(workdir, name)), spec)
    groups.setdefault(json.dumps(setting, sort_keys=True), (setting, []))[1].append(
        per_run[name or "."])
  fields = list(dict.fromkeys(f for _, setting in runs for f in setting))  # as tables orders them
  rows = [(tables.setting_label(setting, fields) or "(run)", len(values), pool(values))
          for setting, values in groups.values()]
  caption = (f"Blur of {shown}: the first {spec.num_images} test images and {spec.num_samples} "
             f"prior draws (seed {spec.seed}). recon. RMSE: E[x|z = posterior mean] against "
             "pixel/255; edges: edge energy (mean squared pixel difference) over the test "
             "images' (1 = as sharp as the data, < 1 blurred, > 1 noisy); σ: the Gaussian "
             "p(x|z)'s scale over pixels. Mean ± std over seeds.")
  os.makedirs(out_dir)
  paths = [os.path.join(out_dir, "blur.json"), os.path.join(out_dir, "blur.md")]
  workdir_lib.write_json(paths[0], {"spec": dataclasses.asdict(spec), "runs": per_run})
  with open(paths[1], "w", encoding="utf-8") as f:
    f.write(to_markdown(rows, caption))
  return paths
