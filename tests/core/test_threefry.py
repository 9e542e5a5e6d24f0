"""The CPU lowering of Threefry-2x32: the published hash, JAX's own draws, and no loop."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import REPO
from vae_jax.core import threefry

# Known-answer tests of Threefry-2x32, 20 rounds (Random123's kat_vectors):
# (key, counter) -> output.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6b200159, 0x99ba4efe)),
    ((0xffffffff, 0xffffffff), (0xffffffff, 0xffffffff), (0x1cb996fc, 0xbb002be7)),
    ((0x13198a2e, 0x03707344), (0x243f6a88, 0x85a308d3), (0xc4923a9c, 0x483df7a0)),
]

# Draws of every kind a run makes, from keys the way runs make them; prints a digest.
DRAWS = """
import hashlib, sys
import jax, jax.numpy as jnp, numpy as np
if sys.argv[1] == "installed":
  from vae_jax.core import threefry
  threefry.install()
key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(3), 2), 17)
keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(257))
draws = [
    jax.jit(jax.vmap(lambda k: jax.random.normal(k, (20,))))(keys),
    jax.jit(jax.vmap(lambda k: jax.random.bernoulli(k, 0.3, (784,))))(keys),
    jax.jit(jax.vmap(lambda k: jax.random.uniform(k, (3, 5))))(keys),
    jax.jit(lambda k: jax.random.permutation(k, 5000))(key),
    jax.random.key_data(jax.random.split(key, 9)), jax.random.normal(key, (1001, 3)),
]
digest = hashlib.sha256()
for d in draws:
  digest.update(np.asarray(d).tobytes())
print(digest.hexdigest())
"""


def test_jax_s_own_loop_free_rule_is_found_and_installed():
  assert threefry.install()


@pytest.mark.parametrize("key,count,expected", KNOWN_ANSWERS)
def test_jax_hash_compiled_with_it_gives_them_too(key, count, expected):
  threefry.install()
  hashed = jax.jit(jax.extend.random.threefry_2x32)(np.array(key, np.uint32),
                                                   np.array(count, np.uint32))
  assert tuple(int(w) for w in hashed) == expected


def test_every_draw_is_bitwise_what_jax_draws_with_its_own_lowering():
  digests = [subprocess.run([sys.executable, "-c", DRAWS, mode], capture_output=True,
                            text=True, cwd=REPO, timeout=300, check=True).stdout.strip()
             for mode in ("default", "installed")]
  assert len(digests[0]) == 64 and digests[0] == digests[1]


def test_a_draw_compiles_without_a_loop_on_cpu():
  threefry.install()
  draw = jax.jit(lambda key: jax.vmap(lambda k: jax.random.normal(k, (20,)))(
      jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(128))))
  text = draw.lower(jax.random.PRNGKey(0)).compile().as_text()
  assert " while(" not in text
