"""The files of an ablation table: Markdown (with its caption and notes), CSV and LaTeX.

tables.py reads a sweep into an Ablation; this module only lays it out, so the
three formats say the same: the same caption, the same failed and missing
members under the table, numbers at each metric's precision (the CSV keeps
them whole).
"""

from __future__ import annotations

import csv
import io
import os
import re
from typing import Optional

from vae_jax.analysis import tables

TABLE_NAME = "ablation"
# The LaTeX headers of tables.FIELD_NAMES and of the protocol columns.
LATEX_FIELD_NAMES = {"objective.beta": r"$\beta$", "model.latent_dim": "latent dim",
                     "model.likelihood": "likelihood", "model.gaussian_scale": r"$\sigma$",
                     "objective.free_bits": r"free bits $\lambda$",
                     "objective.warmup_steps": "KL warm-up steps"}
PROTOCOL_NAMES = {"dataset.preprocessing": "pixels", "unit": "unit"}


def caption(ab: tables.Ablation) -> str:
  k = ab.num_importance_samples
  nll = f"NLL: IWAE bound with k = {k}" if k else "NLL not evaluated (k = 0)"
  return (f"Ablation of {ab.config or 'the sweep'}: {tables.summary_line(ab)}; {nll}; "
          f"{ab.protocol.get('unit', 'units by row')}, mean ± std over seeds.")


def notes(ab: tables.Ablation) -> list[str]:
  """Lines to print under the table: single-seed rows, failed and missing members."""
  out = []
  if ab.varying:
    out.append(f"Rows differ in {', '.join(ab.varying)} (set by the swept "
               f"{', '.join(f for f in ab.swept if f in tables.BY_SETTING)}): they model "
               "different data, so their likelihoods are not comparable across kinds.")
  if any(r.n == 1 for r in ab.rows):
    out.append("Rows with n = 1 show a single seed's value (no std).")
  failed, missing = ab.failed, ab.missing
  if failed:
    out.append(f"Failed ({len(failed)} of {len(ab.members)} members, not in the table):")
    out += [f"  {m.name}: {m.failure_reason()}" for m in failed]
  if missing:
    out.append(f"Missing ({len(missing)} of {len(ab.members)} members, no results.json or "
               f"failure.json yet): {', '.join(m.name for m in missing)}")
  return out


def _headers(ab: tables.Ablation, latex: bool) -> list[str]:
  names = LATEX_FIELD_NAMES if latex else tables.FIELD_NAMES
  fields = [names.get(f, rf"\texttt{{{_tex(f)}}}" if latex else f) for f in ab.swept]
  fields += [PROTOCOL_NAMES.get(f, f) for f in ab.varying]
  k = ab.num_importance_samples
  metric = {key: (tex if latex else md) for key, md, tex, _ in tables.METRICS}
  for key in ("nll", "nll_bits_per_dim"):
    metric[key] += rf" (IWAE, $k={k}$)" if latex else f" (IWAE, k={k})"
  return fields + ["$n$" if latex else "n"] + [metric[key] for key in ab.metrics]


def _cells(ab: tables.Ablation, row: tables.Row, pm: str) -> list[str]:
  fmt = {key: f for key, *_, f in tables.METRICS}
  cells = ["—" if row.setting[f] is None else tables.format_value(row.setting[f])
           for f in ab.swept]
  cells += [tables.format_value(row.protocol.get(f)) for f in ab.varying]
  cells.append(str(row.n))
  for key in ab.metrics:
    s = row.stats.get(key)
    cells.append("—" if s is None else format(s.mean, fmt[key])
                 + ("" if s.std is None else f" {pm} {format(s.std, fmt[key])}"))
  return cells


def to_markdown(ab: tables.Ablation) -> str:
  headers = _headers(ab, latex=False)
  lines = [f"**Table.** {caption(ab)}", "", "| " + " | ".join(headers) + " |",
           "|" + "---:|" * len(headers)]
  lines += ["| " + " | ".join(_cells(ab, r, "±")) + " |" for r in ab.rows]
  extra = [("  - " if n.startswith(" ") else "- ") + n.strip() for n in notes(ab)]
  return "\n".join(lines + ([""] + extra if extra else [])) + "\n"


def _tex(text: str) -> str:
  return re.sub(r"([&%$#_{}])", r"\\\1", text).replace("~", r"\textasciitilde{}")


def to_latex(ab: tables.Ablation) -> str:
  """A booktabs tabular; caption and notes as % comments, for the paper's own table env."""
  comments = [f"% {caption(ab)}"] + [f"% {n}" for n in notes(ab)]
  headers = _headers(ab, latex=True)
  lines = [r"\begin{tabular}{" + "r" * len(headers) + "}", r"\toprule",
           " & ".join(headers) + r" \\", r"\midrule"]
  lines += [" & ".join(_tex(c) if "$" not in c else c for c in _cells(ab, r, r"$\pm$")) + r" \\"
            for r in ab.rows]
  return "\n".join(comments + lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def to_csv(ab: tables.Ablation) -> str:
  """One row per setting; swept fields by path, then n, seeds, KEY_mean and KEY_std columns."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(list(ab.swept) + list(ab.varying) + ["n", "seeds"]
                  + [f"{key}_{s}" for key in ab.metrics for s in ("mean", "std")])
  for r in ab.rows:
    values = [r.setting[f] if r.setting[f] is not None else "" for f in ab.swept]
    values += [r.protocol.get(f, "") for f in ab.varying]
    values += [r.n, " ".join(str(s) for s in r.seeds)]
    for key in ab.metrics:
      s = r.stats.get(key)
      values += ["", ""] if s is None else [repr(s.mean), "" if s.std is None else repr(s.std)]
    writer.writerow(values)
  return out.getvalue()


def _write(path: str, text: str) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def write_tables(ab: tables.Ablation, out_dir: Optional[str] = None) -> list[str]:
  """Writes ablation.{md,csv,tex} to DIR/tables (a generated folder); returns their paths."""
  out_dir = out_dir or os.path.join(ab.workdir, tables.TABLES_DIR)
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for ext, text in (("md", to_markdown(ab)), ("csv", to_csv(ab)), ("tex", to_latex(ab))):
    paths.append(os.path.join(out_dir, f"{TABLE_NAME}.{ext}"))
    _write(paths[-1], text)
  return paths
