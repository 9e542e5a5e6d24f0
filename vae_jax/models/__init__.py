"""Model families, one module each, chosen by ``config.model.name`` (as big_vision does).

``get(name)`` imports ``vae_jax.models.NAME``; nothing else in the codebase
lists the families, so adding one is adding its module (docs/models.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import ml_collections

from vae_jax.core import checks
from vae_jax.data import datasets
from vae_jax.models import interface

# Modules of this package that are not families.
_NOT_FAMILIES = ("interface", "layers", "convolutions")


def available() -> tuple[str, ...]:
  """The family modules present in this package."""
  return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)
                      if m.name not in _NOT_FAMILIES and not m.name.startswith("_")))


def get(name: str) -> ModuleType:
  """The family module ``name``, or a ConfigError listing the available ones."""
  if name not in available():
    raise checks.ConfigError(f"config.model.name={name!r} is invalid: valid values are "
                             f"{', '.join(map(repr, available()))} (modules of vae_jax/models).")
  return importlib.import_module(f"{__name__}.{name}")


def build(config: ml_collections.ConfigDict, data: datasets.DataInfo) -> interface.Model:
  """The model of ``config`` for data of this kind (validate the config first)."""
  return get(config.model.name).build(config, data)


def upgrade_recorded(recorded: dict) -> list[str]:
  """Fills in place the model fields a run's recorded config (JSON) lacks; returns their names.

  A run recorded before ``config.model.name`` existed belongs to the family that
  declares ``RECORDED_WITHOUT_NAME = True``; fields a family added since take the
  values its ``ADDED_FIELDS`` give, those that reproduce what the code did before.
  So old runs still resume, evaluate and draw their pictures.
  """
  model = recorded.setdefault("model", {})
  filled = []
  if "name" not in model:
    legacy = [n for n in available() if getattr(get(n), "RECORDED_WITHOUT_NAME", False)]
    if len(legacy) != 1:
      raise checks.ConfigError("The run's config.json has no model.name, and no single family "
                               "claims such runs; add model.name to it.")
    model["name"] = legacy[0]
    filled.append("model.name")
  for field, value in getattr(get(model["name"]), "ADDED_FIELDS", {}).items():
    if field not in model:
      model[field] = value
      filled.append(f"model.{field}")
  return filled


def observes(config: ml_collections.ConfigDict) -> str:
  """'binary' or 'continuous': the pixels the configured family's likelihood models."""
  return get(config.model.name).observes(config)
