"""The conv layers as matrix products: nn.Conv's and nn.ConvTranspose's parameters and values.

Checkpoints move between the forms only if the parameter trees are bitwise the
same, and picking a form per backend is honest only if the values and both
gradients agree (up to float rounding: the sums run in another order).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import assert_trees_equal
from tests.conftest import make_config
from vae_jax import validation
from vae_jax.data import datasets
from vae_jax.models import convolutions
from vae_jax.models import gaussian_vae
from vae_jax.models import layers

FORMS = {  # (module fields, the XLA layer, its matrix-product form)
    "conv 4x4 stride 2": (dict(kernel_size=(4, 4), strides=(2, 2), padding="SAME"),
                          nn.Conv, convolutions.MatmulConv),
    "conv 3x3": (dict(kernel_size=(3, 3), padding="SAME"), nn.Conv, convolutions.MatmulConv),
    "conv 1x5": (dict(kernel_size=(1, 5), padding="SAME"), nn.Conv, convolutions.MatmulConv),
    "transposed 4x4 stride 2": (dict(kernel_size=(4, 4), strides=(2, 2), padding="SAME"),
                                nn.ConvTranspose, convolutions.SubpixelConvTranspose),
}


def _close(got, want, rtol: float = 1e-5):
  """Equal up to float rounding: elementwise within ``rtol`` of the largest magnitude (a sum
  of terms of either sign, reordered, rounds to within that of its largest terms)."""
  want = np.asarray(want)
  np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * float(np.max(np.abs(want))))


def _random_params(rng: np.random.Generator, params):
  """Random values for every parameter, so that the bias and every kernel tap count."""
  return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape,features", [((1, 1, 1, 1), 1), ((2, 5, 3, 3), 4),
                                            ((3, 6, 8, 5), 6)])
def test_same_parameters_values_and_gradients_as_the_xla_layer(form, shape, features):
  fields, xla_layer, matmul_layer = FORMS[form]
  xla, matmul = xla_layer(features, **fields), matmul_layer(features, **fields)
  rng = np.random.default_rng(sum(shape) + features)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  key = jax.random.PRNGKey(3)
  params = xla.init(key, x)["params"]
  # Same names, shapes and initializers: the initial parameters are the same bits.
  assert_trees_equal(params, matmul.init(key, x)["params"])
  params = _random_params(rng, params)
  probe = jnp.asarray(rng.normal(size=xla.apply({"params": params}, x).shape), jnp.float32)

  @jax.jit
  def outputs_and_gradients(params, x):
    out = []
    for module in (xla, matmul):
      apply = lambda p, x, module=module: module.apply({"params": p}, x)
      # Gradients of a random linear function of the output, w.r.t. parameters and input.
      out.append((apply(params, x), jax.grad(lambda p, x: jnp.sum(apply(p, x) * probe),
                                             argnums=(0, 1))(params, x)))
    return out

  (want, want_grads), (got, got_grads) = outputs_and_gradients(params, x)
  _close(got, want)
  jax.tree.map(_close, got_grads, want_grads)


def test_leading_batch_axes_are_kept():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 3, 4, 5, 3)), jnp.float32)
  for fields, xla_layer, matmul_layer in FORMS.values():
    xla, matmul = xla_layer(2, **fields), matmul_layer(2, **fields)
    params = _random_params(rng, xla.init(jax.random.PRNGKey(0), x)["params"])
    _close(matmul.apply({"params": params}, x), xla.apply({"params": params}, x))


def test_the_subpixel_kernel_is_the_derivation():
  """K_ab[u, v] = W[2u + a, 2v + b] in output-channel block 2a + b."""
  w = jnp.arange(4 * 4 * 2 * 3, dtype=jnp.float32).reshape(4, 4, 2, 3)
  k = convolutions.subpixel_kernel(w)
  assert k.shape == (2, 2, 2, 12)
  for u, v, a, b in np.ndindex(2, 2, 2, 2):
    block = 2 * a + b
    np.testing.assert_array_equal(k[u, v, :, 3 * block:3 * block + 3], w[2 * u + a, 2 * v + b])


def test_the_2x2_stride_2_form_on_even_sizes():
  """disentanglement_lib's third and fourth encoder stages: values and gradients as nn.Conv's."""
  fields = dict(kernel_size=(2, 2), strides=(2, 2), padding="SAME")
  xla, matmul = nn.Conv(6, **fields), convolutions.MatmulConv(6, **fields)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 8, 6, 5)), jnp.float32)
  params = xla.init(jax.random.PRNGKey(0), x)["params"]
  assert_trees_equal(params, matmul.init(jax.random.PRNGKey(0), x)["params"])
  params = _random_params(rng, params)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply({"params": p}, x)))
  _close(matmul.apply({"params": params}, x), xla.apply({"params": params}, x))
  jax.tree.map(_close, jax.grad(loss(matmul), argnums=(0, 1))(params, x),
               jax.grad(loss(xla), argnums=(0, 1))(params, x))


@pytest.mark.parametrize("layer,fields", [
    (convolutions.SubpixelConvTranspose, dict(kernel_size=(3, 3))),
    (convolutions.SubpixelConvTranspose, dict(strides=(1, 1))),
    (convolutions.SubpixelConvTranspose, dict(padding="VALID")),
    (convolutions.MatmulConv, dict(kernel_size=(4, 4), strides=(1, 1))),
    (convolutions.MatmulConv, dict(kernel_size=(3, 3), strides=(2, 2))),
    (convolutions.MatmulConv, dict(kernel_size=(3, 3), padding="VALID"))])
def test_other_layers_are_refused_not_computed_wrongly(layer, fields):
  with pytest.raises(ValueError, match="only, not kernel_size=.*use conv_impl='lax'"):
    layer(2, **{"kernel_size": (4, 4), **fields}).init(jax.random.PRNGKey(0),
                                                       jnp.zeros((1, 4, 4, 1)))


@pytest.mark.parametrize("module", ["encoder", "decoder", "staged encoder", "staged decoder"])
def test_the_conv_encoder_and_decoder_are_the_same_in_both_forms(module):
  """One parameter tree (today's checkpoints load), the same outputs and gradients."""
  rng = np.random.default_rng(1)
  staged = dict(stage_channels=(4, 4, 8), hidden=6)  # disentanglement_lib's layout, smaller
  if module == "encoder":
    make = lambda impl: layers.Encoder(5, "conv", 4, 2, "relu", conv_impl=impl)
    x = jnp.asarray(rng.uniform(size=(3, 12, 12, 2)), jnp.float32)
  elif module == "staged encoder":
    make = lambda impl: layers.Encoder(5, "conv", 4, 3, "relu", conv_impl=impl,
                                       stage_kernels=(4, 2, 2), **staged)
    x = jnp.asarray(rng.uniform(size=(3, 16, 16, 2)), jnp.float32)
  elif module == "staged decoder":
    make = lambda impl: layers.Decoder((16, 16, 2), "conv", 4, 3, "relu", conv_impl=impl,
                                       **staged)
    x = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  else:
    make = lambda impl: layers.Decoder((12, 12, 2), "conv", 4, 2, "relu", conv_impl=impl)
    x = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  params = make("lax").init(jax.random.PRNGKey(0), x)["params"]
  assert_trees_equal(params, make("matmul").init(jax.random.PRNGKey(0), x)["params"])
  # The initial kernels (the scale training sees), with random biases so that each counts.
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.asarray(0.1 * rng.normal(size=p.shape), p.dtype)
      if path[-1].key == "bias" else p, params)

  @jax.jit
  def outputs_and_gradients(params, x):
    out = {}
    for impl in ("lax", "matmul"):
      apply = lambda p, x, impl=impl: make(impl).apply({"params": p}, x)
      # Gradients of a fixed linear function of the output(s): the encoder gives (mean, logvar).
      probe = lambda y: jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)
      loss = lambda p, x: sum(jnp.sum(y * probe(y)) for y in jax.tree.leaves(apply(p, x)))
      out[impl] = apply(params, x), jax.grad(loss, argnums=(0, 1))(params, x)
    return out

  out = outputs_and_gradients(params, x)
  jax.tree.map(_close, out["matmul"], out["lax"])


def test_auto_is_matmul_on_cpu_and_xla_convolutions_elsewhere():
  assert convolutions.resolve_conv_impl("auto", "cpu") == "matmul"
  assert convolutions.resolve_conv_impl("auto", "gpu") == "lax"
  assert convolutions.resolve_conv_impl("auto", "tpu") == "lax"
  assert convolutions.resolve_conv_impl("lax", "cpu") == "lax"
  assert convolutions.resolve_conv_impl("matmul", "tpu") == "matmul"
  with pytest.raises(ValueError, match="conv_impl='fast'"):
    convolutions.resolve_conv_impl("fast")


def test_conv_impl_is_validated_and_a_run_recorded_without_it_reads_auto():
  with pytest.raises(validation.ConfigError, match="model.conv_impl='fast'.*'matmul'"):
    validation.validate(make_config(model__conv_impl="fast"))
  config = make_config(model__encoder="conv", model__decoder="conv", model__depth=2)
  del config.model["conv_impl"]  # a config.json written before the field existed
  validation.validate(config)
  info = datasets.DataInfo("digits", (8, 8, 1), False, 10)
  assert gaussian_vae.build(config, info).module.conv_impl == "auto"


def test_the_dsprites_config_is_disentanglement_libs_architecture():
  """configs/dsprites.py: conv_encoder and deconv_decoder of methods/shared/architectures.py."""
  from configs import dsprites as dsprites_config  # pylint: disable=g-import-not-at-top
  config = dsprites_config.get_config()
  validation.validate(config)
  model = gaussian_vae.build(config, datasets.info(config.data.name))
  params = model.init(jax.random.PRNGKey(0))
  shapes = jax.tree.map(lambda p: p.shape, params)
  enc, dec = shapes["enc"], shapes["dec"]
  assert [enc[f"conv_{i}"]["kernel"] for i in range(4)] == [
      (4, 4, 1, 32), (4, 4, 32, 32), (2, 2, 32, 64), (2, 2, 64, 64)]
  assert enc["hidden"]["kernel"] == (1024, 256) and enc["mean"]["kernel"] == (256, 10)
  assert dec["hidden"]["kernel"] == (10, 256) and dec["project"]["kernel"] == (256, 1024)
  assert [dec[f"deconv_{i}"]["kernel"] for i in range(4)] == [
      (4, 4, 64, 64), (4, 4, 64, 32), (4, 4, 32, 32), (4, 4, 32, 1)]
  assert "out" not in dec
