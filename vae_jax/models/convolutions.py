"""The conv VAE's convolutions as matrix products: nn.Conv / nn.ConvTranspose, another form.

XLA:CPU runs the convolution primitive's gradients (and transposed
convolutions, which dilate their input with zeros) on a slow generic path, and
which path it takes depends on the surrounding program; its matrix products are
fast everywhere. So on CPU each conv layer of ``layers.Encoder`` and
``layers.Decoder`` is computed from slices, pads, reshapes and one
``dot_general``, whose gradients are again slices, pads and products:

  4x4, stride 2, SAME (encoder)       pad, space-to-depth, 2x2 windows, one product
  2x2, stride 2, SAME (encoder)       space-to-depth (no padding: even sizes), one product
  4x4, stride 2, SAME, transposed     sub-pixel form: 2x2 windows, one product to
    (decoder)                         4x the channels, depth-to-space
  k x k, stride 1, SAME (output)      one product to the k*k taps, shift-and-add

Each is exact: the same products as the convolution (less the transposed
convolution's multiplications by inserted zeros), summed in another order, so
the outputs agree up to float rounding. ``MatmulConv`` and
``SubpixelConvTranspose`` hold nn.Conv's and nn.ConvTranspose's parameters
(names, shapes, initializers): under the same module name their parameters are
the same bits, and checkpoints move freely between the forms. ``conv_impl``
(``CONV_IMPLS``) picks the form; other layer shapes are refused, not computed.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.core import checks

# "lax": nn.Conv / nn.ConvTranspose (XLA's convolutions); "matmul": this module's
# forms; "auto": "matmul" on the CPU backend, "lax" elsewhere (resolve_conv_impl).
CONV_IMPLS = ("auto", "lax", "matmul")


def check_stages(depth: int, image_shape: Sequence[int], data_name: str) -> None:
  """Refuses (naming model.depth) stride-2 stages that would not halve the images evenly."""
  height, width = image_shape[0], image_shape[1]
  if height % 2**depth or width % 2**depth:
    checks.fail("model.depth", depth, f"conv stages halve the {height}x{width} images of "
                f"{data_name!r} {depth} times; the size must divide by 2**depth")


def resolve_conv_impl(conv_impl: str, backend: str | None = None) -> str:
  """The form ``conv_impl`` stands for on ``backend`` (default: JAX's default backend).

  GPU and TPU compilers map convolutions, transposed ones and their gradients
  onto their own kernels, so "auto" leaves the convolutions to them.
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv_impl={conv_impl!r}: use one of {', '.join(map(repr, CONV_IMPLS))}.")
  if conv_impl != "auto":
    return conv_impl
  return "matmul" if (backend or jax.default_backend()) == "cpu" else "lax"


def _windows_2x2(x: jax.Array, out_h: int, out_w: int) -> jax.Array:
  """[N, out_h+1, out_w+1, C] -> [N, out_h, out_w, 4C]: each 2x2 window, taps (u, v)
  row-major, channels minor. Stacked on a new axis, not concatenated on the channel
  axis: XLA:CPU copies the former several times faster."""
  taps = [x[:, u:u + out_h, v:v + out_w] for u in (0, 1) for v in (0, 1)]
  return jnp.stack(taps, axis=-2).reshape((x.shape[0], out_h, out_w, 4 * x.shape[-1]))


def _matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """[..., K] @ [K, M], at JAX's default precision like the convolutions it replaces."""
  return jnp.matmul(x, kernel.astype(x.dtype))


def _flat(x: jax.Array) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
  """x [..., H, W, C] as [N, H, W, C], and the function that restores the leading axes."""
  batch = x.shape[:-3]
  return x.reshape((-1, *x.shape[-3:])), lambda y: y.reshape((*batch, *y.shape[1:]))


def conv_4x4_stride_2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``lax.conv_general_dilated(x, kernel, (2, 2), "SAME")`` for a [4, 4, C_in, C_out] kernel.

  SAME pads n by 1 before and 1 (n even) or 2 (n odd) after, so the padded length
  is 2 * out + 2 and y[i] = sum_t W[t] xp[2i + t]. Writing xp[2j + r] = X[j, r]
  (space-to-depth), y[i] = sum_{u, r in {0, 1}} W[2u + r] X[i + u, r]: a 2x2
  stride-1 window over X, one product with W rearranged to [(u, v, r, s, C_in), C_out].
  """
  x, unflat = _flat(x)
  n, height, width, c_in = x.shape
  out_h, out_w = -(-height // 2), -(-width // 2)
  padded = jnp.pad(x, ((0, 0), (1, 2 * out_h + 1 - height), (1, 2 * out_w + 1 - width),
                       (0, 0)))
  s2d = padded.reshape((n, out_h + 1, 2, out_w + 1, 2, c_in)).transpose(0, 1, 3, 2, 4, 5)
  s2d = s2d.reshape((n, out_h + 1, out_w + 1, 4 * c_in))
  w = kernel.reshape((2, 2, 2, 2, c_in, -1)).transpose(0, 2, 1, 3, 4, 5)  # [u, v, r, s, ...]
  return unflat(_matmul(_windows_2x2(s2d, out_h, out_w), w.reshape((16 * c_in, -1))))


def conv_2x2_stride_2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``lax.conv_general_dilated(x, kernel, (2, 2), "SAME")`` for a [2, 2, C_in, C_out] kernel.

  On even sizes SAME adds no padding and the windows tile the image: y[i, j] =
  sum_{u, v} W[u, v] x[2i + u, 2j + v], a space-to-depth and one product.
  """
  x, unflat = _flat(x)
  n, height, width, c_in = x.shape
  if height % 2 or width % 2:
    raise ValueError(f"conv_2x2_stride_2 takes even sizes, not {height}x{width}.")
  s2d = x.reshape((n, height // 2, 2, width // 2, 2, c_in)).transpose(0, 1, 3, 2, 4, 5)
  s2d = s2d.reshape((n, height // 2, width // 2, 4 * c_in))
  return unflat(_matmul(s2d, kernel.reshape((4 * c_in, -1))))


def subpixel_kernel(kernel: jax.Array) -> jax.Array:
  """[4, 4, C_in, C_out] transposed-conv kernel W -> [2, 2, C_in, 4 C_out] conv kernel K.

  Output-channel block 2a + b holds K_ab[u, v] = W[2u + a, 2v + b].
  """
  c_in, c_out = kernel.shape[2:]
  k = kernel.reshape((2, 2, 2, 2, c_in, c_out))            # [u, a, v, b, C_in, C_out]
  return k.transpose(0, 2, 4, 1, 3, 5).reshape((2, 2, c_in, 4 * c_out))


def conv_transpose_4x4_stride_2(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``lax.conv_transpose(x, kernel, (2, 2), "SAME")``, flax's default (kernel not flipped).

  For 4 taps and stride 2, JAX pads the 2x-dilated input by (2, 2) per spatial
  dimension, so output 2m + a meets inputs m - 1 + a and m + a only:
  y[2m] = W[0] x[m-1] + W[2] x[m], y[2m+1] = W[1] x[m] + W[3] x[m+1]. Pad x by one
  on each side; one stride-1 2x2 window product whose 4 C_out outputs are the
  phases (a, b) gives z_ab at positions 0..n, and y[2m + a, 2k + b] = z_ab[m + a, k + b]
  (depth-to-space, each phase shifted by its own offset).
  """
  x, unflat = _flat(x)
  n, height, width, _ = x.shape
  c_out = kernel.shape[-1]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  k = subpixel_kernel(kernel)
  z = _matmul(_windows_2x2(padded, height + 1, width + 1), k.reshape((-1, 4 * c_out)))
  z = z.reshape((n, height + 1, width + 1, 2, 2, c_out))   # [N, H+1, W+1, a, b, C_out]
  # Rows, then columns: the gradient pads two halves twice, not four quarters each into a
  # full-size array (faster on XLA:CPU).
  rows = jnp.stack([z[:, a:a + height, :, a] for a in (0, 1)], axis=2)  # [N, H, a, W+1, b, C]
  y = jnp.stack([rows[:, :, :, b:b + width, b] for b in (0, 1)], axis=4)  # [N, H, a, W, b, C]
  return unflat(y.reshape((n, 2 * height, 2 * width, c_out)))


def conv_stride_1(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``lax.conv_general_dilated(x, kernel, (1, 1), "SAME")`` for odd kernel sizes.

  One product gives every tap's contribution, t[(a, b, o), p] = sum_c W[a, b, c, o]
  x[p, c], taps major; then y[i, j] = sum_{a, b} t[(a, b), i + a - r, j + b - r] (zero
  outside). Made for the output layer's few channels: t holds k*k*C_out values per pixel.
  """
  x, unflat = _flat(x)
  n, height, width, c_in = x.shape
  kh, kw, _, c_out = kernel.shape
  rh, rw = kh // 2, kw // 2
  w = kernel.reshape((kh * kw, c_in, c_out)).transpose(0, 2, 1).reshape((-1, c_in))
  t = jax.lax.dot_general(w.astype(x.dtype), x.reshape((-1, c_in)),
                          (((1,), (1,)), ((), ())))         # [(taps, C_out), N*H*W]
  t = jnp.pad(t.reshape((kh * kw, c_out, n, height, width)),
              ((0, 0), (0, 0), (0, 0), (rh, rh), (rw, rw)))
  y = sum(t[a * kw + b, :, :, a:a + height, b:b + width] for a in range(kh) for b in range(kw))
  return unflat(y.transpose(1, 2, 3, 0))


def _refuse(layer: str, kernel_size, strides, padding, supported: str) -> None:
  raise ValueError(f"{layer} computes {supported} only, not kernel_size={tuple(kernel_size)}, "
                   f"strides={tuple(strides)}, padding={padding!r}; use conv_impl='lax'.")


class MatmulConv(nn.Module):
  """``nn.Conv`` (same parameters) for the conv VAE's shapes, as matrix products.

  4x4 stride 2 SAME (``conv_4x4_stride_2``), 2x2 stride 2 SAME (``conv_2x2_stride_2``)
  and odd k x k stride 1 SAME (``conv_stride_1``).
  """
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: str = "SAME"
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()  # nn.Conv's defaults
  bias_init: Callable[..., Any] = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel_size, strides = tuple(self.kernel_size), tuple(self.strides)
    if self.padding == "SAME" and kernel_size == (4, 4) and strides == (2, 2):
      form = conv_4x4_stride_2
    elif self.padding == "SAME" and kernel_size == (2, 2) and strides == (2, 2):
      form = conv_2x2_stride_2
    elif self.padding == "SAME" and strides == (1, 1) and all(k % 2 for k in kernel_size):
      form = conv_stride_1
    else:
      _refuse("MatmulConv", kernel_size, strides, self.padding,
              "4x4 and 2x2 stride-2 and odd-sized stride-1 kernels with SAME padding")
    kernel = self.param("kernel", self.kernel_init, (*kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    return form(x, kernel) + bias


class SubpixelConvTranspose(nn.Module):
  """``nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")`` (same
  parameters), in sub-pixel form (``conv_transpose_4x4_stride_2``)."""
  features: int
  kernel_size: Sequence[int] = (4, 4)
  strides: Sequence[int] = (2, 2)
  padding: str = "SAME"
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()  # nn.ConvTranspose's
  bias_init: Callable[..., Any] = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if (tuple(self.kernel_size), tuple(self.strides), self.padding) != ((4, 4), (2, 2), "SAME"):
      _refuse("SubpixelConvTranspose", self.kernel_size, self.strides, self.padding,
              "4x4 kernels with stride 2 and SAME padding")
    kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    return conv_transpose_4x4_stride_2(x, kernel) + bias


def conv_layers(conv_impl: str) -> tuple[type[nn.Module], type[nn.Module]]:
  """(the Conv, the ConvTranspose) module classes that ``conv_impl`` picks on this backend."""
  if resolve_conv_impl(conv_impl) == "matmul":
    return MatmulConv, SubpixelConvTranspose
  return nn.Conv, nn.ConvTranspose
