"""Network layers of the model families, as flax.linen modules (used only through init/apply).

- ``Encoder``: images [B, H, W, C] in [0, 1] -> (mean, logvar) of a diagonal
  Gaussian: an MLP, stride-2 convolutions, or "global" (one q(z) for all x).
- ``Decoder``: codes [B, d] -> the location of p(x|z), shaped like the image
  (MLP, or transposed convolutions mirroring the conv encoder).
  Their convolutions are nn.Conv / nn.ConvTranspose or, on CPU, the same layers
  as matrix products (``convolutions``).
- ``AutoregressiveDecoder``: (codes, images) -> Bernoulli logits of
  p(x_i | x_<i, z) in raster order, and ancestral sampling.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.models import convolutions

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "elu": nn.elu,
    "swish": nn.swish,
    "softplus": nn.softplus,
    "tanh": jnp.tanh,
    "leaky_relu": nn.leaky_relu,
}
GATED = "gated"  # h = (W x + b) * sigmoid(V x + c): the VampPrior paper's dense layers
MLP_ACTIVATIONS = (*ACTIVATIONS, GATED)


# How dense layers start: flax's LeCun-normal weights and zero biases, PyTorch's nn.Linear
# default (weights and biases uniform in +-1/sqrt(fan_in)), or Glorot & Bengio's uniform
# weights in +-sqrt(6 / (fan_in + fan_out)) with zero biases (the IWAE paper's Theano code,
# yburda/iwae nnet.py Linear.random), so that published protocols start where theirs did.
DENSE_INITS = ("lecun_normal", "torch", "glorot_uniform")


def dense(h: jax.Array, features: int, name: str, init: str = "lecun_normal") -> jax.Array:
  """nn.Dense(features)(h), initialised as ``init`` says; called inside a compact module."""
  if init == "lecun_normal":
    return nn.Dense(features, name=name)(h)
  if init == "glorot_uniform":
    return nn.Dense(features, kernel_init=nn.initializers.glorot_uniform(), name=name)(h)
  bound = 1.0 / math.sqrt(h.shape[-1])
  uniform = lambda key, shape, dtype=jnp.float32: jax.random.uniform(  # noqa: E731
      key, shape, dtype, -bound, bound)
  return nn.Dense(features, kernel_init=uniform, bias_init=uniform, name=name)(h)


def dense_hidden(h: jax.Array, width: int, activation: str, name: str,
                 init: str = "lecun_normal") -> jax.Array:
  """One hidden layer of an MLP, called inside a compact module.

  "gated" is the gated linear unit of Dauphin et al. (2017) as Tomczak & Welling's
  VampPrior code uses it (GatedDense): a second dense layer ``{name}_gate`` whose
  sigmoid scales the first, so published protocols that use it run as published.
  """
  out = dense(h, width, name, init)
  if activation == GATED:
    return out * nn.sigmoid(dense(h, width, f"{name}_gate", init))
  return ACTIVATIONS[activation](out)


def _conv_channels(width: int, depth: int) -> list[int]:
  """Channels per conv stage: width, 2*width, 4*width, ... (one stage per halving)."""
  return [width * 2**i for i in range(depth)]


class Encoder(nn.Module):
  """x -> (mean, logvar) of q(z|x).

  "mlp": ``depth`` dense layers of ``width`` units (``dense_hidden``). "conv": ``depth`` stride-2
  4x4 convolutions with width, 2*width, ... channels, each halving the image.
  "global": x is ignored; (mean, logvar) are two free vectors shared by the
  whole dataset, q(z|x) = q(z), the baseline that shows why q must depend on x.
  The convolutions are computed as ``conv_impl`` says (convolutions.CONV_IMPLS);
  the parameters are the same either way.
  """
  latent_dim: int
  architecture: str
  width: int
  depth: int
  activation: str
  conv_impl: str = "auto"
  dense_init: str = "lecun_normal"  # DENSE_INITS
  # Explicit conv stages (disentanglement_lib's layout): channels and square kernel size
  # per stride-2 stage, then a dense layer of ``hidden`` units (0: none). Empty: the
  # width/depth stages above.
  stage_channels: Sequence[int] = ()
  stage_kernels: Sequence[int] = ()
  hidden: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    if self.architecture == "global":  # started off the prior, as an untrained encoder is
      mean = self.param("mean", nn.initializers.normal(1.0), (self.latent_dim,))
      logvar = self.param("logvar", nn.initializers.zeros, (self.latent_dim,))
      batch = (x.shape[0], self.latent_dim)
      return jnp.broadcast_to(mean, batch), jnp.broadcast_to(logvar, batch)
    h = x
    if self.architecture == "mlp":
      h = h.reshape((h.shape[0], -1))
      for i in range(self.depth):
        h = dense_hidden(h, self.width, self.activation, f"hidden_{i}", self.dense_init)
    else:
      act = ACTIVATIONS[self.activation]
      conv, _ = convolutions.conv_layers(self.conv_impl)
      stages = (list(zip(self.stage_channels, self.stage_kernels)) if self.stage_channels
                else [(ch, 4) for ch in _conv_channels(self.width, self.depth)])
      for i, (ch, k) in enumerate(stages):
        h = act(conv(ch, (k, k), strides=(2, 2), padding="SAME", name=f"conv_{i}")(h))
      h = h.reshape((h.shape[0], -1))
      if self.hidden:
        h = act(dense(h, self.hidden, "hidden", self.dense_init))
    mean = dense(h, self.latent_dim, "mean", self.dense_init)
    logvar = dense(h, self.latent_dim, "logvar", self.dense_init)
    return mean, logvar


class Decoder(nn.Module):
  """z -> location of p(x|z), shaped like the image; mirrors the Encoder.

  "conv": a dense projection to the smallest feature map, then stride-2
  transposed convolutions back to full size and a 3x3 output convolution, computed
  as ``conv_impl`` says (the parameters are the same either way).
  """
  image_shape: Sequence[int]
  architecture: str
  width: int
  depth: int
  activation: str
  conv_impl: str = "auto"
  dense_init: str = "lecun_normal"  # DENSE_INITS
  # Explicit stages (the Encoder's, mirrored as disentanglement_lib's deconv_decoder):
  # a dense layer of ``hidden`` units (0: none), a dense projection to the last stage's
  # map, then 4x4 stride-2 transposed convolutions through the earlier stages' channels
  # in reverse, the last one to the image's channels (no output convolution).
  stage_channels: Sequence[int] = ()
  hidden: int = 0

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    height, width, channels = self.image_shape
    if self.architecture == "conv" and self.stage_channels:
      return self._stages(z)
    if self.architecture == "mlp":
      h = z
      for i in range(self.depth):
        h = dense_hidden(h, self.width, self.activation, f"hidden_{i}", self.dense_init)
      out = dense(h, math.prod(self.image_shape), "out", self.dense_init)
      return out.reshape((z.shape[0], *self.image_shape))
    act = ACTIVATIONS[self.activation]
    stages = _conv_channels(self.width, self.depth)
    h0, w0 = height // 2**self.depth, width // 2**self.depth
    h = act(dense(z, h0 * w0 * stages[-1], "project", self.dense_init))
    h = h.reshape((z.shape[0], h0, w0, stages[-1]))
    conv, conv_transpose = convolutions.conv_layers(self.conv_impl)
    for i, ch in reversed(list(enumerate(stages))):
      h = act(conv_transpose(ch, (4, 4), strides=(2, 2), padding="SAME", name=f"deconv_{i}")(h))
    return conv(channels, (3, 3), padding="SAME", name="out")(h)

  def _stages(self, z: jax.Array) -> jax.Array:
    height, width, channels = self.image_shape
    act = ACTIVATIONS[self.activation]
    stages = list(self.stage_channels)
    h0, w0 = height // 2**len(stages), width // 2**len(stages)
    h = act(dense(z, self.hidden, "hidden", self.dense_init)) if self.hidden else z
    h = act(dense(h, h0 * w0 * stages[-1], "project", self.dense_init))
    h = h.reshape((z.shape[0], h0, w0, stages[-1]))
    _, conv_transpose = convolutions.conv_layers(self.conv_impl)
    outputs = stages[::-1][1:] + [channels]
    for i, ch in enumerate(outputs):
      h = conv_transpose(ch, (4, 4), strides=(2, 2), padding="SAME", name=f"deconv_{i}")(h)
      h = act(h) if i < len(outputs) - 1 else h
    return h


@functools.lru_cache(maxsize=None)
def made_masks(num_pixels: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """MADE masks (Germain et al. 2015) for raster order: ([D, width], [width, D]).

  Hidden unit k has degree m_k in 1..D-1, spread evenly; it sees pixels 1..m_k
  and feeds the logits of pixels m_k+1..D, so logit i depends on x_<i only.
  """
  degrees = 1 + (np.arange(width) * max(num_pixels - 1, 1)) // width
  pixels = np.arange(1, num_pixels + 1)
  mask_in = (degrees[None, :] >= pixels[:, None]).astype(np.float32)
  mask_out = (pixels[None, :] > degrees[:, None]).astype(np.float32)
  return mask_in, mask_out


def causal_offsets(radius: int) -> list[tuple[int, int]]:
  """(row, column) offsets of the pixels before (0, 0) in a (radius+1) x (2 radius+1) window."""
  return [(dr, dc) for dr in range(-radius, 1) for dc in range(-radius, radius + 1)
          if dr < 0 or dc < 0]


class AutoregressiveDecoder(nn.Module):
  """(z, x) -> Bernoulli logits of p(x|z) = prod_i p(x_i | x_<i, z), pixels in raster order.

  A decoder strong enough to model the digits without z, to study posterior
  collapse. With t = ``depth`` dense layers of z (the mlp decoder's trunk), the
  logit of pixel i sums four parts:
    MADE    one masked hidden layer of ``width`` units (Germain et al. 2015), fed
            x_<i and t: sum_{k: m_k < i} U_ki act(W_x x + W_t t + b)_k;
    direct  a linear function of every earlier pixel (an FVSBN), sum_{j<i} A_ji x_j;
    local   a small PixelCNN layer: ``channels`` features of the 24 pixels before
            i in a 4 x 7 window (3 rows above, 3 columns either side), shared by
            all positions, act(P_i x @ W_loc + b) . u;
    z       V t + c, the mlp decoder's output layer.
  Only the MADE and z parts see z; the direct and local parts are computed once
  per image. Scoring needs the image (teacher forcing); leading axes of z and x
  broadcast, so IWAE scores k codes of an example against one copy of x.
  """
  image_shape: Sequence[int]
  width: int
  depth: int
  activation: str
  radius: int = 3
  channels: int = 64

  def setup(self):
    height, width, channels = self.image_shape
    if channels != 1:
      raise ValueError(f"decoder 'autoregressive' models one-channel images, not {channels}.")
    num_pixels = height * width
    self.trunk = [nn.Dense(self.width) for _ in range(self.depth)]
    self.w_x = self.param("w_x", nn.initializers.lecun_normal(), (num_pixels, self.width))
    self.hidden = nn.Dense(self.width)                                    # W_t t + b
    self.w_out = self.param("w_out", nn.initializers.lecun_normal(), (self.width, num_pixels))
    self.w_direct = self.param("w_direct", nn.initializers.zeros, (num_pixels, num_pixels))
    window = len(causal_offsets(self.radius))
    self.w_local = self.param("w_local", nn.initializers.lecun_normal(), (window, self.channels))
    self.b_local = self.param("b_local", nn.initializers.zeros, (self.channels,))
    self.u_local = self.param("u_local", nn.initializers.lecun_normal(), (self.channels, 1))
    self.out = nn.Dense(num_pixels)                                       # V t + c

  def _weights(self):
    """The masked weights: (W_x, U, A) with MADE's masks and A strictly upper triangular."""
    num_pixels = self.w_direct.shape[0]
    mask_in, mask_out = made_masks(num_pixels, self.width)
    direct_mask = np.triu(np.ones((num_pixels, num_pixels), np.float32), 1)  # A_ji, j < i
    return self.w_x * mask_in, self.w_out * mask_out, self.w_direct * direct_mask

  def _from_z(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(MADE hidden pre-activation from z, logits from z)."""
    t = z
    for layer in self.trunk:
      t = ACTIVATIONS[self.activation](layer(t))
    return self.hidden(t), self.out(t)

  def _local(self, patches: jax.Array) -> jax.Array:
    act = ACTIVATIONS[self.activation]
    return (act(patches @ self.w_local + self.b_local) @ self.u_local)[..., 0]

  def __call__(self, z: jax.Array, x: jax.Array) -> jax.Array:
    height, width, _ = self.image_shape
    r = self.radius
    w_x, w_out, w_direct = self._weights()
    hidden_z, logits_z = self._from_z(z)
    image = x[..., 0]
    flat = image.reshape((*image.shape[:-2], -1))
    padded = jnp.pad(image, [(0, 0)] * (image.ndim - 2) + [(r, 0), (r, r)])
    patches = jnp.stack([padded[..., r + dr:r + dr + height, r + dc:r + dc + width]
                         for dr, dc in causal_offsets(r)], axis=-1)
    x_part = flat @ w_direct + self._local(patches.reshape((*flat.shape, -1)))
    made = ACTIVATIONS[self.activation](flat @ w_x + hidden_z) @ w_out
    logits = made + logits_z + x_part
    return logits.reshape((*logits.shape[:-1], *self.image_shape))

  def sample(self, z: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling, one pixel per scan step: (x ~ p(x|z), p(x_i = 1 | x_<i, z)).

    Each step adds the new pixel to the MADE and direct sums and reads the local
    window off a padded canvas, so a sample costs O(D * (width + D)), not D passes.
    """
    act = ACTIVATIONS[self.activation]
    height, width, _ = self.image_shape
    r, n = self.radius, z.shape[0]
    w_x, w_out, w_direct = self._weights()
    hidden_z, logits_z = self._from_z(z)
    window = len(causal_offsets(r))

    def step(carry, inputs):
      pre, direct, canvas = carry
      i, w_x_row, w_out_col, w_direct_row, logit_z, key = inputs
      row, col = i // width, i % width
      patch = jax.lax.dynamic_slice(canvas, (0, row, col), (n, r + 1, 2 * r + 1))
      local = self._local(patch.reshape((n, -1))[:, :window])
      prob = jax.nn.sigmoid(act(pre) @ w_out_col + logit_z + direct[:, i] + local)
      pixel = jax.random.bernoulli(key, prob).astype(pre.dtype)
      canvas = jax.lax.dynamic_update_slice(canvas, pixel[:, None, None], (0, row + r, col + r))
      carry = (pre + pixel[:, None] * w_x_row, direct + pixel[:, None] * w_direct_row, canvas)
      return carry, (pixel, prob)

    num_pixels = height * width
    init = (hidden_z, jnp.zeros((n, num_pixels), z.dtype),
            jnp.zeros((n, height + r, width + 2 * r), z.dtype))
    inputs = (jnp.arange(num_pixels), w_x, w_out.T, w_direct, logits_z.T,
              jax.random.split(rng, num_pixels))
    _, (x, probs) = jax.lax.scan(step, init, inputs)
    shape = (n, *self.image_shape)
    return x.T.reshape(shape), probs.T.reshape(shape)


