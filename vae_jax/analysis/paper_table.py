"""A sweep laid out as a paper lays out its table, with the paper's figures beside ours.

A sweep config that defines ``table_layout()`` gets this table from
``experiments.tables`` as well as the ablation table. The layout is a dict:

  rows, columns, blocks   override fields of the members (e.g. "objective.num_samples")
  labels                  {field: {value: label}}: how values are shown (default: as is)
  metrics                 [(keys, header, format)]: a cell shows the first key of ``keys``
                          a member's test results have ("nll"; "active_units_by_layer"
                          before "active_units")
  reference               {(block value, column value, row value): [figure per metric]}
  reference_name          where the reference figures come from

Each cell reads "ours (reference)"; several seeds of a cell (members that differ
only in fields outside rows, columns and blocks, e.g. ``seed``) show mean ± std,
the sample std as the ablation table's (numbers), or each seed's value (text):
one seed's figure alone would pass a seed's luck for the method's. Nothing here
knows which study the layout is of.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Optional

import numpy as np

from vae_jax.analysis import tables

PAPER_TABLE = "paper_table.md"


def layout_of(config_spec: str, workdir: str) -> Optional[dict]:
  """The ``table_layout()`` of the sweep's config file, or None if it defines none."""
  path = config_spec.split(":", 1)[0]
  candidates = [path, os.path.join(os.getcwd(), path), os.path.join(workdir, "..", path)]
  path = next((p for p in candidates if os.path.isfile(p)), None)
  if path is None:
    return None
  spec = importlib.util.spec_from_file_location("table_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.table_layout() if hasattr(module, "table_layout") else None


def _value(members: list[tables.Member], keys: tuple[str, ...], fmt: str) -> str:
  values = []
  for m in members:
    test = m.results["test"]
    key = next((k for k in keys if test.get(k) is not None), None)
    if key is not None:
      values.append(test[key])
  if not values:
    return "–"
  if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
    mean = format(float(np.mean(values)), fmt or "g")
    if len(values) == 1:
      return mean
    return f"{mean} ± {format(float(np.std(values, ddof=1)), fmt or 'g')}"
  return "/".join(str(v) for v in values)


def _keys(members: list[tables.Member], fields: tuple[str, str, str]) -> set[tuple]:
  return {tuple(m.overrides.get(f) for f in fields) for m in members}


def _cell(members: list[tables.Member], fields: tuple[str, str, str],
          key: tuple) -> list[tables.Member]:
  """The members of one cell: every seed of its (block, column, row)."""
  return [m for m in members if tuple(m.overrides.get(f) for f in fields) == key]


def to_markdown(workdir: str, layout: dict) -> str:
  """One markdown table per block: a row per ``rows`` value, metric x column cells."""
  _, members = tables.read_sweep(workdir)
  done = [m for m in members if m.status == "done"]
  labels = layout.get("labels", {})
  label = lambda field, value: str(labels.get(field, {}).get(value, value))
  fields = (layout["blocks"], layout["columns"], layout["rows"])
  values = [list(dict.fromkeys(m.overrides.get(f) for m in members)) for f in fields]
  reference = layout.get("reference", {})
  out = []
  for block in values[0]:
    out.append(f"**{label(fields[0], block)}**\n")
    header = [label(fields[2], "__name__") if "__name__" in labels.get(fields[2], {})
              else fields[2]]
    header += [f"{label(fields[1], c)} {name}" for c in values[1] for _, name, _ in
               layout["metrics"]]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    for row in values[2]:
      cells = [label(fields[2], row)]
      for column in values[1]:
        cell = _cell(done, fields, (block, column, row))
        ref = reference.get((block, column, row))
        for i, (keys, _, fmt) in enumerate(layout["metrics"]):
          ours = _value(cell, tuple(keys), fmt)
          cells.append(ours + (f" ({ref[i]})" if ref is not None else ""))
      out.append("| " + " | ".join(cells) + " |")
    out.append("")
  seeds = max((len(_cell(done, fields, key)) for key in _keys(done, fields)), default=0)
  spread = (" Ours: mean ± std (ddof = 1) over a cell's finished seeds; text: each seed's, "
            "/-separated." if seeds > 1 else "")
  if reference:
    out.append(f"Cells: ours ({layout.get('reference_name', 'reference')}).{spread} "
               f"{len(done)} of {len(members)} members done.")
  elif spread:
    out.append(spread.strip())
  return "\n".join(out)


def write(workdir: str, layout: dict) -> tuple[str, str]:
  """Writes DIR/tables/paper_table.md; returns (its path, its text)."""
  text = to_markdown(workdir, layout)
  path = os.path.join(workdir, tables.TABLES_DIR, PAPER_TABLE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text + "\n")
  return path, text
