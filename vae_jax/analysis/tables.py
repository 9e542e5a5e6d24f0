"""Ablation tables of a finished sweep: one row per setting, mean ± std over seeds.

A sweep trains one run per member in DIR/<member>/ and lists the members in
DIR/sweep.json. A *setting* is a member's overrides without its seed; its row
pools the seeds that finished. An average only means something when every run
saw the same data and was scored the same way, so runs that differ in dataset,
preprocessing, test split, IWAE k, evaluation seed, steps, batch size or unit
are refused, never pooled. Members that failed or have not finished are
reported with the table, never dropped in silence: a table that hides its
failures overstates the method.

The Markdown, CSV and LaTeX files (DIR/tables/ablation.{md,csv,tex}) are
table_formats.py's; nothing else in DIR is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
from typing import Any, Optional, Sequence

import numpy as np

from vae_jax.training import workdir as workdir_lib  # light: no JAX, only file conventions

SWEEP_FILE = "sweep.json"
RESULTS_FILE = workdir_lib.RESULTS_FILE
METRICS_FILE = workdir_lib.METRICS_FILE
FAILURE_FILE = "failure.json"
TABLES_DIR = "tables"
PLOTS_DIR = "plots"
SEED_FIELD = "seed"
# Fields every pooled run must share: the data it was scored on and how.
PROTOCOL = ("dataset.used", "dataset.preprocessing", "dataset.test_split", "dataset.num_test",
            "test.num_importance_samples", "eval_seed", "steps", "batch_size", "unit")
# Headers researchers expect for common swept fields; other fields keep their path.
FIELD_NAMES = {"objective.beta": "β", "model.latent_dim": "latent dim",
               "model.likelihood": "likelihood", "model.gaussian_scale": "σ",
               "objective.free_bits": "free bits λ", "objective.warmup_steps": "KL warm-up steps"}
# Protocol fields that a swept field decides, so they may differ between rows (never
# within one): the likelihood decides whether the pixels are binarized or dequantized,
# and so the unit. Such rows model different data; a column shows each row's value.
BY_SETTING = {"model.likelihood": ("dataset.preprocessing", "unit"),
              "data.preprocessing": ("dataset.preprocessing", "unit")}
# A protocol field read from another where a run records it: early stopping ends runs
# at different steps, so runs compare by the steps they were given (older runs: steps).
PROTOCOL_SOURCE = {"steps": "planned_steps"}
# (key in results["test"], or a dotted path in results.json; Markdown header, LaTeX
# header, number format); a column is shown when some finished run reports the key
# (NLL is absent when k = 0; the validation columns, in runs before validation splits).
METRICS = (("neg_elbo", "test −ELBO", r"test $-$ELBO", ".2f"),
           ("nll", "NLL", "NLL", ".2f"),
           ("rate", "rate", "rate", ".2f"),
           # Per stochastic layer, where the model has several (a hierarchical family): which layer
           # carries the information, e.g. a top layer left unused.
           ("rate_z1", "rate z1", r"rate $z_1$", ".2f"),
           ("rate_z2", "rate z2", r"rate $z_2$", ".2f"),
           ("distortion", "distortion", "distortion", ".2f"),
           ("active_units", "active units", "active units", ".1f"),
           ("mutual_information", "MI", "MI", ".2f"),
           ("bits_per_dim", "bits/dim", "bits/dim", ".3f"),
           ("nll_bits_per_dim", "NLL bits/dim", "NLL bits/dim", ".3f"),
           ("validation.neg_elbo", "validation −ELBO", r"validation $-$ELBO", ".2f"),
           ("selection.checkpoint_step", "selected step", "selected step", ".0f"),
           # Disentanglement scores, where a member has disentanglement.json (read in as
           # results["disentanglement"]: experiments.disentanglement, docs/disentanglement.md).
           ("disentanglement.beta_vae.eval_accuracy", "BetaVAE", "BetaVAE", ".3f"),
           ("disentanglement.factor_vae.eval_accuracy", "FactorVAE", "FactorVAE", ".3f"),
           ("disentanglement.mig.discrete_mig", "MIG", "MIG", ".3f"),
           ("disentanglement.dci.disentanglement", "DCI D", "DCI D", ".3f"),
           ("disentanglement.dci.completeness", "DCI C", "DCI C", ".3f"),
           ("disentanglement.dci.informativeness_test", "DCI I", "DCI I", ".3f"),
           ("disentanglement.sap.SAP_score", "SAP", "SAP", ".3f"),
           ("disentanglement.modularity_explicitness.modularity_score", "modularity",
            "modularity", ".3f"),
           ("disentanglement.modularity_explicitness.explicitness_score_test", "explicitness",
            "explicitness", ".3f"),
           ("disentanglement.unsupervised.gaussian_total_correlation", "Gaussian TC",
            "Gaussian TC", ".3f"),
           ("disentanglement.unsupervised.mutual_info_score", "mean MI", "mean MI", ".3f"))
# A member's disentanglement scores, next to its results.json.
DISENTANGLEMENT_FILE = "disentanglement.json"


def metric_value(results: dict, key: str) -> Any:
  """A METRICS key's value in a run's results.json (None where the run has none)."""
  return results["test"].get(key) if "." not in key else workdir_lib.lookup(results, key)


def protocol_value(results: dict, field: str) -> Any:
  """A PROTOCOL field's value in a run's results.json (see PROTOCOL_SOURCE)."""
  source = workdir_lib.lookup(results, PROTOCOL_SOURCE.get(field, field))
  return workdir_lib.lookup(results, field) if source is None else source
_FATAL = re.compile(r"^FATAL\b")
_EXCEPTION = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b")


class TableError(RuntimeError):
  """The directory cannot be summarized (no sweep.json, no finished member, ...)."""


class MixedResultsError(TableError):
  """Finished members were trained or scored differently; their numbers cannot be pooled."""


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise TableError(f"cannot read {path}: {e}") from None


def member_metrics(workdir: str, name: str) -> dict[int, dict[str, Any]]:
  """{step: logged record} of member ``name`` (its METRICS_FILE); {} where it has none."""
  path = os.path.join(workdir, name, METRICS_FILE)
  if not os.path.exists(path):
    return {}
  # Imported here: it brings clu and TensorFlow, which a table without curves never needs.
  from vae_jax.training import metrics  # pylint: disable=g-import-not-at-top
  return metrics.read_jsonl(path)


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of the sweep and what its directory holds."""
  index: int
  name: str
  overrides: dict[str, Any]
  status: str  # "done" (results.json), "failed" (failure.json) or "missing" (neither)
  results: Optional[dict] = None
  failure: Optional[dict] = None

  @property
  def setting(self) -> dict[str, Any]:
    return {k: v for k, v in self.overrides.items() if k != SEED_FIELD}

  @property
  def seed(self) -> Any:
    return self.overrides.get(SEED_FIELD, (self.results or {}).get("seed"))

  def failure_reason(self) -> str:
    """'returncode N: <the line of the log tail that says what went wrong>'."""
    failure = self.failure or {}
    code = failure.get("returncode")
    if isinstance(code, int) and code < 0:
      try:
        code = f"{code} (killed by {signal.Signals(-code).name})"
      except ValueError:
        pass
    lines = [ln.strip() for ln in str(failure.get("tail") or "").splitlines() if ln.strip()]
    # A FATAL line (our commands' own message) beats an exception line beats the last line.
    useful = ([ln for ln in lines if _FATAL.match(ln)]
              + [ln for ln in lines if _EXCEPTION.match(ln)] + lines[-1:] + ["(empty log tail)"])[0]
    return f"returncode {code}: {useful[:200]}"


@dataclasses.dataclass(frozen=True)
class Stat:
  """A metric over a setting's seeds; std is the sample std (ddof=1), None when n = 1."""
  mean: float
  std: Optional[float]
  n: int


@dataclasses.dataclass(frozen=True)
class Row:
  """One setting: its swept values and its metrics pooled over the seeds that finished."""
  setting: dict[str, Any]
  members: tuple[str, ...]
  seeds: tuple[Any, ...]
  stats: dict[str, Stat]
  protocol: dict[str, Any] = dataclasses.field(default_factory=dict)  # fields of `varying`

  @property
  def n(self) -> int:
    return len(self.members)


@dataclasses.dataclass(frozen=True)
class Ablation:
  """Everything the writers and plots need: rows, the shared protocol, every member's status."""
  workdir: str
  config: str
  swept: tuple[str, ...]
  metrics: tuple[str, ...]
  rows: tuple[Row, ...]
  members: tuple[Member, ...]
  protocol: dict[str, Any]
  epochs: tuple[float, ...]
  varying: tuple[str, ...] = ()  # protocol fields that differ by row (see BY_SETTING)

  def with_status(self, status: str) -> list[Member]:
    return [m for m in self.members if m.status == status]

  @property
  def failed(self) -> list[Member]:
    return self.with_status("failed")

  @property
  def missing(self) -> list[Member]:
    return self.with_status("missing")

  @property
  def num_importance_samples(self) -> Optional[int]:
    return self.protocol.get("test.num_importance_samples")


def read_sweep(workdir: str) -> tuple[dict, list[Member]]:
  """sweep.json and every member with its status (done / failed / missing)."""
  path = os.path.join(workdir, SWEEP_FILE)
  if not os.path.exists(path):
    raise TableError(f"no {SWEEP_FILE} in {workdir}: is this a sweep directory?")
  sweep = _read_json(path)
  entries = sweep.get("members") if isinstance(sweep, dict) else None
  if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
    raise TableError(f"{path} has no list of members")
  members = []
  for i, entry in enumerate(entries):
    name = str(entry.get("name", ""))
    if not name or os.sep in name or name in (".", "..", TABLES_DIR, PLOTS_DIR):
      raise TableError(f"{path}: member {i} has an unusable name {name!r}")
    run = os.path.join(workdir, name)
    results = failure = None
    if os.path.exists(os.path.join(run, RESULTS_FILE)):
      status, results = "done", _read_json(os.path.join(run, RESULTS_FILE))
      if not isinstance(results, dict) or not isinstance(results.get("test"), dict):
        raise TableError(f"{os.path.join(run, RESULTS_FILE)} has no 'test' results")
      scores = os.path.join(run, DISENTANGLEMENT_FILE)
      if os.path.exists(scores):
        results = {**results, "disentanglement": _read_json(scores).get("scores", {})}
    elif os.path.exists(os.path.join(run, FAILURE_FILE)):
      status = "failed"
      try:  # A damaged failure.json still means the run failed.
        failure = _read_json(os.path.join(run, FAILURE_FILE))
      except TableError as e:
        failure = {"tail": str(e)}
    else:
      status = "missing"
    members.append(Member(entry.get("index", i), name, dict(entry.get("overrides") or {}),
                          status, results, failure))
  return sweep, members


def format_value(value: Any) -> str:
  """A swept or protocol value as a header or caption shows it: 0.1, 10, absent."""
  if value is None:
    return "absent"
  return f"{value:g}" if isinstance(value, float) else str(value)


def setting_label(setting: dict[str, Any], fields: Optional[Sequence[str]] = None) -> str:
  """'free bits λ=0.5, KL warm-up steps=0': a setting as tables, plots and pictures name it."""
  fields = list(setting) if fields is None else fields
  return ", ".join(f"{FIELD_NAMES.get(k, k)}={format_value(setting[k])}"
                   for k in fields if k in setting)


def check_protocol(done: Sequence[Member], by_setting: Sequence[str] = ()) -> dict[str, Any]:
  """The PROTOCOL values the finished members share; MixedResultsError names any that differ.

  Fields in ``by_setting`` need only agree within each setting; those that differ
  between settings are left out of the returned dict.
  """
  problems, shared = [], {}
  for field in PROTOCOL:
    groups: dict[str, list[Member]] = {}
    for m in done:
      key = json.dumps(m.setting, sort_keys=True) if field in by_setting else ""
      groups.setdefault(key, []).append(m)
    values = set()
    for group in groups.values():
      holders: dict[str, list[str]] = {}
      for m in group:
        holders.setdefault(json.dumps(protocol_value(m.results, field)), []).append(m.name)
      if len(holders) > 1:
        parts = [f"{format_value(json.loads(v))} in {', '.join(names[:4])}"
                 + (f" and {len(names) - 4} more" if len(names) > 4 else "")
                 for v, names in holders.items()]
        problems.append(f"{field} differs: " + "; ".join(parts))
      values |= set(holders)
    if len(values) == 1:
      shared[field] = json.loads(values.pop())
  if problems:
    raise MixedResultsError("refusing to pool runs trained or scored differently:\n  "
                            + "\n  ".join(problems))
  return shared


def _sort_key(value: Any) -> tuple:
  """Numbers numerically (so 2 < 10), then other values by their JSON text, then None."""
  try:
    return (0, float(value), "")
  except (TypeError, ValueError):
    return (1 if value is not None else 2, 0.0, json.dumps(value, sort_keys=True))


def _stat(values: list[float]) -> Stat:
  x = np.asarray(values, np.float64)
  return Stat(float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else None, int(x.size))


def summarize(workdir: str) -> Ablation:
  """Reads a sweep directory into an Ablation; refuses mixed protocols and an empty sweep."""
  sweep, members = read_sweep(workdir)
  done = [m for m in members if m.status == "done"]
  if not done:
    counts = {s: sum(m.status == s for m in members) for s in ("failed", "missing")}
    raise TableError(f"no member of the sweep in {workdir} has finished ({len(members)} members:"
                     f" {counts['failed']} failed, {counts['missing']} missing); nothing to "
                     "tabulate")
  swept = tuple(dict.fromkeys(f for m in members for f in m.setting))
  protocol = check_protocol(done, [f for s in swept for f in BY_SETTING.get(s, ())])
  varying = tuple(f for f in PROTOCOL if f not in protocol)
  groups: dict[str, list[Member]] = {}
  for m in done:
    groups.setdefault(json.dumps([m.setting.get(f) for f in swept]), []).append(m)
  metrics = tuple(key for key, *_ in METRICS
                  if any(metric_value(m.results, key) is not None for m in done))
  rows = []
  for group in groups.values():
    if len({json.dumps(m.seed) for m in group}) < len(group):  # replicas are not seeds
      raise TableError(f"members {', '.join(m.name for m in group)} share a setting and a seed")
    stats = {}
    for key in metrics:
      values = [metric_value(m.results, key) for m in group
                if metric_value(m.results, key) is not None]
      if values:
        stats[key] = _stat(values)
    rows.append(Row({f: group[0].setting.get(f) for f in swept}, tuple(m.name for m in group),
                    tuple(m.seed for m in group), stats,
                    {f: protocol_value(group[0].results, f) for f in varying}))
  rows.sort(key=lambda r: [_sort_key(r.setting[f]) for f in swept])
  epochs = tuple(sorted({m.results["epochs"] for m in done if m.results.get("epochs") is not None}))
  return Ablation(workdir, str(sweep.get("config", "")), swept, metrics, tuple(rows),
                  tuple(members), protocol, epochs, varying)


def summary_line(ab: Ablation) -> str:
  """'binarized_mnist (binary, test split, 10000 examples), 3900 steps (10 epochs), 2 seeds'."""
  p = ab.protocol
  epochs = "?" if not ab.epochs else "–".join(f"{e:g}" for e in sorted({ab.epochs[0],
                                                                          ab.epochs[-1]}))
  ns = sorted({r.n for r in ab.rows})
  seeds = sorted({str(s) for r in ab.rows for s in r.seeds}, key=_sort_key)
  n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
  pixels = p.get("dataset.preprocessing", "pixels by row")
  return (f"{p['dataset.used']} ({pixels}, {p['dataset.test_split']} split, "
          f"{p['dataset.num_test']} examples), {p['steps']} steps ({epochs} "
          f"epoch{'' if epochs == '1' else 's'}), "
          f"{n} seed{'s' if ns[-1] > 1 else ''} per setting (seeds {', '.join(seeds)})")
