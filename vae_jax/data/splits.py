"""Which examples a run trains on, selects on (validation) and reports (test).

Model selection must never see the test split, so every run has a validation
set chosen here, before any data loads:

- the dataset's own validation split where it publishes one (binarized MNIST's
  10,000 images, as TFDS and the original .amat files have them), unless the
  train split already uses it ("train+validation", as some papers train);
- otherwise a fixed, seeded hold-out of ``validation_size`` examples of the
  train split (the same indices on every machine, recorded in results.json);
- or none ("none"), when a run needs no selection.

Validation and test never overlap: a validation split that names the test
split, or a hold-out from a train split that includes the test split, is
refused (ConfigError). Overlap is judged by the split names TFDS slices are
made of ("test[:50%]" is part of "test"), so disjoint slices of one split are
refused too: conservative, and the message says what would be valid.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

import numpy as np

from vae_jax.core import checks

# Datasets that publish a validation split, by its TFDS name.
OFFICIAL_VALIDATION = {"binarized_mnist": "validation"}
HOLDOUT_SEED = 0               # fixed: the hold-out is part of the dataset, not of the run
AUTO_HOLDOUT_FRACTION = 0.1    # validation_size=-1: a tenth of the train split
KINDS = ("split", "holdout", "none")


@dataclasses.dataclass(frozen=True)
class ValidationPlan:
  """How a run gets its validation set: an official split, a hold-out, or none."""
  kind: str                     # one of KINDS
  split: Optional[str] = None   # kind "split": the TFDS split string
  size: int = -1                # kind "holdout": examples held out (-1: AUTO fraction)


def split_names(split: str) -> set[str]:
  """The named splits a TFDS split string reads: 'train[:90%]+validation' -> {train, validation}."""
  return {re.split(r"[\[(]", part, maxsplit=1)[0].strip()
          for part in split.split("+") if part.strip()}


def plan(name: str, train_split: str, validation_split: str, test_split: str,
         validation_size: int = -1) -> ValidationPlan:
  """The validation set of a run on dataset ``name``; ConfigError if it would touch test."""
  train, test = split_names(train_split), split_names(test_split)
  official = OFFICIAL_VALIDATION.get(name)
  if validation_split == "none":
    return ValidationPlan("none")
  if validation_split == "auto":
    if official is not None and official not in train:
      validation_split = official
    elif validation_size == 0:
      return ValidationPlan("none")
    else:
      validation_split = "holdout"
  if validation_split == "holdout":
    if train & test:
      checks.fail("data.validation_split", "holdout",
                  f"the train split {train_split!r} includes the test split {test_split!r}, "
                  f"so a hold-out from it could hold test examples; use a train split "
                  f"without {sorted(train & test)} or validation_split='none'")
    if validation_size == 0:
      checks.fail("data.validation_size", 0, "a hold-out needs at least one example; use "
                  "-1 (a tenth of the train split) or a positive count")
    return ValidationPlan("holdout", size=validation_size)
  names = split_names(validation_split)
  if official is None:
    checks.fail("data.validation_split", validation_split,
                f"dataset {name!r} publishes no validation split; use 'auto' or 'holdout' "
                f"(a seeded hold-out of data.validation_size training examples) or 'none'")
  for other, field in ((test, "data.test_split"), (train, "data.train_split")):
    if names & other:
      checks.fail("data.validation_split", validation_split,
                  f"it shares {sorted(names & other)} with {field}; validation must be "
                  f"disjoint from both (e.g. {official!r}, 'holdout' or 'none')")
  return ValidationPlan("split", split=validation_split)


def plan_of(data, fallback: Optional[str] = None) -> ValidationPlan:
  """The plan of a ``config.data``, or of its ``fallback`` dataset when that is used instead.

  A fallback (an embedded set) is loaded with its own train and test splits, so a
  validation split named for the requested dataset becomes "auto" (a hold-out) there.
  """
  validation_split = getattr(data, "validation_split", "none")
  size = getattr(data, "validation_size", -1)
  if fallback is None:
    return plan(data.name, data.train_split, validation_split, data.test_split, size)
  keep = validation_split in ("none", "holdout")
  return plan(fallback, "train", validation_split if keep else "auto", "test", size)


def holdout_indices(num_train: int, size: int) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, validation indices) of a train split of ``num_train`` examples.

  A fixed permutation (HOLDOUT_SEED) of the split; the first ``size`` are held
  out. Both index arrays are sorted, so the training data keep their order.
  """
  if size < 0:
    size = max(1, int(round(AUTO_HOLDOUT_FRACTION * num_train)))
  if not 0 < size < num_train:
    checks.fail("data.validation_size", size, f"the train split has {num_train} examples: "
                f"hold out between 1 and {num_train - 1}")
  perm = np.random.default_rng(HOLDOUT_SEED).permutation(num_train)
  return np.sort(perm[size:]), np.sort(perm[:size])


# Recorded runs that predate validation splits evaluated on test and trained on all of
# train_split: read back, they get the values that keep their training data unchanged
# (a hold-out would change it; binarized MNIST's own validation split does not).
def recorded_defaults(data: dict) -> dict:
  """The data fields a recorded config lacks, with the values that reproduce its data."""
  official = OFFICIAL_VALIDATION.get(data.get("name"))
  keeps_train = official is not None and official not in split_names(
      data.get("train_split", "train"))
  return {"validation_split": "auto" if keeps_train else "none", "validation_size": -1}
