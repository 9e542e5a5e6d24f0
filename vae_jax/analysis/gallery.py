"""Every picture of a trained model, from its workdir: PNGs plus TensorBoard images.

Used by ``python -m experiments.pictures``. A run's checkpoint is read back
(``saved_run.load_run``, read-only) and its test images are shown as the
model sees them (the evaluation's fixed binarization or dequantization), so the
pictures of a run are the same every time. They are written to
``WORKDIR/pictures/step_STEP/`` (one PNG each, and an event file there for
TensorBoard), which is refused if it exists: nothing made earlier is replaced.

On a sweep directory, each finished member gets its pictures and
``DIR/pictures/comparison.png`` shows the members side by side (the likelihood
study: reconstructions, E[x|z] and x ~ p(x|z) per decoder).
"""

from __future__ import annotations

import dataclasses
import os
import textwrap
from typing import Optional

import jax
import numpy as np
from absl import logging
from clu import metric_writers
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vae_jax import models
from vae_jax import progress
from vae_jax import validation
from vae_jax.analysis import tables
from vae_jax.data import datasets
from vae_jax.data import pipeline
from vae_jax.evaluation import evaluator
from vae_jax.evaluation import saved_run
from vae_jax.training import preemption
from vae_jax.models import interface
from vae_jax.pictures import conditional
from vae_jax.pictures import images
from vae_jax.pictures import latent as lp
from vae_jax.training import workdir as workdir_lib

PICTURES_DIR = "pictures"


@dataclasses.dataclass(frozen=True)
class PictureSpec:
  """How many of each; the defaults make pictures a page can hold."""
  num_reconstructions: int = 32
  num_samples: int = 64
  columns: int = 8
  interpolation_rows: int = 8
  interpolation_steps: int = 10
  traversal_range: float = 3.0     # z_d from -range to +range (prior standard deviations)
  traversal_steps: int = 11
  manifold_size: int = 20
  num_encoded: int = 10_000        # test images encoded for KLs, scatter and class means
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Labelled:
  """Test examples as the model sees them, with labels (for scatter and arithmetic)."""
  batch: interface.Batch
  labels: np.ndarray
  source: str

  @property
  def inputs(self) -> np.ndarray:
    return np.asarray(self.batch["image"])


def _test_batch(dataset: datasets.Dataset, count: int, preprocessing: str,
                seed: int) -> interface.Batch:
  """The first ``count`` test examples as the model sees them (the evaluation's draws)."""
  count = min(count, len(dataset.test))
  data = {k: v[:count] for k, v in dataset.arrays("test").items()}
  return {k: np.asarray(v) for k, v in
          evaluator.eval_batch(data, np.arange(count), preprocessing, seed,
                               dataset.render).items()}


def _kl_per_dim(model: interface.Model, params, batch: interface.Batch,
                seed: int) -> Optional[np.ndarray]:
  """Each latent dimension's KL averaged over the batch, if the family reports one."""
  ids = np.arange(len(batch["image"]))
  terms = jax.jit(model.terms)(params, batch,
                               evaluator.eval_keys(seed, pipeline.STREAM_LATENT, ids))
  if interface.KL_PER_DIM not in terms:
    return None
  return np.asarray(terms[interface.KL_PER_DIM]).mean(0)


def labelled_data(run: saved_run.Run, spec: PictureSpec,
                  borrow: Optional[str] = None) -> Optional[Labelled]:
  """The run's labelled test data, or that of ``borrow`` (same image shape) if it has none.

  Binarized MNIST has no labels; ``borrow='mnist_5k'`` shows the model real
  labelled digits, binarized as the model's likelihood needs.
  """
  dataset, preprocessing = run.dataset, run.preprocessing
  if borrow:
    dataset = datasets.load(borrow)
    if dataset.image_shape != run.dataset.image_shape:
      raise validation.ConfigError(
          f"--labelled_data={borrow!r} has images of shape {dataset.image_shape}; the model "
          f"was trained on {run.dataset.image_shape} ({run.dataset.name!r}).")
    preprocessing = validation.resolve_preprocessing(borrow, "auto", models.observes(run.config))
  if dataset.test_labels is None:
    return None
  batch = _test_batch(dataset, spec.num_encoded, preprocessing, spec.seed)
  return Labelled(batch, dataset.test_labels[:len(batch["image"])], dataset.name)


def make_pictures(run: saved_run.Run, spec: PictureSpec = PictureSpec(),
                  labelled: Optional[Labelled] = None) -> dict[str, np.ndarray]:
  """{name: uint8 image [H, W, C]} of every picture that applies to this model."""
  model, params = run.model, run.params
  rng = jax.random.PRNGKey(spec.seed)
  work = progress.Progress(f"pictures of step {run.step}", 5, "stages")
  out = images.model_pictures(model, params, _test_batch(run.dataset, spec.num_reconstructions,
                                                         run.preprocessing, spec.seed),
                              spec.num_samples, spec.seed, spec.columns)
  if spec.num_samples:  # the same z as "samples": E[x|z] there, a draw x ~ p(x|z) here
    z = model.sample_prior(rng, spec.num_samples)
    drawn = jax.jit(lambda p: model.sample_observation(p, z, jax.random.fold_in(rng, 2)))
    out["samples_from_likelihood"] = images.grid(np.asarray(drawn(params)), spec.columns)
  work.update(note="reconstructions and samples")
  preemption.check()  # between stages: nothing is written before the end
  classes = interface.num_label_classes(model)
  if classes:  # a conditional model: its codes mean "style given the class"
    encoded = _test_batch(run.dataset, spec.num_encoded, run.preprocessing, spec.seed)
    out["class_grid"] = conditional.class_grid(model, params, jax.random.fold_in(rng, 4),
                                               spec.columns)
    first = conditional.first_of_each_class(np.asarray(encoded["label"]), classes)
    out["analogy"] = conditional.analogy(model, params, {k: v[first] for k, v in encoded.items()})
    work.update(work.total, note="class grid and analogies")
    return out  # the unconditional latent pictures decode without a class: not shown
  if model.latent_dim is None:
    work.update(work.total)
    return out  # codes that are not vectors: no interpolations, traversals or scatter

  encoded = _test_batch(run.dataset, spec.num_encoded, run.preprocessing, spec.seed)
  mean = np.asarray(jax.jit(model.encode)(params, encoded))
  kl_per_dim = _kl_per_dim(model, params, encoded, spec.seed)
  if kl_per_dim is None:  # order by how much the codes vary over the data instead
    kl_per_dim = np.var(mean, axis=0)
  work.update(note=f"codes of {len(mean)} test images")
  preemption.check()  # between stages: nothing is written before the end

  inputs = encoded["image"]
  pairs = min(spec.interpolation_rows, len(inputs) // 2)
  if pairs:
    out["interpolation_linear"] = lp.interpolation(
        model, params, inputs[:pairs], inputs[pairs:2 * pairs], spec.interpolation_steps)
  if spec.interpolation_rows:
    out["interpolation_prior_spherical"] = lp.prior_interpolation(
        model, params, jax.random.fold_in(rng, 3), spec.interpolation_rows,
        spec.interpolation_steps)
  work.update(note="interpolations")
  preemption.check()  # between stages: nothing is written before the end
  values = np.linspace(-spec.traversal_range, spec.traversal_range, spec.traversal_steps)
  out["traversals"], _ = lp.traversals(model, params, mean[0], kl_per_dim, values)
  work.update(note="traversals")
  preemption.check()  # between stages: nothing is written before the end
  if model.latent_dim == 2:
    out["manifold"] = lp.manifold(model, params, spec.manifold_size)
  codes, labels, source = mean, None, run.dataset.name
  if labelled is not None:
    codes = np.asarray(jax.jit(model.encode)(params, labelled.batch))
    labels, source = labelled.labels, labelled.source
  if model.latent_dim == 2:
    out["latent_scatter"] = lp.scatter(
        codes, labels, f"posterior means of {len(codes)} test images of {source}")
  if labelled is not None:
    means = lp.class_means(codes, labelled.labels)
    first = [int(np.flatnonzero(labelled.labels == c)[0]) for c in sorted(means)]
    out["latent_arithmetic"] = lp.arithmetic(model, params, labelled.inputs[first],
                                             labelled.labels[first], means)
  work.update(work.total, note="manifold, scatter, arithmetic")
  return out


def output_dir(workdir: str, step: int) -> str:
  return os.path.join(workdir, PICTURES_DIR, f"step_{step:08d}")


def write_pictures(pictures: dict[str, np.ndarray], directory: str, step: int) -> list[str]:
  """One PNG per picture and a TensorBoard event file, in a directory that must not exist."""
  if os.path.exists(directory):
    raise workdir_lib.WorkdirError(
        f"{directory} exists: these pictures were made already. Move it away to remake them.")
  os.makedirs(directory)
  paths = []
  for name, picture in pictures.items():
    paths.append(os.path.join(directory, f"{name}.png"))
    images.save_png(paths[-1], picture)
  writer = metric_writers.SummaryWriter(directory)
  writer.write_images(step, {k: v[None] for k, v in pictures.items()})
  writer.close()
  return paths


def pictures_of_run(run: saved_run.Run, spec: PictureSpec = PictureSpec(),
                    borrow_labels: Optional[str] = None,
                    directory: Optional[str] = None) -> tuple[str, dict[str, np.ndarray]]:
  """Makes and writes every picture of a run's checkpoint; returns (directory, pictures)."""
  directory = directory or output_dir(run.workdir, run.step)
  if os.path.exists(directory):  # before the work, not after
    raise workdir_lib.WorkdirError(
        f"{directory} exists: these pictures were made already. Move it away to remake them.")
  labelled = labelled_data(run, spec, borrow_labels)
  if labelled is None:
    logging.info("%s has no labels: no latent arithmetic%s. Pass --labelled_data=mnist_5k "
                 "to borrow labelled digits.", run.dataset.name,
                 ", the scatter is uncoloured" if run.model.latent_dim == 2 else "")
  pictures = make_pictures(run, spec, labelled)
  preemption.check()  # a stop asked meanwhile: leave no half-written directory behind
  write_pictures(pictures, directory, run.step)
  logging.info("Wrote %d pictures of step %d to %s: %s", len(pictures), run.step, directory,
               ", ".join(sorted(pictures)))
  return directory, pictures


def is_sweep(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, tables.SWEEP_FILE))


COMPARED = ("reconstructions", "samples", "samples_from_likelihood")
_TITLES = {"reconstructions": "test inputs (odd rows) and reconstructions",
           "samples": "E[x|z], z ~ p(z)\n(E[x|z] intractable: P(x_i = 1 | x_<i, z) along a draw)",
           "samples_from_likelihood": "x ~ p(x|z), the same z"}


def comparison(named: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
  """Members side by side: one row each, columns as in ``COMPARED``."""
  rows = len(named)
  fig = Figure(figsize=(4.2 * len(COMPARED), 4.4 * rows), dpi=100, layout="constrained")
  canvas = FigureCanvasAgg(fig)
  for r, (name, pictures) in enumerate(named.items()):
    for c, key in enumerate(COMPARED):
      ax = fig.add_subplot(rows, len(COMPARED), r * len(COMPARED) + c + 1)
      ax.set_xticks([])
      ax.set_yticks([])
      if key in pictures:
        picture = pictures[key]
        ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray",
                  vmin=0, vmax=255, interpolation="nearest")
      ax.set_title(_TITLES[key], fontsize=9)
      if c == 0:
        ax.set_ylabel("\n".join(textwrap.wrap(name, 30)), fontsize=10)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def not_pictured(members: list[tables.Member], names_shown: int = 3) -> Optional[str]:
  """One line for the members left out, by status: a sweep may have dozens of them."""
  if not members:
    return None
  by_status: dict[str, list[str]] = {}
  for member in members:
    by_status.setdefault(member.status, []).append(member.name)
  parts = []
  for status, names in sorted(by_status.items()):
    more = f", ... ({len(names) - names_shown} more)" if len(names) > names_shown else ""
    parts.append(f"{len(names)} {status} ({', '.join(names[:names_shown])}{more})")
  return (f"Not pictured: {len(members)} sweep member{'s' * (len(members) > 1)} without "
          f"results: {'; '.join(parts)}.")


def pictures_of_sweep(sweep_dir: str, spec: PictureSpec = PictureSpec(),
                      borrow_labels: Optional[str] = None) -> str:
  """DIR/pictures/comparison.png: one row per setting, from its first finished seed.

  Each member shown gets its own pictures too (made once, reused after).
  """
  path = os.path.join(sweep_dir, PICTURES_DIR, "comparison.png")
  if os.path.exists(path):
    raise workdir_lib.WorkdirError(f"{path} exists. Move it away to remake it.")
  _, members = tables.read_sweep(sweep_dir)
  shown = {}
  for member in members:
    if member.status == "done":
      shown.setdefault(tables.setting_label(member.setting) or member.name, member)
  left_out = not_pictured([m for m in members if m.status != "done"])
  if left_out:
    logging.warning("%s", left_out)
  named = {}
  for label, member in shown.items():
    preemption.check()  # between members: each member's pictures are whole
    run = saved_run.load_run(os.path.join(sweep_dir, member.name))
    directory = output_dir(run.workdir, run.step)
    if os.path.exists(directory):
      logging.info("Reusing the pictures in %s.", directory)
      named[label] = {k: images.load_png(os.path.join(directory, f"{k}.png"))
                       for k in COMPARED
                       if os.path.exists(os.path.join(directory, f"{k}.png"))}
      continue
    _, named[label] = pictures_of_run(run, spec, borrow_labels)
  if not named:
    raise workdir_lib.WorkdirError(f"No finished member in {sweep_dir} to picture.")
  picture = comparison(named)
  preemption.check()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  images.save_png(path, picture)
  logging.info("Wrote %s", path)
  return path
