"""The architecture's two rules, checked on the source: layers; no family names in generic code."""

import ast
import os
import re

import pytest

from tests.conftest import REPO
from vae_jax import models

# Lower ranks never import higher ones (docs/design.md, "Layers"). Same rank: allowed.
RANKS = {
    "vae_jax.core": 0, "vae_jax.progress": 0,
    "vae_jax.data": 1, "vae_jax.parallel": 1,
    "vae_jax.objectives": 2,
    "vae_jax.models": 3,
    "vae_jax.pictures": 4,
    "vae_jax.training": 5, "vae_jax.evaluation": 5, "vae_jax.validation": 5,
    "vae_jax.analysis": 6, "vae_jax.perf": 6,
    "studies": 7,
    "experiments": 8,
}
ROOTS = ("vae_jax", "studies", "experiments")


def _rank(module: str) -> int:
  for prefix in sorted(RANKS, key=len, reverse=True):
    if module == prefix or module.startswith(prefix + "."):
      return RANKS[prefix]
  raise KeyError(f"{module} has no layer: add it to RANKS and docs/design.md")


def _sources(include_tests: bool = False):
  for root in ROOTS:
    for directory, _, files in os.walk(os.path.join(REPO, root)):
      for name in files:
        is_test = name.startswith("test_") or name == "conftest.py"
        if name.endswith(".py") and (include_tests or not is_test):
          path = os.path.join(directory, name)
          module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
          yield path, module.removesuffix(".__init__")


def _imports(path: str):
  tree = ast.parse(open(path, encoding="utf-8").read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_lower_layers_never_import_higher_ones():
  violations = []
  for path, module in _sources():
    for imported in _imports(path):
      if imported.split(".")[0] not in ROOTS:
        continue
      if imported.split(".")[0] == "studies" and module.startswith("studies."):
        own = module.split(".")[1]
        if imported.split(".")[1] not in (own, "conftest"):
          violations.append(f"{module} imports another study: {imported}")
        continue
      if _rank(imported) > _rank(module):
        violations.append(f"{module} (layer {_rank(module)}) imports {imported} "
                          f"(layer {_rank(imported)})")
  assert not violations, "\n".join(violations)


def test_the_layer_check_sees_a_violation():
  """The check must be able to fail: a model importing the training loop is caught."""
  assert _rank("vae_jax.training.loop") > _rank("vae_jax.models.gaussian_vae")
  assert _rank("vae_jax.core.likelihoods") < _rank("vae_jax.objectives.elbo")
  with pytest.raises(KeyError):
    _rank("vae_jax.somewhere_new")


@pytest.mark.parametrize("family", models.available())
def test_no_family_name_outside_its_module_config_and_tests(family):
  """Generic code calls the interface; it never tests which family it runs."""
  pattern = re.compile(rf"\b{re.escape(family)}\b")
  own = os.path.join(REPO, "vae_jax", "models", f"{family}.py")
  found = []
  for path, _ in _sources():
    if path == own or os.path.basename(path) == "config.py":
      continue
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
      if pattern.search(line):
        found.append(f"{os.path.relpath(path, REPO)}:{number}: {line.strip()}")
  assert not found, "\n".join(found)
