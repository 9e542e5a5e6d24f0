"""The README's results row, checked against a run: ``python -m experiments.check_readme_row``.

The README publishes seed 0 of ``configs/default.py`` (test -ELBO and the NLL at
k = 5,000). Those figures are exact on the processor that made them only: the
width of the CPU's vector path changes float rounding in XLA's kernels, and over
3,900 training steps that moves the figures by a few hundredths of a nat (the
README says which machine and how far others land). The check therefore allows
``TOLERANCE`` nats: more than processors and rounding move the figures, less
than any change of meaning does (one epoch fewer, another k, another β or
binarization moves them by half a nat or more). The protocol itself (dataset,
seed, k, epochs) must match exactly.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "README.md")
TOLERANCE = 0.2  # nats per example, on test -ELBO and NLL alike
# The protocol of the row: configs/default.py, seed 0.
PROTOCOL = {"dataset": "binarized_mnist", "seed": 0, "num_importance_samples": 5000,
            "epochs": 10.0}
_ROW = re.compile(r"^\| 0 \| \*\*(?P<neg_elbo>[\d.]+)\*\* \| \*\*(?P<nll>[\d.]+)\*\* \|")


class RowError(ValueError):
  """The run is not the README's protocol, or its figures are not the README's row."""


def readme_row(path: str = README) -> dict[str, float]:
  """{"neg_elbo", "nll"} of the README's seed-0 row (its two bold figures)."""
  with open(path, encoding="utf-8") as f:
    for line in f:
      match = _ROW.match(line)
      if match:
        return {k: float(v) for k, v in match.groupdict().items()}
  raise RowError(f"{path} has no seed-0 results row ('| 0 | **-ELBO** | **NLL** | ...').")


def protocol_of(results: dict[str, Any]) -> dict[str, Any]:
  """The fields of a results.json that define the protocol, named as in ``PROTOCOL``."""
  test = results.get("test", {})
  return {"dataset": results.get("dataset", {}).get("used"), "seed": results.get("seed"),
          "num_importance_samples": test.get("num_importance_samples"),
          "epochs": results.get("epochs")}


def compare(results: dict[str, Any], row: dict[str, float],
            tolerance: float = TOLERANCE) -> str:
  """One line saying how the run compares with the row; raises RowError if it does not match."""
  protocol = protocol_of(results)
  wrong = [f"{k}={protocol[k]!r} (the row's: {v!r})" for k, v in PROTOCOL.items()
           if protocol[k] != v]
  if wrong:
    raise RowError(f"not the README row's protocol (configs/default.py, seed 0): "
                   f"{', '.join(wrong)}.")
  parts, off = [], []
  for key, label in (("neg_elbo", "test -ELBO"), ("nll", "NLL(k=5000)")):
    value = float(results["test"][key])
    delta = value - row[key]
    parts.append(f"{label} {value:.3f} (README {row[key]:.3f}, {delta:+.3f})")
    if abs(delta) > tolerance:
      off.append(label)
  line = "; ".join(parts)
  if off:
    raise RowError(f"{line}: {', '.join(off)} differ from the README's row by more than "
                   f"{tolerance} nats, more than processors move it: the run means "
                   f"something else.")
  return f"{line}: within {tolerance} nats of the README's row (processors differ by less)."


def check_workdir(workdir: str) -> str:
  """``compare`` for WORKDIR/results.json and the README's row."""
  path = os.path.join(workdir, "results.json")
  try:
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
  except (OSError, ValueError) as e:
    raise RowError(f"cannot read {path} ({e}); give the workdir of a finished run of "
                   f"configs/default.py.") from None
  return compare(results, readme_row())
