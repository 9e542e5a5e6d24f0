r"""Posterior collapse and its remedies: no remedy vs KL warm-up vs free bits.

The default MLP encoder (500 units, 20 latents) with the autoregressive
decoder (vae_jax/models/layers.py AutoregressiveDecoder): each pixel's Bernoulli logit
sees every earlier pixel (a MADE layer, a linear FVSBN term and a local
PixelCNN-like layer) besides z, so the decoder can model the digits without z,
and the KL term is then pure cost. Settings:

  none       beta = 1 from step 0 (the plain ELBO);
  warm-up    beta ramps linearly from 0 to 1 over WARMUP_STEPS (Bowman et al. 2016);
  free bits  lambda nats per dimension are free: sum_d max(lambda, E_batch KL_d)
             (Kingma et al. 2016), at lambda = 0.25 and 0.5.

Test active units, rate and the IWAE NLL (k = 50) are logged every 1,000 steps
for the training curves, the final NLL with k = 1,000. data.fallback is '': a
study must not quietly train on other data. The sweep (4 settings x 2 seeds,
10,000 steps each; 317-461 s a member, about 50 minutes on a 2-core CPU), then its
table, curves and pictures (results and discussion: docs/studies.md, study 3):

  python -m experiments.sweep --config=studies/collapse/config.py \
      --workdir=workdirs/studies/collapse --parallel=1 \
      --config.data.manual_dir=../shared/data/binarized_mnist \
  && python -m experiments.tables --workdir=workdirs/studies/collapse \
  && python -m experiments.pictures --workdir=workdirs/studies/collapse
"""

import ml_collections

from configs import default

SEEDS = (0, 1)
WARMUP_STEPS = 5000
FREE_BITS = (0.25, 0.5)


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.name = "binarized_mnist"
  config.data.fallback = ""
  config.model.decoder = "autoregressive"
  config.num_train_steps = 10000            # ~26 epochs; units collapse over steps 3,000-7,000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.eval.num_importance_samples = 1000
  config.eval.num_importance_samples_during_training = 50
  return config


def sweep() -> list[dict]:
  """Every remedy with every seed; each member sets both fields, so the table shows both."""
  settings = ([{"objective.warmup_steps": 0, "objective.free_bits": 0.0},
               {"objective.warmup_steps": WARMUP_STEPS, "objective.free_bits": 0.0}]
              + [{"objective.warmup_steps": 0, "objective.free_bits": fb} for fb in FREE_BITS])
  return [{**setting, "seed": seed} for setting in settings for seed in SEEDS]
