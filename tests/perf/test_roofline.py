"""The roofline's product census (closed-form FLOPs, scan trip counts) and its timing."""

import time

import jax
import jax.numpy as jnp
import pytest

from vae_jax.perf import roofline

B, K, N, M = 16, 24, 40, 8


def _mlp(x, w1, w2):
  return jnp.sum(jnp.tanh(x @ w1) @ w2)


def _args():
  return (jnp.ones((B, K)), jnp.ones((K, N)), jnp.ones((N, M)))


def test_products_of_a_forward_pass_have_closed_form_flops():
  found = roofline.products(_mlp, *_args())
  assert sorted((p.lhs.shape, p.rhs.shape, p.flops, p.count) for p in found) == [
      ((B, K), (K, N), 2 * B * K * N, 1), ((B, N), (N, M), 2 * B * N * M, 1)]


def test_the_backward_pass_adds_one_product_per_weight_and_hidden_input():
  # d/dw1 and d/dw2 of the two-layer net: forward 2, backward dW2, dH, dW1 (no dX).
  found = roofline.products(jax.grad(_mlp, argnums=(1, 2)), *_args())
  assert sum(p.count for p in found) == 5
  assert roofline.total_flops(found) == 2 * (2 * B * K * N + 2 * B * N * M) + 2 * B * N * M


def test_scans_multiply_counts_and_nested_calls_are_seen():
  def program(x, w1, w2):
    inner = jax.jit(_mlp)  # a nested call (pjit) inside a scan of 3 inside a scan of 2
    def outer(c, _):
      c = jax.lax.scan(lambda c2, _: (c2 + inner(x, w1, w2), None), c, None, length=3)[0]
      return c, None
    return jax.lax.scan(outer, 0.0, None, length=2)[0]
  found = roofline.products(program, *_args())
  assert [p.count for p in found] == [6, 6]
  assert roofline.total_flops(found) == 6 * (2 * B * K * N + 2 * B * N * M)


def test_convolution_flops_and_transposed_convolutions_count_no_zeros():
  x = jnp.ones((2, 8, 8, 3))
  kernel = jnp.ones((3, 3, 3, 5))
  conv = lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  (product,) = roofline.products(conv, x, kernel)
  assert product.flops == 2 * (2 * 8 * 8 * 5) * (3 * 3 * 3)
  # A stride-2 transposed conv is the input gradient of a stride-2 conv: the same work
  # (each input pixel meets every kernel tap once), though XLA dilates its input with zeros.
  kernel4 = jnp.ones((4, 4, 3, 5))
  up = lambda x, k: jax.lax.conv_transpose(x, k, (2, 2), "SAME",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
  (product,) = roofline.products(up, x, kernel4)
  assert product.flops == 2 * (2 * 8 * 8 * 3) * (4 * 4 * 5)


def test_cond_counts_its_costliest_branch_and_while_is_refused():
  def branchy(p, x, w1, w2):
    return jax.lax.cond(p, lambda: _mlp(x, w1, w2), lambda: jnp.sum(x @ w1))
  found = roofline.products(branchy, True, *_args())
  assert roofline.total_flops(found) == 2 * B * K * N + 2 * B * N * M
  loop = lambda x, w: jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] @ w, c[1] + 1),
                                         (x, 0))[0]
  with pytest.raises(ValueError, match="while loop"):
    roofline.products(loop, jnp.ones((4, 4)), jnp.ones((4, 4)))


def test_a_program_of_one_product_runs_near_its_roofline():
  """Its products timed alone, summed, account for its own time (within timing noise)."""
  lhs, rhs = jnp.ones((256, 512)), jnp.ones((512, 256))
  repeats = 50

  def program(a, b):  # the same product, `repeats` times in one compiled loop
    def body(carry, _):  # the barrier keeps XLA from computing the product only once
      a, b, c = jax.lax.optimization_barrier(carry)
      return (a, b, c + a @ b), None
    return jax.lax.scan(body, (a, b, jnp.zeros((256, 256))), None, length=repeats)[0][2]

  found = roofline.products(program, lhs, rhs)
  assert [p.count for p in found] == [repeats]
  compiled = jax.jit(program)
  compiled(lhs, rhs).block_until_ready()
  # The product alone and the program are timed in turn, a round at a time, so a load that
  # comes and goes on a shared machine falls on both; a miscount of the products (the
  # property tested) is off by a factor of `repeats`, far outside the band in every round.
  ratios = []
  for _ in range(3):
    seconds = roofline.time_products(found, min_seconds=0.1, repeats=3)
    assert all(s > 0 for s in seconds.values())
    limit = roofline.roofline_seconds(found, seconds)
    assert limit == pytest.approx(repeats * seconds[found[0].key])
    elapsed = []
    for _ in range(3):
      start = time.perf_counter()
      compiled(lhs, rhs).block_until_ready()
      elapsed.append(time.perf_counter() - start)
    ratios.append(limit / min(elapsed))
    if 0.3 < ratios[-1] < 3.0:
      break
  print("roofline ratio of a one-product program, by round:", ratios)
  assert 0.3 < ratios[-1] < 3.0, ratios


def test_products_alone_run_every_product_as_often_as_the_program_does():
  def program(x, w1, w2):
    return jnp.tanh(jnp.tanh(x @ w1) @ w2) @ w2.T
  found = roofline.products(program, jnp.ones((8, 16)), jnp.ones((16, 32)), jnp.ones((32, 32)))
  alone = roofline.products_only(found, runs=3)
  again = roofline.products(alone)
  assert roofline.total_flops(again) == 3 * roofline.total_flops(found)
  assert sorted(p.count for p in again) == sorted(3 * p.count for p in found)
  assert len(jax.block_until_ready(alone())) == sum(p.count for p in found)
