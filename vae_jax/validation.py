"""Config validation: every bad value fails before data loading or compilation.

Each error names the field (as it is overridden on the command line) and what
would be valid, so a typo costs seconds, not a compile and a crash mid-run.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Any, Iterable, Optional, Sequence

import ml_collections
from ml_collections.config_flags import config_flags  # ConfigFileFlagParser: not re-exported

from vae_jax.data import datasets
from vae_jax.data import pipeline as input_pipeline
from vae_jax.core import likelihoods
from vae_jax.models import gaussian_vae as models
from vae_jax.objectives import elbo as objectives
from vae_jax import parallel

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
NONFINITE_POLICIES = ("stop", "skip")


class ConfigError(ValueError):
  """A config field holds a value the code cannot run with."""


def _get(config: ml_collections.ConfigDict, field: str) -> Any:
  node = config
  for part in field.split("."):
    if part not in node:
      raise ConfigError(f"config.{field} is missing; start from configs/default.py.")
    node = node[part]
  return node


def _fail(field: str, value: Any, valid: str) -> None:
  raise ConfigError(f"config.{field}={value!r} is invalid: {valid}.")


def _choice(config, field: str, allowed: Iterable[str]) -> str:
  value = _get(config, field)
  if value not in tuple(allowed):
    _fail(field, value, f"valid values are {', '.join(map(repr, allowed))}")
  return value


def _number(config, field: str, *, minimum: float, integer: bool = False,
            strict: bool = False) -> float:
  value = _get(config, field)
  kind = numbers.Integral if integer else numbers.Real
  bad_type = isinstance(value, bool) or not isinstance(value, kind)
  if bad_type or value < minimum or (strict and value == minimum):
    word = "an integer" if integer else "a number"
    _fail(field, value, f"must be {word} {'>' if strict else '>='} {minimum}")
  return value


def _boolean(config, field: str) -> bool:
  value = _get(config, field)
  if not isinstance(value, bool):
    _fail(field, value, "must be True or False")
  return value


def field_names(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every field path of ``config``, groups included: 'model', 'model.latent_dim', ..."""
  names = []
  for key, value in config.items():
    names.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      names += field_names(value, f"{prefix}{key}.")
  return names


def load_config_file(spec: str, flag: str = "config") -> ml_collections.ConfigDict:
  """The config of a ``FILE[:ARG]`` spec, as ``--FLAG=FILE[:ARG]`` would load it."""
  config = config_flags.ConfigFileFlagParser(flag, lock_config=False).parse(spec)
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
  config = config_flags.ConfigFileFlagParser("config", lock_config=False).parse(spec)
  if not isinstance(config, ml_collections.ConfigDict):
    return  # unreadable file: the flag itself reports it
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


def resolve_preprocessing(name: str, preprocessing: str, likelihood: str) -> str:
  """'auto' -> how this dataset's pixels feed this likelihood."""
  if preprocessing != "auto":
    return preprocessing
  if likelihoods.is_continuous(likelihood):
    return "dequantize"
  return "binary" if datasets.is_binary(name) else "dynamic"


def check_data_model(name: str, preprocessing: str, likelihood: str) -> None:
  """The pixels a likelihood sees must be of its kind (binary vs continuous)."""
  if preprocessing == "binary" and not datasets.is_binary(name):
    _fail("data.preprocessing", preprocessing,
          f"dataset {name!r} is not binary; use 'dynamic' (or 'auto')")
  continuous = likelihoods.is_continuous(likelihood)
  if continuous and preprocessing != "dequantize":
    _fail("data.preprocessing", preprocessing,
          f"likelihood {likelihood!r} models continuous pixels; use 'dequantize' (or 'auto')")
  if not continuous and preprocessing == "dequantize":
    _fail("data.preprocessing", preprocessing,
          "a Bernoulli likelihood needs binary pixels; use 'binary' or 'dynamic' (or 'auto')")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first invalid field and the valid values."""
  _number(config, "seed", minimum=0, integer=True)
  name = _choice(config, "data.name", datasets.DATASETS)
  preprocessing = _choice(config, "data.preprocessing",
                          ("auto",) + input_pipeline.PREPROCESSING)
  fallback = _get(config, "data.fallback")
  if fallback not in ("", None, *datasets.EMBEDDED_DATASETS):
    _fail("data.fallback", fallback,
          f"use '' (no fallback) or one of {', '.join(datasets.EMBEDDED_DATASETS)}")

  encoder = _choice(config, "model.encoder", models.ENCODERS)
  decoder = _choice(config, "model.decoder", models.DECODERS)
  _number(config, "model.latent_dim", minimum=1, integer=True)
  _number(config, "model.width", minimum=1, integer=True)
  depth = _number(config, "model.depth", minimum=0, integer=True)
  _choice(config, "model.activation", models.ACTIVATIONS)
  likelihood = _choice(config, "model.likelihood", likelihoods.LIKELIHOODS)
  _number(config, "model.gaussian_scale", minimum=0, strict=True)
  if decoder == "autoregressive" and likelihood != "bernoulli":
    _fail("model.likelihood", likelihood,
          "decoder 'autoregressive' is a Bernoulli model of binary pixels; use 'bernoulli'")
  if decoder == "autoregressive" and datasets.image_shape(name)[2] != 1:
    _fail("data.name", name, "decoder 'autoregressive' models one-channel images; use a "
          "grayscale dataset")
  if "conv" in (encoder, decoder):
    if depth < 1:
      _fail("model.depth", depth, "a conv encoder/decoder needs at least 1 stage")
    height, width, _ = datasets.image_shape(name)
    if height % 2**depth or width % 2**depth:
      _fail("model.depth", depth, f"conv stages halve the {height}x{width} images of "
            f"{name!r} {depth} times; the size must divide by 2**depth")
  check_data_model(name, resolve_preprocessing(name, preprocessing, likelihood),
                   likelihood)

  _number(config, "objective.beta", minimum=0)
  _number(config, "objective.warmup_steps", minimum=0, integer=True)
  _number(config, "objective.free_bits", minimum=0)
  _choice(config, "objective.kl_estimator", objectives.KL_ESTIMATORS)

  _choice(config, "optim.optimizer", OPTIMIZERS)
  _number(config, "optim.learning_rate", minimum=0, strict=True)
  _choice(config, "optim.schedule", SCHEDULES)
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
  _boolean(config, "keep_best_checkpoint")
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
  _number(config, "eval.num_importance_samples_during_training", minimum=0, integer=True)
  _number(config, "eval.iwae_chunk_size", minimum=1, integer=True)
  _number(config, "eval.collapse_rate_floor", minimum=0)
  _number(config, "images.num_reconstructions", minimum=0, integer=True)
  _number(config, "images.num_samples", minimum=0, integer=True)
