"""The one interface between a model family and the generic code.

The trainer, the evaluator, the IWAE bound, the diagnostics and the pictures
call only what is declared here; none of them knows which family it runs. A
family is one module ``vae_jax/models/NAME.py``, chosen by ``config.model.name``
(``vae_jax.models.get``), that defines three functions:

  validate(config, data: DataInfo) -> None
      Checks the family's own fields (``config.model.*``) against the data and
      raises ``checks.ConfigError`` naming the field and what would be valid.
  observes(config) -> "binary" | "continuous"
      Which pixels its likelihood models, so the data can be preprocessed to
      match (binarized, or dequantized onto [0, 1]).
  build(config, data: DataInfo) -> Model
      The model: a frozen (hashable) object whose methods are pure functions of
      params and batches, so they can be jit-compiled and passed as static args.

Batches are dicts: "image" (float32 [B, H, W, C], preprocessed) and "label"
(int32 [B]) where the dataset has labels, so a conditional family changes no
signature. Per-example keys come from the caller: draw i depends on example
i's key only, never on the batch or device split, which keeps every figure
invariant to the device count.

Optional capabilities (generic code asks for them by attribute, never by family):
  training_terms(params, batch, keys, step) -> Terms
      The terms the trainer differentiates at optimizer step ``step`` (a traced
      int32), where they differ from ``terms`` (e.g. a relaxation whose
      temperature anneals with the step); ``terms`` stays the honest figure the
      evaluation reports. Absent: the trainer uses ``terms`` (``training_terms``).
  num_label_classes: int
      A conditional family: ``encode``, ``terms`` and ``log_weights`` read
      batch["label"] (int32 [B] in 0..num_label_classes-1); ``decode``,
      ``sample_observation`` and ``sample_prior`` take ``condition={"label":
      [N]}``, and without one decode example i as class i mod num_label_classes.
      ``sample_prior``'s noise must not depend on the labels, so one key gives
      the same style under every class (the class-conditional pictures).

docs/models.md walks through adding a family.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Optional

import jax

from vae_jax.core import checks

Params = Any
Batch = dict[str, jax.Array]
Terms = dict[str, Any]
LogWeights = Callable[[jax.Array], jax.Array]

# Keys of ``Model.terms`` that generic code reads. Every other per-example ([B])
# float entry is a family's own diagnostic, passed to metrics and tables by name.
REQUIRED_TERMS = ("elbo", "rate", "distortion")
KL_PER_DIM = "kl_per_dim"       # [B, d]: free bits, per-dimension KL in the evaluation
POSTERIOR = "posterior"         # a distribution with .mean, .sample(keys), .log_prob(z)
# {layer name: E_q[u|x] [B, d_layer]}: a family with several stochastic layers gives each
# layer's posterior mean, and active units are counted per layer (Burda et al.'s "16+5").
LATENT_GROUPS = "latent_groups"

# Optional methods for the DReG gradient (objective.gradient_estimator="dreg"):
#   log_weights_stopped_posterior(params, batch, keys) -> LogWeights
#       as ``log_weights``, but log q(z|x) scored with q's parameters stop-gradiented
#       (the draws z keep their reparameterized path to them);
#   posterior_params(params) -> a pytree of bools like params: True for q's parameters.
DREG_METHODS = ("log_weights_stopped_posterior", "posterior_params")


class Model(abc.ABC):
  """What one family's model provides. See the module docstring for the rules."""

  # Whether the gradient of ``log_weights`` with respect to params is the reparameterized
  # gradient of the k-sample bounds, so that the k-sample training objectives
  # (objectives/training_objectives.py) may train on it. False where the draws are discrete
  # (exact categorical draws, codebook lookups): there the bound has no such gradient.
  reparameterized_log_weights = True

  @property
  @abc.abstractmethod
  def latent_dim(self) -> Optional[int]:
    """Size of the continuous code vectors ``encode`` returns; None if codes are not vectors."""

  @abc.abstractmethod
  def init(self, rng: jax.Array) -> Params:
    """Fresh parameters (the same for the same key)."""

  @abc.abstractmethod
  def terms(self, params: Params, batch: Batch, keys: jax.Array) -> Terms:
    """Per-example ELBO terms, one latent draw per example from ``keys`` [B], in nats.

    Required: ``elbo`` (the bound for one sample, the loss's integrand), ``rate``
    (KL(q || p) or its estimate), ``distortion`` (-log p(x|z)), each [B]. Where
    they exist: ``kl_per_dim`` [B, d] and ``posterior`` (see POSTERIOR) for
    active units and mutual information; other [B] floats are reported by name.
    """

  @abc.abstractmethod
  def log_weights(self, params: Params, batch: Batch, keys: jax.Array) -> LogWeights:
    """Encodes once; returns sample_ids [c] -> log p(x, z_ij) - log q(z_ij | x_i) [B, c].

    Draw j of example i comes from (keys[i], j) alone, so any chunking of the
    ids gives the same draws: the IWAE bound's only input.
    """

  @abc.abstractmethod
  def encode(self, params: Params, batch: Batch) -> jax.Array:
    """The code of each example, [B, latent_dim]: the posterior mean E_q[z|x]."""

  @abc.abstractmethod
  def decode(self, params: Params, codes: jax.Array, rng: Optional[jax.Array] = None,
             condition: Optional[Batch] = None) -> jax.Array:
    """The picture of codes [N, latent_dim]: E[x|z] in [0, 1] (where E[x|z] is
    intractable, the family says in its docstring what it shows instead; ``rng``
    is then used, key 0 by default). ``condition``: the batch entries a
    conditional family decodes with (e.g. "label")."""

  @abc.abstractmethod
  def sample_observation(self, params: Params, codes: jax.Array, rng: jax.Array,
                         condition: Optional[Batch] = None) -> jax.Array:
    """x ~ p(x|z) in [0, 1]: what the model generates, noise included."""

  @abc.abstractmethod
  def sample_prior(self, rng: jax.Array, num: int,
                   condition: Optional[Batch] = None) -> jax.Array:
    """Codes z ~ p(z) (or p(z | condition)), [num, latent_dim]."""

  def terms_and_log_weights(self, params: Params, batch: Batch, keys: jax.Array,
                            importance_keys: jax.Array) -> tuple[Terms, LogWeights]:
    """``terms`` and ``log_weights`` of one batch, what the evaluator needs of each.

    By default two calls; a family whose two share work (an encoder pass) overrides
    it to do that work once, so the evaluation's cost is what its roofline counts.
    """
    return (self.terms(params, batch, keys),
            self.log_weights(params, batch, importance_keys))

  def reconstruct(self, params: Params, batch: Batch) -> jax.Array:
    """The picture of each example's code: E[x | z = E_q[z|x]]."""
    return self.decode(params, self.encode(params, batch), condition=batch)

  def sample(self, params: Params, rng: jax.Array, num: int,
             condition: Optional[Batch] = None) -> jax.Array:
    """Pictures of prior samples (conditioned where the family is conditional)."""
    return self.decode(params, self.sample_prior(rng, num, condition), condition=condition)


# The after-update capability, optional: a family with state that is not trained by
# gradients (a VQ-VAE's EMA codebook, its dead-code restarts) defines both methods.
# The train step then calls, after each optimizer update,
#   stats = parallel.mean(model.update_statistics(old_params, batch, keys))
#   params, metrics = model.after_update(old_params, new_params, stats)
# update_statistics(params, batch, keys) -> pytree of per-example means over the local
#   batch (so the mean over devices is the global batch's: device-count invariant).
# after_update(previous, params, stats) -> (params, {name: scalar}): the new params (the
#   optimizer's, with the family's state advanced from ``previous``, so the optimizer
#   cannot move that state) and train metrics. Without them nothing happens.
AFTER_UPDATE = ("update_statistics", "after_update")


def has_after_update(model: Model) -> bool:
  """Whether ``model`` has the after-update capability (AFTER_UPDATE)."""
  return all(callable(getattr(model, m, None)) for m in AFTER_UPDATE)


def training_terms(model: Model, params: Params, batch: Batch, keys: jax.Array,
                   step: jax.Array) -> Terms:
  """The terms the trainer differentiates at ``step``: the family's ``training_terms``
  where it has one (see the module docstring), else its ``terms``."""
  step_aware = getattr(model, "training_terms", None)
  if callable(step_aware):
    return step_aware(params, batch, keys, step)
  return model.terms(params, batch, keys)


def num_label_classes(model: Model) -> Optional[int]:
  """The number of label classes a conditional family conditions on; None if unconditional."""
  return getattr(model, "num_label_classes", None)


def require(model: Model, methods: tuple[str, ...], needed_by: str) -> None:
  """Raises ConfigError unless ``model`` has ``methods`` beyond the interface.

  Studies of one kind of model (e.g. per-point SVI of a diagonal-Gaussian
  q(z|x)) ask for the capability, not for a family by name.
  """
  missing = [m for m in methods if not callable(getattr(model, m, None))]
  if missing:
    raise checks.ConfigError(
        f"{needed_by} needs a model with {', '.join(methods)}; {type(model).__name__} "
        f"(config.model.name) lacks {', '.join(missing)}.")
