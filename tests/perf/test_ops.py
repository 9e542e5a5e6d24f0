"""Where a program's time goes: each executed operation, charged to the line that made it."""

import jax
import jax.numpy as jnp

from vae_jax.perf import ops


def _noisy_relu_layers(x, w):
  """Three scanned layers: one product each, and elementwise work written here."""
  def layer(h, _):
    h = jnp.maximum(h @ w, 0.0)
    return h * jnp.exp(-jnp.abs(h)) + jnp.log1p(h), None
  return jax.lax.scan(layer, x, None, length=3)[0]


def test_operations_are_counted_per_call_and_charged_to_their_source():
  x, w = jnp.ones((64, 256)), jnp.full((256, 256), 1e-3)
  compiled = jax.jit(_noisy_relu_layers).lower(x, w).compile()
  # Per layer: a call runs three.
  found = ops.breakdown(compiled.as_text(), lambda: compiled(x, w), calls=3, repeats=2)
  groups = {g["where"]: g for g in found["by_source"]}
  assert groups[ops.PRODUCTS]["ops"] == 1 and found["product_us_per_call"] > 0
  ours = [g for w_, g in groups.items() if w_.startswith("tests/perf/test_ops.py:")]
  assert ours and all(g["us"] > 0 for g in ours), groups
  assert found["op_us_per_call"] >= found["product_us_per_call"]
  assert found["top_ops"] and found["ops_per_call"] >= 2


def test_instructions_know_products_and_stacks():
  x, w = jnp.ones((8, 16)), jnp.ones((16, 16))
  text = jax.jit(_noisy_relu_layers).lower(x, w).compile().as_text()
  found = ops.instructions(text)
  assert any(i["product"] for i in found.values())
  stacked = [i["stack"] for i in found.values() if i["stack"]]
  assert any(fn == "_noisy_relu_layers.<locals>.layer" for stack in stacked for _, fn in stack)
