"""Where a compiled program's time goes: each operation XLA runs, timed, by source line.

The roofline (``roofline``) says how far a program is from its matrix
products; this says what the rest is. ``breakdown`` runs the program under
``jax.profiler``, which records every operation (XLA "thunk": a fusion, a copy,
a product) the runtime executes, and reads the compiled program's text for
where each came from: XLA keeps, per instruction, the Python stack that emitted
it. Each operation is charged to the innermost frame in this project (e.g.
``training/step.py:train_step``) and, where a library made it, the innermost
library function under it (``optax:scale_by_adam...``); matrix products (dots,
convolutions, and fusions around them) are one group, the roofline's part.

Times are per program call divided by ``calls`` (e.g. steps), from the median of
each operation's executions, so preemption on a shared machine does not inflate
them. XLA:CPU may run independent operations on two threads at once, so their
sum can exceed the wall time; loops (``while``) are not counted themselves, only
the operations they run. Backends whose profile does not name operations after
the program's instructions (GPUs name kernels) give an empty breakdown.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import statistics
import tempfile
from typing import Any, Callable

import jax

PRODUCT_OPCODES = ("dot", "convolution")
CONTROL_OPCODES = ("while", "call", "conditional")
PRODUCTS = "matrix products"
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = .*? ([a-z][a-z0-9-]*)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) .*\{$")


def _tables(text: str) -> dict[str, dict[int, str]]:
  """The stack-frame tables of a compiled module's text, by section: id -> line."""
  tables, section = {}, None
  for line in text.splitlines():
    if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
      section = tables.setdefault(line, {})
    elif section is not None and line and line[0].isdigit():
      number, rest = line.split(" ", 1)
      section[int(number)] = rest
    elif section is not None and line.strip():
      section = None
  return tables


def _stacks(tables: dict[str, dict[int, str]]) -> dict[int, list[tuple[str, str]]]:
  """stack_frame_id -> [(file, function), ...], innermost first."""
  field = lambda s, name: int(re.search(rf"{name}=(\d+)", s).group(1))
  files = {k: v.strip('"') for k, v in tables.get("FileNames", {}).items()}
  functions = {k: v.strip('"') for k, v in tables.get("FunctionNames", {}).items()}
  locations = {k: (files.get(field(v, "file_name_id"), "?"),
                   functions.get(field(v, "function_name_id"), "?"))
               for k, v in tables.get("FileLocations", {}).items()}
  frames = {k: (field(v, "file_location_id"), field(v, "parent_frame_id"))
            for k, v in tables.get("StackFrames", {}).items()}
  stacks = {}
  for start in frames:
    stack, seen, frame = [], set(), start
    while frame in frames and frame not in seen:  # a root frame names itself as parent
      seen.add(frame)
      location, frame = frames[frame]
      stack.append(locations.get(location, ("?", "?")))
    stacks[start] = stack
  return stacks


def instructions(text: str) -> dict[str, dict[str, Any]]:
  """Each instruction of a compiled module's text: name -> opcode, product?, stack."""
  computations, current = collections.defaultdict(list), None
  for line in text.splitlines():
    match = _COMPUTATION.match(line)
    if match:
      current = match.group(1)
      continue
    match = _INSTRUCTION.match(line)
    if match and current:
      name, opcode, rest = match.groups()
      calls = re.findall(r"calls=%([^,\s}]+)", rest)
      frame = re.search(r"stack_frame_id=(\d+)", rest)
      computations[current].append((name, opcode, calls, int(frame.group(1)) if frame else None))

  def has_product(computation: str, seen: frozenset = frozenset()) -> bool:
    return any(op in PRODUCT_OPCODES or any(c not in seen and has_product(c, seen | {c})
                                            for c in calls)
               for _, op, calls, _ in computations.get(computation, ()))

  def first_frame(computation: str):  # XLA's own rewrites leave a fusion unattributed
    return next((f for _, _, _, f in reversed(computations.get(computation, ())) if f), None)

  stacks = _stacks(_tables(text))
  found = {}
  for body in computations.values():
    for name, opcode, calls, frame in body:
      product = opcode in PRODUCT_OPCODES or (opcode == "fusion" and any(map(has_product, calls)))
      if frame is None and opcode == "fusion":
        frame = next(filter(None, map(first_frame, calls)), None)
      found[name] = {"opcode": opcode, "product": product, "stack": stacks.get(frame, [])}
  return found


def where(stack: list[tuple[str, str]], root: str) -> str:
  """A short name for the source of an operation from its stack (innermost first)."""
  ours = next(((f, fn) for f, fn in stack if f.startswith(root)), None)
  if ours is None:
    return "(no source)" if not stack else _library(*stack[0])
  label = f"{os.path.relpath(ours[0], root)}:{_function(ours[1])}"
  inner = stack[:stack.index(ours)]
  return f"{label} > {_library(*inner[-1])}" if inner else label


def _library(path: str, function: str) -> str:
  parts = path.replace(os.sep, "/").split("/")
  package = next((p for p in reversed(parts[:-1]) if p not in ("_src", "transforms",
                                                                 "tree_utils", "linen")),
                 parts[-1])
  return f"{package}:{_function(function)}"


def _function(name: str) -> str:
  """make_batch.<locals>.rows -> make_batch.rows; closures' lambdas and comprehensions dropped."""
  parts = [p for p in name.split(".") if p not in ("<locals>", "<lambda>", "<listcomp>",
                                                    "<dictcomp>", "<genexpr>")]
  return ".".join(parts) or name


def _profile(run: Callable[[], Any], repeats: int) -> dict[str, list[float]]:
  """Microseconds of each named operation over ``repeats`` calls of ``run``."""
  jax.block_until_ready(run())
  with tempfile.TemporaryDirectory() as directory:
    jax.profiler.start_trace(directory)
    try:
      for _ in range(repeats):
        jax.block_until_ready(run())
    finally:
      jax.profiler.stop_trace()
    paths = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)
    data = jax.profiler.ProfileData.from_file(sorted(paths)[-1])
    durations = collections.defaultdict(list)
    for plane in data.planes:
      for line in plane.lines:
        for event in line.events:
          durations[event.name].append(event.duration_ns / 1e3)
  return durations


def breakdown(compiled_text: str, run: Callable[[], Any], calls: int, *, repeats: int = 3,
              root: str | None = None, top: int = 12) -> dict[str, Any]:
  """Per call (``calls`` per ``run()``): operations and microseconds, by source, products apart.

  ``compiled_text``: the compiled program's ``as_text()``; ``run``: one execution
  of it (already compiled). ``root``: the source tree charged (vae_jax's parent).
  """
  root = root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  known = instructions(compiled_text)
  durations = _profile(run, repeats)
  per_call = calls * repeats
  groups = collections.defaultdict(lambda: [0.0, 0.0])
  ops = []
  for name, times in durations.items():
    info = known.get(name)
    if info is None or info["opcode"] in CONTROL_OPCODES:
      continue
    count, micros = len(times) / per_call, len(times) / per_call * statistics.median(times)
    label = PRODUCTS if info["product"] else where(info["stack"], root + os.sep)
    groups[label][0] += count
    groups[label][1] += micros
    ops.append((micros, count, name, label))
  ops.sort(reverse=True)
  ordered = sorted(groups.items(), key=lambda kv: -kv[1][1])
  total = sum(g[1] for g in groups.values())
  return {"ops_per_call": sum(g[0] for g in groups.values()), "op_us_per_call": total,
          "product_us_per_call": groups[PRODUCTS][1] if PRODUCTS in groups else 0.0,
          "by_source": [{"where": k, "ops": round(c, 2), "us": round(t, 2)}
                        for k, (c, t) in ordered],
          "top_ops": [{"op": n, "where": w, "count": round(c, 2), "us": round(t, 2)}
                      for t, c, n, w in ops[:top]]}
