"""Populations: runs that differ only in values, trained together as one compiled program.

A sweep's members usually differ in a few numbers (β, the seed, the learning
rate, the latent dimension), not in the program: the arrays have the same
shapes and the same operations run on them. Such members train as one
*population*: every leaf of the train state carries a leading member axis, and
the train step, written for one member, is ``jax.vmap``-ed over it (PureJaxRL's
``jit(vmap(train))``). What differs between members enters as data:

- the seed: each member's own parameters and base key (the state);
- ``HYPER_FIELDS``: traced per-member scalars (``Hyper``), read by the step
  instead of the compile-time constants a solo run uses;
- ``model.latent_dim``, for a family with the latent-mask capability
  (``Model.with_latent_mask``): every member is padded to the largest dimension.
  It is initialised at its own size and its parameters zero-padded (``pad``); the
  mask makes the padded units inert: zero codes into the decoder, no rate, no
  terms in log q or log p(z), so their parameters get zero gradients and stay
  zero. A member's slice (``unpad``) is exactly a model of its own size, which is
  what its checkpoints, evaluation and pictures use.

Any other difference (architecture, batch size, data, k, a family's own field)
changes the program, and such members go to different populations
(``compatibility_key``). A member that stops early (validation) is frozen: its
learning rate is multiplied by 0, so its parameters stay exactly as they were,
and the program keeps its shape.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence

import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax.models import interface
from vae_jax.objectives import auxiliary
from vae_jax.objectives import regularizers

# config field -> the name the train step reads it by from ``Hyper`` (see step.TrainSpec).
HYPER_FIELDS = {"objective.beta": "beta", "objective.warmup_steps": "kl_warmup_steps",
                "objective.free_bits": "free_bits", "optim.learning_rate": "learning_rate",
                "debug.nan_at_step": "nan_at_step",
                **{f"objective.{f}": f for f in regularizers.FIELDS if f != "regularizer"}}
# The value of a field a config lacks (recorded before it existed): the one it had then.
_ABSENT = {f"objective.{f}": v for f, v in regularizers.FIELDS.items()}
SEED_FIELD = "seed"
LATENT_FIELD = "model.latent_dim"
# Hyper entries of every population of two or more (not fields): 1.0 while the member
# trains, 0.0 once it is frozen; and the latent mask [d_max] where dimensions differ.
ACTIVE = "active"
LATENT_MASK = "latent_mask"

Hyper = dict[str, Any]   # name -> [M] (or [M, d_max]) arrays; {} for a solo run


SPLITS = ("auto", "batch", "members")


def choose_split(num_members: int, num_devices: int, requested: str = "auto") -> str:
  """How a population shares the devices (``step.TrainSpec.split``).

  "members" gives each device whole members: no gradient crosses devices, and each
  member's arithmetic is that of one device. "batch" gives each device a slice of every
  member's batch and averages gradients over devices every step: the traffic of one
  gradient per member per step, which for many small members dwarfs their compute.
  "auto" splits members where there are at least as many as devices and they divide
  evenly, batches otherwise (a solo run, or fewer members than devices).
  """
  if requested not in SPLITS:
    raise ValueError(f"population split {requested!r} is invalid: use one of {SPLITS}.")
  fits = num_members > 1 and num_members % num_devices == 0
  if requested == "members" and not fits:
    raise ValueError(f"population split 'members' needs a number of members divisible by the "
                     f"{num_devices} devices (and more than one); this population has "
                     f"{num_members}. Use 'batch' or 'auto'.")
  if requested == "auto":
    return "members" if fits and num_devices > 1 else "batch"
  return "batch" if num_members == 1 else requested


def over_members(fn: Callable, vectorized: Optional[bool] = None) -> Callable:
  """``fn`` (written for one member) over a leading member axis of every argument.

  ``vectorized``: ``jax.vmap``, one batched program (accelerators: the members' matrix
  products become batched products that fill the chip); or ``jax.lax.map``, the members
  one after another inside the one compiled program, each running the solo run's
  operations. XLA:CPU runs batched matrix products at about half the rate of single
  ones (docs/performance.md#populations), so None (the default) loops on CPU and
  vectorizes elsewhere. Both give every member the same numbers up to float rounding.
  """
  if vectorized is None:
    vectorized = jax.default_backend() != "cpu"
  if vectorized:
    return jax.vmap(fn)
  return lambda *args: jax.lax.map(lambda member_args: fn(*member_args), args)


def supports_latent_mask(model: interface.Model) -> bool:
  """Whether the family can pad its latent dimension (``Model.with_latent_mask``)."""
  return callable(getattr(model, "with_latent_mask", None))


def _flat(config: ml_collections.ConfigDict) -> dict[str, Any]:
  out = {}
  def walk(node, prefix):
    for key, value in node.items():
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        walk(value, f"{prefix}{key}.")
      else:
        out[prefix + key] = value
  walk(config, "")
  return out


def compatibility_key(config: ml_collections.ConfigDict, maskable: bool) -> str:
  """Equal for configs that can train in one population: equal but for the seed, the
  ``HYPER_FIELDS`` and (``maskable``: the family pads latents) the latent dimension."""
  # An auxiliary network's input is the latent code: its members cannot be padded.
  maskable = maskable and auxiliary.get(config) is None
  free = {SEED_FIELD, *HYPER_FIELDS} | ({LATENT_FIELD} if maskable else set())
  fields = {k: v for k, v in _flat(config.to_dict()).items() if k not in free}
  return json.dumps(fields, sort_keys=True, default=str)


def varying(configs: Sequence[ml_collections.ConfigDict]) -> list[str]:
  """The HYPER_FIELDS whose values differ between ``configs``."""
  return [f for f in HYPER_FIELDS
          if len({json.dumps(_value(_flat(c.to_dict()), f)) for c in configs}) > 1]


def _value(flat: dict[str, Any], field: str) -> Any:
  return flat[field] if field in flat else _ABSENT[field]


def latent_dims(configs: Sequence[ml_collections.ConfigDict]) -> list[int]:
  return [int(c.model.latent_dim) for c in configs] if all(
      "latent_dim" in c.model for c in configs) else []


def hyper_arrays(configs: Sequence[ml_collections.ConfigDict]) -> Hyper:
  """The traced per-member inputs of a population of ``configs``; {} for one member.

  A population of two or more always gets the learning rate and the ``active``
  flag (freezing multiplies the one by the other), the other HYPER_FIELDS where
  they vary, and the latent mask where the dimensions do.
  """
  if len(configs) == 1:
    return {}
  flat = [_flat(c.to_dict()) for c in configs]
  fields = set(varying(configs)) | {"optim.learning_rate"}
  hyper = {HYPER_FIELDS[f]: np.asarray([_value(fl, f) for fl in flat], np.float32)
           for f in HYPER_FIELDS if f in fields}
  hyper[ACTIVE] = np.ones(len(configs), np.float32)
  dims = latent_dims(configs)
  if dims and len(set(dims)) > 1:
    top = max(dims)
    hyper[LATENT_MASK] = (np.arange(top)[None] < np.asarray(dims)[:, None]).astype(np.float32)
  return hyper


def pad(small: Any, big: Any) -> Any:
  """``small``'s parameters zero-padded at the end of every axis to ``big``'s shapes."""
  def one(s, b):
    s = np.asarray(s)
    widths = [(0, bs - ss) for ss, bs in zip(s.shape, np.shape(b))]
    if any(w < 0 for _, w in widths):
      raise ValueError(f"cannot pad {s.shape} to {np.shape(b)}")
    return np.pad(s, widths)
  return jax.tree.map(one, small, big)


def unpad(big: Any, small: Any) -> Any:
  """The inverse of ``pad``: ``big`` cut to ``small``'s shapes (arrays or shape structs)."""
  return jax.tree.map(lambda b, s: b[tuple(slice(0, n) for n in np.shape(s))], big, small)


def _resize_state(state: Any, template: Any, resize: Callable[[Any, Any], Any]) -> Any:
  """``state`` with its parameters ``resize``d to ``template``'s shapes. Optimizer states
  hold the parameters as one flat vector (``optax.flatten``): those are unflattened,
  resized and flattened again."""
  flat, unravel = jax.flatten_util.ravel_pytree(state.params)
  target = jax.flatten_util.ravel_pytree(template.params)[0].size

  def leaf(a, b):
    if np.shape(a) == np.shape(b):
      return np.asarray(a)
    if np.ndim(a) == 1 and np.size(a) == flat.size and np.size(b) == target:
      resized = resize(unravel(jnp.asarray(a)), template.params)
      return np.asarray(jax.flatten_util.ravel_pytree(resized)[0])
    raise ValueError(f"cannot resize a state leaf of shape {np.shape(a)} to {np.shape(b)}")
  return state.replace(params=resize(state.params, template.params),
                       opt_state=jax.tree.map(leaf, state.opt_state, template.opt_state))


def pad_state(small: Any, big_template: Any) -> Any:
  """A member's train state (host arrays, its own size) in the padded layout of
  ``big_template`` (a state at the largest size)."""
  return _resize_state(small, big_template, pad)


def unpad_state(big: Any, small_template: Any) -> Any:
  """The inverse of ``pad_state``: a padded member's state at its own size."""
  return _resize_state(big, small_template, unpad)


def stack(trees: Sequence[Any]) -> Any:
  """Member trees -> one tree with a leading member axis (host numpy)."""
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def member(tree: Any, index: int) -> Any:
  """Member ``index``'s slice of a stacked (host) tree."""
  return jax.tree.map(lambda x: x[index], tree)


def masked(model: interface.Model, hyper: Hyper) -> interface.Model:
  """The model one member trains: with its latent mask where the population has one."""
  if LATENT_MASK in hyper:
    return model.with_latent_mask(hyper[LATENT_MASK])
  return model


def frozen_updates(active: Optional[jax.Array], new: Any, old: Any) -> Any:
  """``new`` where the member is active, else ``old`` (state moved outside the optimizer)."""
  if active is None:
    return new
  return jax.tree.map(lambda n, o: jnp.where(active > 0, n, o), new, old)
