"""Config validation: every bad value fails before data loading or compilation.

Each error names the field (as it is overridden on the command line) and what
would be valid, so a typo costs seconds, not a compile and a crash mid-run.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from typing import Optional, Sequence

import ml_collections
from ml_collections.config_flags import config_flags  # ConfigFileFlagParser: not re-exported

from vae_jax import models
from vae_jax import parallel
from vae_jax.core import checks
from vae_jax.data import datasets
from vae_jax.data import pipeline
from vae_jax.data import splits
from vae_jax.objectives import training_objectives

OPTIMIZERS = ("adam", "adamw", "sgd", "adam_iwae")
SCHEDULES = ("constant", "cosine", "step", "exponential", "iwae_3i",
             "iwae_3i_stretched")
SELECTION_METRICS = ("neg_elbo", "nll")
NONFINITE_POLICIES = ("stop", "skip")

ConfigError = checks.ConfigError
_get, _fail, _choice, _number, _boolean = (checks.get, checks.fail, checks.choice,
                                          checks.number, checks.boolean)


def field_names(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every field path of ``config``, groups included: 'model', 'model.latent_dim', ..."""
  names = []
  for key, value in config.items():
    names.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      names += field_names(value, f"{prefix}{key}.")
  return names


def load_config_file(spec: str, flag: str = "config") -> ml_collections.ConfigDict:
  """The config of a ``FILE[:ARG]`` spec, as ``--FLAG=FILE[:ARG]`` would load it.

  A file that is missing, does not parse, or refuses its argument is one
  ConfigError line: ml_collections reports these with the config file's traceback
  (or, for a missing file, only when the config is first used).
  """
  try:
    config = config_flags.ConfigFileFlagParser(flag, lock_config=False).parse(spec)
  except SyntaxError as e:
    raise ConfigError(f"--{flag}={spec}: {e.filename or spec}, line {e.lineno}: "
                      f"{e.msg}; fix the file's Python syntax.") from None
  except Exception as e:  # pylint: disable=broad-except  # the config file's own errors
    last = [line for line in str(e).splitlines() if line.strip()][-1:] or [type(e).__name__]
    raise ConfigError(f"--{flag}={spec}: "
                      f"{re.sub(r'^[A-Za-z_.]*Error: ', '', last[0].strip())}") from None
  error = getattr(config, "__dict__", {}).get("_error")  # ml_collections' deferred error
  if error is not None:
    path = spec.split(":", 1)[0]
    reason = ("no such file" if not os.path.exists(path) else
              " ".join(str(error).split())[:300])
    raise ConfigError(f"--{flag}={spec}: {path}: {reason}; give a config file such as "
                      f"configs/default.py or configs/beta.py (optionally FILE:ARG).")
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"--{flag}={spec}: get_config() must return an ml_collections.ConfigDict.")
  return config


def check_overrides(argv: Sequence[str], default_config: Optional[str]) -> None:
  """Raises ConfigError for a --config.FIELD override that names no field.

  Runs before absl parses flags (ml_collections applies overrides while the
  flag is defined, with a traceback for an unknown one) and suggests the
  closest field of the config file selected by --config (or the default).
  """
  spec = default_config
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      spec = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      spec = argv[i + 1]
  if spec is None:
    return  # no config file given: the flag itself reports it
  config = load_config_file(spec)
  names = field_names(config)
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    field = arg[len("--config."):].split("=", 1)[0]
    if field not in names:
      close = difflib.get_close_matches(field, names, n=2, cutoff=0.75)
      hint = f" Did you mean {' or '.join(f'--config.{c}' for c in close)}?" if close else ""
      raise ConfigError(f"--config.{field}: {spec} has no field {field!r}.{hint} "
                        f"All fields: {', '.join(n for n in names if '.' not in n)} and "
                        f"their sub-fields (see configs/default.py).")


def define_config_flag(default: Optional[str], help_text: str,
                       lock_config: bool = True) -> config_flags.FlagHolder:
  """``--config=FILE[:ARG]`` for an absl main, its --config.FIELD overrides checked first.

  ml_collections applies overrides while the flag is defined, with a traceback
  for an unknown field; checking them here turns that into one FATAL line with
  the closest field's name. Call at module level, as absl flags are defined.
  """
  try:
    check_overrides(sys.argv, default)
  except ConfigError as e:
    sys.exit(f"FATAL ConfigError: {e}")
  return config_flags.DEFINE_config_file("config", default, help_text, lock_config=lock_config)


def resolve_preprocessing(name: str, preprocessing: str, observes: str) -> str:
  """'auto' -> how this dataset's pixels feed a likelihood of ``observes`` pixels.

  ``observes``: 'binary' or 'continuous' (``models.observes(config)``).
  """
  if preprocessing != "auto":
    return preprocessing
  if observes == "continuous":
    return "dequantize"
  return "binary" if datasets.is_binary(name) else "dynamic"


def preprocessing_of(config: ml_collections.ConfigDict, name: Optional[str] = None) -> str:
  """The preprocessing a (validated) config uses on dataset ``name`` (default: its own)."""
  return resolve_preprocessing(name or config.data.name, config.data.preprocessing,
                               models.observes(config))


def check_data_model(name: str, preprocessing: str, observes: str) -> None:
  """The pixels a likelihood sees must be of its kind, made from data of the right kind.

  Binary data has no intensities: reading its {0, 1} as 8-bit levels (dynamic
  binarization, dequantization) would train on near-black noise.
  """
  binary_data = datasets.is_binary(name)
  if preprocessing == "binary" and not binary_data:
    _fail("data.preprocessing", preprocessing,
          f"dataset {name!r} is not binary; use 'dynamic' (or 'auto')")
  if binary_data and observes == "continuous":
    _fail("data.name", name, "its pixels are already binary, not 8-bit levels, and this "
          "model's likelihood models continuous pixels; use a grayscale or colour dataset, "
          "or a binary (Bernoulli) likelihood")
  if binary_data and preprocessing == "dynamic":
    _fail("data.preprocessing", preprocessing, f"dataset {name!r} is already binary: its "
          "pixels are not 8-bit levels to binarize; use 'binary' (or 'auto')")
  continuous = observes == "continuous"
  if continuous and preprocessing != "dequantize":
    _fail("data.preprocessing", preprocessing,
          "this model's likelihood models continuous pixels; use 'dequantize' (or 'auto')")
  if not continuous and preprocessing == "dequantize":
    _fail("data.preprocessing", preprocessing,
          "a Bernoulli likelihood needs binary pixels; use 'binary' or 'dynamic' (or 'auto')")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first invalid field and the valid values."""
  _number(config, "seed", minimum=0, integer=True)
  name = _choice(config, "data.name", datasets.DATASETS)
  preprocessing = _choice(config, "data.preprocessing", ("auto",) + pipeline.PREPROCESSING)
  fallback = _get(config, "data.fallback")
  if fallback not in ("", None, *datasets.EMBEDDED_DATASETS):
    _fail("data.fallback", fallback,
          f"use '' (no fallback) or one of {', '.join(datasets.EMBEDDED_DATASETS)}")

  _number(config, "data.validation_size", minimum=-1, integer=True)
  validation_plan = splits.plan_of(config.data)  # ConfigError if validation could touch test

  family = models.get(_get(config, "model.name"))
  family.validate(config, datasets.info(name))
  observes = family.observes(config)
  check_data_model(name, resolve_preprocessing(name, preprocessing, observes), observes)

  _number(config, "objective.beta", minimum=0)
  _number(config, "objective.warmup_steps", minimum=0, integer=True)
  _number(config, "objective.free_bits", minimum=0)
  if "name" in config.objective:  # runs recorded before the field existed train the ELBO
    training_objectives.validate(config, family.build(config, datasets.info(name)))

  _choice(config, "optim.optimizer", OPTIMIZERS)
  _number(config, "optim.learning_rate", minimum=0, strict=True)
  schedule = _choice(config, "optim.schedule", SCHEDULES)
  decay_epochs = _get(config, "optim.decay_epochs")
  if (not isinstance(decay_epochs, (tuple, list)) or
      any(isinstance(e, bool) or not isinstance(e, (int, float)) or e <= 0
          for e in decay_epochs) or list(decay_epochs) != sorted(set(decay_epochs))):
    _fail("optim.decay_epochs", decay_epochs, "must be a tuple of increasing positive epochs, "
          "e.g. (200, 350, 500)")
  if schedule == "step" and not decay_epochs:
    _fail("optim.decay_epochs", decay_epochs, "schedule 'step' needs at least one epoch")
  _number(config, "optim.decay_factor", minimum=0, strict=True)
  _number(config, "optim.decay_rate", minimum=0, strict=True)
  _number(config, "optim.warmup_steps", minimum=0, integer=True)
  _number(config, "optim.grad_clip_norm", minimum=0)
  _number(config, "optim.weight_decay", minimum=0)
  _choice(config, "optim.on_nonfinite", NONFINITE_POLICIES)
  _number(config, "optim.max_consecutive_nonfinite", minimum=1, integer=True)

  _number(config, "batch_size", minimum=1, integer=True)
  _number(config, "num_epochs", minimum=0, strict=True)
  steps = _get(config, "num_train_steps")
  if isinstance(steps, bool) or not isinstance(steps, int) or (steps <= 0 and steps != -1):
    _fail("num_train_steps", steps, "must be a positive integer, or -1 to use num_epochs")
  for field in ("steps_per_dispatch", "log_every", "eval_every", "checkpoint_every",
                "keep_checkpoints", "eval.batch_size"):
    _number(config, field, minimum=1, integer=True)
  keep_best = _boolean(config, "keep_best_checkpoint")
  metric = _choice(config, "selection.metric", SELECTION_METRICS)
  patience = _number(config, "selection.patience", minimum=0, integer=True)
  if (keep_best or patience) and validation_plan.kind == "none":
    _fail("keep_best_checkpoint" if keep_best else "selection.patience",
          keep_best if keep_best else patience, "selection needs a validation set, and "
          "data.validation_split is 'none' here; set data.validation_split='auto' (or "
          "'holdout'); the test split is never used to select")
  if metric == "nll" and not _get(config, "eval.num_importance_samples_during_training"):
    _fail("selection.metric", metric, "it needs eval.num_importance_samples_during_training "
          "> 0 (the k of validation NLLs); or use 'neg_elbo'")
  nan_at_step = _number(config, "debug.nan_at_step", minimum=-1, integer=True)
  if nan_at_step == 0:
    _fail("debug.nan_at_step", 0, "use -1 (off) or the number of an update, >= 1")
  for field in ("batch_size", "eval.batch_size"):
    try:
      parallel.per_device(_get(config, field), field)
    except ValueError as e:
      raise ConfigError(f"config.{e}") from None
  _number(config, "eval.seed", minimum=0, integer=True)
  _number(config, "eval.num_importance_samples", minimum=0, integer=True)
  extra = _get(config, "eval.extra_num_importance_samples")
  if not isinstance(extra, (tuple, list)) or any(
      isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in extra):
    _fail("eval.extra_num_importance_samples", extra, "must be a tuple of positive integers "
          "(the extra k of the final test NLL), e.g. (5000,)")
  _number(config, "eval.num_importance_samples_during_training", minimum=0, integer=True)
  _number(config, "eval.iwae_chunk_size", minimum=1, integer=True)
  _number(config, "eval.collapse_rate_floor", minimum=0)
  _number(config, "images.num_reconstructions", minimum=0, integer=True)
  _number(config, "images.num_samples", minimum=0, integer=True)
