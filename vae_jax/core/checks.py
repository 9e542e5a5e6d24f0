"""Config field checks shared by the generic validation and each model family's own.

Every error names the field as it is overridden on the command line
(``config.model.latent_dim``) and what would be valid, so a typo costs seconds,
not a compile and a crash mid-run.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import ml_collections


class ConfigError(ValueError):
  """A config field holds a value the code cannot run with."""


_MISSING = object()


def get(config: ml_collections.ConfigDict, field: str) -> Any:
  """The value at dotted ``field`` (ml_collections' own dotted get), or a ConfigError."""
  try:
    value = config.get(field, _MISSING)
  except (TypeError, AttributeError):  # the path runs through a value that is not a group
    value = _MISSING
  if value is _MISSING:
    raise ConfigError(f"config.{field} is missing; start from configs/default.py.")
  return value


def fail(field: str, value: Any, valid: str) -> None:
  raise ConfigError(f"config.{field}={value!r} is invalid: {valid}.")


def choice(config: ml_collections.ConfigDict, field: str, allowed: Iterable[str]) -> str:
  value = get(config, field)
  allowed = tuple(allowed)
  if value not in allowed:
    fail(field, value, f"valid values are {', '.join(map(repr, allowed))}")
  return value


def number(config: ml_collections.ConfigDict, field: str, *, minimum: float,
           integer: bool = False, strict: bool = False) -> float:
  """A finite number >= minimum (> minimum if ``strict``); NaN and Inf are refused.

  NaN needs its own test: every comparison with it is False, so a bare range
  check would let it through to fail after compiling.
  """
  value = get(config, field)
  kind = numbers.Integral if integer else numbers.Real
  bad_type = isinstance(value, bool) or not isinstance(value, kind)
  if (bad_type or not math.isfinite(value) or value < minimum
      or (strict and value == minimum)):
    word = "an integer" if integer else "a finite number"
    fail(field, value, f"must be {word} {'>' if strict else '>='} {minimum}")
  return value


def boolean(config: ml_collections.ConfigDict, field: str) -> bool:
  value = get(config, field)
  if not isinstance(value, bool):
    fail(field, value, "must be True or False")
  return value
