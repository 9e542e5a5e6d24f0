"""Evaluation of any model family over a whole split, data-parallel: ELBO terms, IWAE NLL,
diagnostics. The family supplies per-example terms and log-weights (``Model``);
everything here is the same for every family.

The split is padded to a whole number of global batches and sharded once; each
device scans over its block. Every random draw (test-time binarization or
dequantization, the z sample) is keyed by the example's index and a fixed
evaluation seed, so the per-example numbers are identical from run to run and
on any device count, and models are compared on exactly the same test data.

With several processes (hosts), the split is sharded over the devices of all
of them: each process evaluates its block on its local devices, and
``parallel.unshard`` gathers the per-example results, so every process gets
the whole split's numbers (the summary needs all examples: the mutual
information and active units are statistics over the split, not means of
per-device means). Evaluating the whole split on every host instead would
need no gather but take as long on a pod as on one host.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import parallel
from vae_jax import progress
from vae_jax.core import likelihoods
from vae_jax.data import pipeline
from vae_jax.evaluation import diagnostics
from vae_jax.models import interface
from vae_jax.objectives import elbo
from vae_jax.objectives import iwae
from vae_jax.training import population
from vae_jax.training import preemption


@dataclasses.dataclass
class ShardedSplit:
  """A split laid out for evaluation: [devices, batches, per-device batch, ...]."""
  data: dict[str, jax.Array]      # "image" (uint8) and "label" where the split has labels
  ids: jax.Array
  num_examples: int


def shard_split(data: dict[str, np.ndarray] | np.ndarray, global_batch: int) -> ShardedSplit:
  """Pads to whole global batches (padding is dropped again after evaluation).

  ``data``: a batch dict of the whole split (``Dataset.arrays``), or its images alone.
  """
  data = data if isinstance(data, dict) else {"image": data}
  per_device = parallel.per_device(global_batch, "eval.batch_size")
  num = len(data["image"])
  padded = -(-num // global_batch) * global_batch
  ids = np.arange(padded, dtype=np.int32)
  # parallel.shard gives each device a contiguous run of these batches.
  def layout(x):
    x = np.concatenate([x, np.zeros((padded - len(x), *x.shape[1:]), x.dtype)])
    return x.reshape((padded // per_device, per_device, *x.shape[1:]))
  sharded = parallel.shard({"data": {k: layout(v) for k, v in data.items()},
                            "ids": layout(ids)})
  return ShardedSplit(sharded["data"], sharded["ids"], num)


def eval_keys(seed: int, stream: int, ids: jax.Array) -> jax.Array:
  """Per-example keys of one evaluation stream, keyed by example id."""
  return pipeline.example_keys(pipeline.stream_key(jax.random.PRNGKey(seed), stream, 0), ids)


def eval_inputs(images: jax.Array, ids: jax.Array, preprocessing: str, seed: int) -> jax.Array:
  """Test images as the model sees them (fixed binarization / dequantization)."""
  return pipeline.preprocess(images, eval_keys(seed, pipeline.STREAM_PIXELS, ids),
                             preprocessing)


def eval_batch(data: dict[str, jax.Array], ids: jax.Array, preprocessing: str,
               seed: int, render: Optional[Callable] = None) -> interface.Batch:
  """A batch dict as the model sees it in evaluation (images through ``eval_inputs``).

  ``render``: a rendered dataset's ``Dataset.render`` (rows -> uint8 images), keyed by id.
  """
  images = data["image"]
  if render is not None:
    images = render(images, eval_keys(seed, pipeline.STREAM_PIXELS, ids))
  return {**data, "image": eval_inputs(images, ids, preprocessing, seed)}


def make_eval_fn(model: interface.Model, preprocessing: str, seed: int,
                 num_importance_samples: int = 0, iwae_chunk_size: int = 20,
                 render: Optional[Callable] = None):
  """Per-device fn(params, data, ids) -> per-example terms [batches, batch, ...].

  Terms: the model's ``terms`` (bits_per_dim added for dequantized data) and,
  when num_importance_samples > 0, the IWAE estimate "log_px" with that many samples.
  No host callback inside: on a CPU a program with one runs synchronously, in the
  calling thread, which then cannot act on a signal until the batch ends.
  """

  def evaluate_batch(params, data, ids):
    batch = eval_batch(data, ids, preprocessing, seed, render)
    latent_keys = eval_keys(seed, pipeline.STREAM_LATENT, ids)
    if num_importance_samples:
      terms, log_weights = model.terms_and_log_weights(
          params, batch, latent_keys, eval_keys(seed, pipeline.STREAM_IMPORTANCE, ids))
      terms["log_px"] = iwae.log_px(log_weights, num_importance_samples, iwae_chunk_size)
    else:
      terms = model.terms(params, batch, latent_keys)
    if preprocessing == "dequantize":
      terms = elbo.add_bits_per_dim(terms, math.prod(batch["image"].shape[1:]))
    return terms

  def eval_fn(params, data, ids):
    return jax.lax.map(lambda batch: evaluate_batch(params, *batch), (data, ids))

  return eval_fn


class Evaluator:
  """Evaluates params (replicated on the devices) on one sharded split."""

  def __init__(self, model: interface.Model, preprocessing: str, seed: int,
               data: dict[str, np.ndarray] | np.ndarray, global_batch: int,
               iwae_chunk_size: int = 20, collapse_rate_floor: float = 0.0,
               render: Optional[Callable] = None, image_shape: Optional[tuple] = None):
    self.split = shard_split(data, global_batch)
    self._seed, self._preprocessing = seed, preprocessing
    self._image_shape = image_shape or tuple(self.split.data["image"].shape[3:])
    self._make = functools.partial(make_eval_fn, model, preprocessing, seed,
                                   iwae_chunk_size=iwae_chunk_size, render=render)
    self._progress: Optional[progress.Progress] = None
    self._fns = {}  # one compiled function per number of importance samples
    self._rate_floor = collapse_rate_floor

  def per_device_fn(self, num_importance_samples: int = 0):
    """The per-device evaluation program (see ``make_eval_fn``), e.g. to count its work."""
    return self._make(num_importance_samples=num_importance_samples)

  def per_example(self, params, num_importance_samples: int = 0,
                  num_members: Optional[int] = None) -> dict[str, np.ndarray]:
    """Per-example terms in split order, padding removed (float32, host).

    ``num_members``: ``params`` carry a leading axis of that many members (after the
    device axis), evaluated together by one ``jax.vmap``-ped program; every term then
    has the member axis first.
    """
    key = (num_importance_samples, num_members is not None)
    if key not in self._fns:
      fn = self.per_device_fn(num_importance_samples)
      if num_members is not None:  # vmapped, or looped inside the program on CPU
        member_fn = fn
        def fn(params, data, ids):  # pylint: disable=function-redefined
          out = population.over_members(lambda p: member_fn(p, data, ids))(params)
          return jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1), out)
      self._fns[key] = parallel.data_parallel(fn)
    self._progress = progress.Progress(
        f"evaluation of {self.split.num_examples} examples"
        + (f" with k={num_importance_samples}" if num_importance_samples else "")
        + (f" for {num_members} members" if num_members else ""),
        self.split.ids.shape[1], "batches")
    # One dispatch per batch, so that a stop requested meanwhile is acted on between
    # batches (preemption.check; a signal handler must not raise inside the program),
    # or during one where dropping it loses nothing (preemption.wait).
    fn, pieces, num_batches = self._fns[key], [], self.split.ids.shape[1]
    for i in range(num_batches + 1):
      if i < num_batches:
        pieces.append(fn(params, jax.tree.map(lambda x: x[:, i:i + 1], self.split.data),
                         self.split.ids[:, i:i + 1]))
      if i:  # one batch in flight while the previous one is checked
        preemption.wait(pieces[i - 1])  # not np.asarray alone: handlers must run meanwhile
        pieces[i - 1] = jax.tree.map(np.asarray, pieces[i - 1])
        self._progress.update()
        preemption.check()
    terms = parallel.unshard(jax.tree.map(lambda *x: np.concatenate(x, axis=1), *pieces))
    if num_members is None:
      terms = jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), terms)
      return jax.tree.map(lambda v: v[: self.split.num_examples], terms)
    # [device batches, members, batch, ...] -> [members, examples, ...]
    terms = jax.tree.map(lambda x: np.moveaxis(x, 1, 0).reshape(
        (x.shape[1], -1, *x.shape[3:])), terms)
    return jax.tree.map(lambda v: v[:, : self.split.num_examples], terms)

  def evaluate(self, params, num_importance_samples: int = 0) -> dict[str, Any]:
    """ELBO terms, latent diagnostics and (k > 0) the IWAE NLL, summarised."""
    start = time.time()
    terms = self.per_example(params, num_importance_samples)
    out = self._summary(terms, num_importance_samples)
    out["eval_seconds"] = time.time() - start
    return out

  def evaluate_members(self, params, num_members: int,
                       num_importance_samples: int = 0) -> list[dict[str, Any]]:
    """``evaluate`` of each of ``num_members`` members (``params``' leading axis after the
    device axis), as one program; ``eval_seconds`` is each one's share of the time."""
    start = time.time()
    terms = self.per_example(params, num_importance_samples, num_members)
    out = [self._summary(jax.tree.map(lambda v, m=m: v[m], terms), num_importance_samples)
           for m in range(num_members)]
    for summary in out:
      summary["eval_seconds"] = (time.time() - start) / num_members
    return out

  def _summary(self, terms: dict[str, Any], num_importance_samples: int) -> dict[str, Any]:
    dims = math.prod(self._image_shape) if self._preprocessing == "dequantize" else None
    out = summarize(terms, self._seed, self._rate_floor, dims)
    if num_importance_samples:
      out["num_importance_samples"] = num_importance_samples
    out["eval_seed"] = self._seed
    return out


def summarize(terms: dict[str, Any], seed: int, rate_floor: float,
              dequantized_dims: Optional[int] = None) -> dict[str, Any]:
  """Means over the split (float64) and diagnostics; every figure in nats per example.

  neg_elbo is the loss papers quote; nll = -mean log p_k(x) (IWAE) when present, and
  gap = nll - neg_elbo (<= 0 in expectation: how loose the ELBO is). Every
  per-example float term is averaged under its own name (a family's own
  diagnostics included); active units and mutual information need the family's
  ``posterior``, the per-dimension KL its ``kl_per_dim``; with ``latent_groups``
  active units are counted per layer (active_units_z1, ..., "16+5") and summed.
  ``dequantized_dims``:
  the pixels per example of dequantized 8-bit data, to state the NLL in bits/dim.
  """
  mean = lambda v: float(np.mean(v, dtype=np.float64))
  out = {k: mean(v) for k, v in terms.items()
         if k != "log_px" and isinstance(v, np.ndarray) and v.ndim == 1
         and np.issubdtype(v.dtype, np.floating)}
  out["neg_elbo"] = -out["elbo"]
  if interface.KL_PER_DIM in terms:
    out["kl_per_dim"] = [mean(v) for v in terms[interface.KL_PER_DIM].T]
  num_active = None
  if interface.POSTERIOR in terms:
    posterior = terms[interface.POSTERIOR]
    num_active, activity = diagnostics.active_units(posterior.mean)
    out["active_units"] = num_active
    out["activity_per_dim"] = [float(a) for a in activity]
    out["mutual_information"] = diagnostics.mutual_information(posterior, seed)
  if interface.LATENT_GROUPS in terms:  # several stochastic layers: units counted per layer
    groups = {name: diagnostics.active_units(mean)
              for name, mean in terms[interface.LATENT_GROUPS].items()}
    out.update({f"active_units_{name}": n for name, (n, _) in groups.items()})
    out["active_units"] = num_active = sum(n for n, _ in groups.values())
    out["activity_per_dim"] = [float(a) for _, act in groups.values() for a in act]
    out["active_units_by_layer"] = "+".join(str(n) for n, _ in groups.values())
  if "log_px" in terms:
    out["nll"] = -mean(terms["log_px"])
    out["gap"] = out["nll"] - out["neg_elbo"]
    if dequantized_dims:
      out["nll_bits_per_dim"] = float(likelihoods.bits_per_dim(out["nll"], dequantized_dims))
  out["posterior_collapse"] = diagnostics.collapse_alarm(num_active, out["rate"], rate_floor)
  return out


def scalars(summary: dict[str, Any]) -> dict[str, float]:
  """The summary's numbers as flat scalars for metric writers (per-dim KL included)."""
  out = {k: v for k, v in summary.items()
         if isinstance(v, (int, float)) and not isinstance(v, bool)}
  out.update({f"kl_dim_{d:03d}": v for d, v in enumerate(summary.get("kl_per_dim", []))})
  out["posterior_collapse"] = float(summary.get("posterior_collapse") is not None)
  return out
