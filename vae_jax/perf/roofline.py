"""The matmul roofline of a program: its dot and conv products, timed one by one.

A program's limit on a device is the time its matrix products alone would take
there. ``products`` walks the program's jaxpr (into scans, with their trip
counts, and into every nested call) and lists each ``dot_general`` and
``conv_general_dilated`` with its operand shapes, parameters and FLOPs;
``time_products`` runs each distinct one alone on the device, many times in one
compiled loop (no Python per call), and ``roofline_seconds`` sums
count x time. The ratio

  roofline ratio = roofline seconds / measured seconds
                 = (product FLOPs x measured rate) / (the device's rate on those products)

says how close a program comes to what the device does on its own matrix
products of exactly those shapes; the rest of its time is elementwise work,
memory traffic and overhead.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

PRODUCTS = ("dot_general", "conv_general_dilated")


@dataclasses.dataclass(frozen=True)
class Product:
  """One matrix product (or convolution) of a program, and how often it runs."""
  primitive: Any                  # the jax primitive, re-bound by ``time_products``
  lhs: jax.ShapeDtypeStruct
  rhs: jax.ShapeDtypeStruct
  params: tuple                   # the equation's parameters, as sorted items
  flops: int                      # per execution: 2 x multiply-adds
  count: int                      # executions per program run

  @property
  def key(self) -> tuple:
    return (self.primitive.name, self.lhs.shape, str(self.lhs.dtype), self.rhs.shape,
            str(self.rhs.dtype), repr(self.params))

  def describe(self) -> str:
    return (f"{self.primitive.name} {_shape(self.lhs)} x {_shape(self.rhs)} "
            f"({self.flops / 1e6:.2f} MFLOP) x{self.count}")


def _shape(aval) -> str:
  return f"{aval.dtype}[{','.join(map(str, aval.shape))}]"


def _flops(eqn) -> int:
  """2 x multiply-adds of one dot_general or conv_general_dilated equation."""
  lhs, rhs = (v.aval for v in eqn.invars)
  out = eqn.outvars[0].aval
  if eqn.primitive.name == "dot_general":
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    return 2 * math.prod(out.shape) * math.prod(lhs.shape[d] for d in lhs_contract)
  # Convolution: every output element is a dot over the kernel's spatial window and
  # its input features (a grouped conv's kernel holds only its group's features).
  # A transposed convolution dilates its input with zeros (lhs_dilation); products
  # with those zeros are not work, so a fraction 1 / prod(lhs_dilation) counts.
  rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, *spatial)
  per_output = rhs.shape[rhs_spec[1]] * math.prod(rhs.shape[d] for d in rhs_spec[2:])
  dilation = math.prod(eqn.params.get("lhs_dilation") or (1,))
  return 2 * math.prod(out.shape) * per_output // dilation


def products(fn: Callable, *args, axis_env: Sequence[tuple[str, int]] = (),
             static_argnums: Sequence[int] = ()) -> list[Product]:
  """Every matrix product one call of ``fn(*args)`` runs, merged by shape and parameters.

  ``axis_env`` names the collective axes of per-device code, e.g. [("batch", 1)].
  Raises on a while loop (its trip count is unknown before it runs).
  """
  closed = jax.make_jaxpr(fn, axis_env=list(axis_env) or None,
                          static_argnums=tuple(static_argnums))(*args)

  def walk(jaxpr, times: int, found: dict[tuple, Product]) -> None:
    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      if name in PRODUCTS:
        lhs, rhs = (jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars)
        params = dict(eqn.params)
        if params.get("preferred_element_type", 0) is None:  # None: the output's dtype; one
          params["preferred_element_type"] = eqn.outvars[0].aval.dtype  # key, timed once
        product = Product(eqn.primitive, lhs, rhs, tuple(sorted(params.items())),
                          _flops(eqn), times)
        if product.key in found:
          product = dataclasses.replace(product, count=found[product.key].count + times)
        found[product.key] = product
      elif name == "while":
        raise ValueError("A while loop's trip count is unknown: use lax.scan (or a fixed "
                         "fori_loop, which is one) in the program to be counted.")
      elif name == "cond":  # the costliest branch
        branches = []
        for branch in eqn.params["branches"]:
          branches.append(dict(found))
          walk(branch.jaxpr, times, branches[-1])
        found.update(max(branches, key=lambda b: total_flops(b.values())))
      else:
        inner = times * (eqn.params["length"] if name == "scan" else 1)
        for sub in jex_core.jaxprs_in_params(eqn.params):
          walk(sub, inner, found)

  found: dict[tuple, Product] = {}
  walk(closed.jaxpr, 1, found)
  return list(found.values())


def total_flops(found: Sequence[Product]) -> int:
  return sum(p.flops * p.count for p in found)


def _loop(product: Product, repeats: int) -> Callable:
  """A compiled loop running ``product`` ``repeats`` times and nothing else.

  The operands pass through an optimization barrier each iteration, so XLA
  cannot hoist the loop-invariant product out of the loop; the barrier costs
  nothing at run time.
  """
  params = dict(product.params)

  def run(lhs, rhs):
    out = jax.eval_shape(lambda a, b: product.primitive.bind(a, b, **params), lhs, rhs)

    def body(_, carry):
      lhs, rhs, _ = jax.lax.optimization_barrier(carry)
      return lhs, rhs, product.primitive.bind(lhs, rhs, **params)

    init = (lhs, rhs, jnp.zeros(out.shape, out.dtype))
    return jax.lax.fori_loop(0, repeats, body, init)[2]

  return jax.jit(run)


def time_products(found: Sequence[Product], *, min_seconds: float = 0.2,
                  repeats: int = 5) -> dict[tuple, float]:
  """Seconds per execution of each product alone on the default device (best of repeats)."""
  seconds = {}
  for product in found:
    key = jax.random.PRNGKey(0)
    lhs = jax.random.normal(key, product.lhs.shape).astype(product.lhs.dtype)
    rhs = jax.random.normal(jax.random.fold_in(key, 1), product.rhs.shape).astype(
        product.rhs.dtype)
    loops = 1
    fn = _loop(product, loops)
    fn(lhs, rhs).block_until_ready()
    while True:  # grow the loop until one call takes min_seconds / repeats
      start = time.perf_counter()
      fn(lhs, rhs).block_until_ready()
      elapsed = time.perf_counter() - start
      if elapsed * repeats >= min_seconds or loops >= 1 << 20:
        break
      loops *= max(2, min(64, int(min_seconds / repeats / max(elapsed, 1e-6))))
      fn = _loop(product, loops)
      fn(lhs, rhs).block_until_ready()
    samples = []
    for _ in range(repeats):
      start = time.perf_counter()
      fn(lhs, rhs).block_until_ready()
      samples.append((time.perf_counter() - start) / loops)
    seconds[product.key] = min(samples)
  return seconds


def roofline_seconds(found: Sequence[Product], seconds: dict[tuple, float]) -> float:
  """Time of one program run if it did nothing but its products, each at its measured speed."""
  return sum(seconds[p.key] * p.count for p in found)


def products_only(found: Sequence[Product], runs: int) -> Callable[[], jax.Array]:
  """A compiled program that runs the products of ``runs`` program runs and nothing else.

  Each run executes every product ``count`` times, each execution on operands
  of its own (passed through an optimization barrier, so XLA neither hoists nor
  merges them). Timed in turn with the program itself, it gives a roofline
  ratio that a shared machine's changing load affects alike on both sides
  (``time_products`` times each product at another moment).
  """
  instances = [(p, dict(p.params)) for p in found for _ in range(p.count)]
  key = jax.random.PRNGKey(0)
  operands = [tuple(jax.random.normal(jax.random.fold_in(key, 2 * i + j), s.shape).astype(
      s.dtype) for j, s in enumerate((p.lhs, p.rhs))) for i, (p, _) in enumerate(instances)]

  def body(_, carry):
    operands, _ = carry
    operands = jax.lax.optimization_barrier(operands)
    outs = [p.primitive.bind(lhs, rhs, **params)
            for (p, params), (lhs, rhs) in zip(instances, operands)]
    return operands, outs

  @jax.jit
  def run(operands):
    outs = [jnp.zeros(o.shape, o.dtype) for o in jax.eval_shape(
        lambda ops: body(0, (ops, None))[1], operands)]
    return jax.lax.fori_loop(0, runs, body, (operands, outs))[1]

  return lambda: run(operands)
