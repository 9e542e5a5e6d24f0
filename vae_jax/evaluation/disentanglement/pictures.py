"""Latent traversals labelled by the factor each latent captures: the picture people look at.

Each row sweeps one latent of a base image's code (rows by decreasing KL, the
first tile a bar of that KL, as ``pictures.latent.traversals`` draws them); the
row's label names the factor sharing the most information with that latent
(the MIG step's binned mutual information, divided by the factor's entropy, so
1 means the latent determines the factor), or "-" when no factor reaches
``MIN_SHARE``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vae_jax.evaluation.disentanglement import scoring
from vae_jax.pictures import latent

MIN_SHARE = 0.05
VALUES = np.linspace(-2.5, 2.5, 9)


def factor_labels(record: dict[str, Any]) -> list[tuple[str, float]]:
  """Per latent, (the factor it holds most information about, that share of its entropy)."""
  scores = record["scores"]["mig"]
  share = np.asarray(scores["mutual_information"]) / np.asarray(scores["factor_entropy"])
  best = share.argmax(axis=1)
  return [(record["factors"][k] if share[d, k] >= MIN_SHARE else "-", float(share[d, k]))
          for d, k in enumerate(best)]


def save_traversals(run, record: dict[str, Any], kl_per_dim: np.ndarray,
                    base_factors: np.ndarray, sampler, path: str) -> None:
  """Writes the labelled traversals of the code of the image of ``base_factors`` to ``path``."""
  if os.path.exists(path):
    raise FileExistsError(f"{path} exists; move it away to redraw it.")
  image = sampler.observations(np.asarray(base_factors)[None], np.random.RandomState(0))
  represent = scoring.encoder_mean(run.model, run.params, run.preprocessing,
                                   run.config.eval.seed)
  base = represent(image)[0]
  grid, order = latent.traversals(run.model, run.params, base, kl_per_dim, VALUES)
  labels = factor_labels(record)
  rows = len(order)
  fig = Figure(figsize=(grid.shape[1] / 80 + 1.6, grid.shape[0] / 80 + 0.5), layout="constrained")
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  ax.imshow(grid if grid.dtype == np.uint8 else np.clip(grid, 0, 1))
  step = grid.shape[0] / rows
  ax.set_yticks([step * (r + 0.5) for r in range(rows)],
                [f"z{d}: {labels[d][0]} ({labels[d][1]:.2f})" for d in order], fontsize=8)
  ax.set_xticks([step * (c + 1.5) for c in range(len(VALUES))],
                [f"{v:g}" for v in VALUES], fontsize=7)
  ax.set_title(f"{os.path.basename(run.workdir)}: step {run.step}; rows by KL, labelled by "
               f"the factor of largest MI / H(factor)", fontsize=8)
  fig.savefig(path, dpi=80)
