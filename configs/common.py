"""The config argument, ``--config=FILE.py:NAME=VALUE,...``, parsed one way for every file.

ml_collections passes whatever follows the first colon to ``get_config(arg)`` as
one string. A config file that takes an argument declares its names and defaults
and gets them back typed; the user gets the same spelling and the same one-line
error in every file:

  args = common.parse_arg(arg, file=__file__, beta=1.0, latent_dim=20,
                          data=common.OneOf("mnist_5k", ("mnist_5k", "mnist")))
  args.beta, args.latent_dim, args.data

  --config=configs/beta.py:beta=0.5,latent_dim=10

Each value is cast to the type of its default (bool, int, float or str; a bool
is ``true`` or ``false``), or must be one of a ``OneOf``'s choices. An unknown
name, an item without ``=``, a value of the wrong type or a name given twice is
refused with a ConfigArgumentError that names the file, the item and every
valid name with its type and default: a typo in a sweep's argument must stop the
run before it trains the wrong model, and say what would have been right.
(In the spirit of big_vision's ``configs/common.py:parse_arg``; stricter: no
bare values, no names outside the declaration.)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, NoReturn, Optional, Union

import ml_collections

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BOOLS = {"true": True, "false": False}


class ConfigArgumentError(ValueError):
  """The config argument names no declared argument, or gives it a value it cannot take.

  A ValueError, which ml_collections' config flag reports with the config file's
  traceback (ending in this message) rather than swallowing.
  """


@dataclasses.dataclass(frozen=True)
class OneOf:
  """A string argument limited to ``choices``: e.g. the datasets a study has settings for."""
  default: str
  choices: tuple[str, ...]

  def __post_init__(self) -> None:
    object.__setattr__(self, "choices", tuple(self.choices))
    if self.default not in self.choices:
      raise TypeError(f"OneOf default {self.default!r} is not among its choices "
                      f"{self.choices}.")


Default = Union[bool, int, float, str, OneOf]


def parse_arg(arg: Optional[str], *, file: str, **spec: Default) -> ml_collections.ConfigDict:
  """The declared arguments, each from ``arg`` (cast to its default's type) or its default.

  Args:
    arg: the string after the colon in ``--config=FILE.py:ARG``: comma-separated
      NAME=VALUE items (empty items are skipped); None or "" gives the defaults.
    file: the config file, for messages; ``__file__`` is shown relative to the
      repository, so messages read as the user typed the flag.
    **spec: every accepted name with its default (bool, int, float or str: the
      value's type), or a OneOf for a string with a fixed set of values.

  Returns:
    A locked ConfigDict with one field per declared name.

  Raises:
    ConfigArgumentError: naming the file, the bad item and every valid name.
  """
  for name, default in spec.items():
    if not isinstance(default, (bool, int, float, str, OneOf)):
      raise TypeError(f"parse_arg: {name}={default!r}: a default must be a bool, int, float, "
                      f"str or OneOf (its type is the argument's type).")
  values = {name: (d.default if isinstance(d, OneOf) else d) for name, d in spec.items()}
  given = set()
  for item in (arg or "").split(","):
    if not item.strip():
      continue
    name, sep, text = (part.strip() for part in item.partition("="))
    if not sep:
      _refuse(arg, file, item, "it is not NAME=VALUE", spec)
    if name not in spec:
      _refuse(arg, file, item, f"unknown name {name!r}", spec)
    if name in given:
      _refuse(arg, file, item, f"{name} is given twice", spec)
    given.add(name)
    try:
      values[name] = _cast(text, spec[name])
    except ValueError as e:
      _refuse(arg, file, item, str(e), spec)
  return ml_collections.ConfigDict(values).lock()


def _cast(text: str, default: Default) -> Any:
  """``text`` as a value of ``default``'s kind; ValueError (saying why) otherwise."""
  if isinstance(default, OneOf):
    if text not in default.choices:
      raise ValueError(f"{text!r} is not one of its values")
    return text
  if isinstance(default, bool):  # before int: a bool is an int
    if text.lower() not in _BOOLS:
      raise ValueError(f"{text!r} is not a valid bool (true or false)")
    return _BOOLS[text.lower()]
  kind = type(default)
  try:
    return kind(text)
  except ValueError:
    raise ValueError(f"{text!r} is not a valid {kind.__name__}") from None


def describe(spec: dict[str, Default]) -> str:
  """'beta (float, default 1.0), data (one of 'a', 'b'; default 'a')': what the file accepts."""
  parts = []
  for name, default in spec.items():
    if isinstance(default, OneOf):
      choices = ", ".join(map(repr, sorted(default.choices)))
      parts.append(f"{name} (one of {choices}; default {default.default!r})")
    else:
      parts.append(f"{name} ({type(default).__name__}, default {default!r})")
  return ", ".join(parts) or "none (this file takes no argument)"


def display_path(file: str) -> str:
  """``file`` relative to the repository when it lies inside it, else as given."""
  path = os.path.abspath(file)
  return os.path.relpath(path, _REPO) if path.startswith(_REPO + os.sep) else file


def _refuse(arg: Optional[str], file: str, item: str, problem: str,
            spec: dict[str, Default]) -> NoReturn:
  raise ConfigArgumentError(
      f"Bad config argument {item!r} in '{display_path(file)}:{arg}': {problem}. Expected "
      f"comma-separated NAME=VALUE with NAME in: {describe(spec)}.")

