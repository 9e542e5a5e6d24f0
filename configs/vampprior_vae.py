"""The VampPrior paper's standard-normal-prior VAE on static binarized MNIST (published 88.56).

Tomczak & Welling, "VAE with a VampPrior", AISTATS 2018, the MNIST results table
(staticMNIST, VAE with one stochastic layer and the standard normal prior): test
log-likelihood -88.56 nats, importance sampling with 5,000 samples. The figure is
quoted from memory: no stored copy of the paper's table could be read offline
(docs/published.md). Their protocol, as their code (jmtomczak/vae_vampprior) sets it:
40 latents; encoder and decoder of two gated dense layers of 300 units (GatedDense:
h = (W x + b) * sigmoid(V x + c)); Bernoulli decoder; the official .amat splits; batch
100; learning rate 5e-4; KL warm-up linear over 100 epochs; at most 2,000 epochs,
stopped when the validation loss has not improved for 50 epochs (the count starts
after the warm-up); the model of the best validation epoch is tested with S = 5,000.

Here: the same, gated layers included (``model.activation = "gated"``), except:
validation is scored every 5 epochs, so their 50-epoch look-ahead is 10 evaluations;
plain Adam (theirs is AdamNormGrad, a variant in their utils/optimizer.py); flax's
LeCun-normal weights (theirs: He); their log-variance is clipped to [-6, 2] (Hardtanh),
ours is not. Expected: NLL(k=5000) near 88.56; the run of 2026-12-05 stopped early at
epoch 345 (best on validation: epoch 295) with test NLL(k=5000) 88.003 (docs/published.md).

  python -m experiments.train --config=configs/vampprior_vae.py --workdir=/work/runs/vampprior \
      --config.data.manual_dir=../shared/data/binarized_mnist
"""

import ml_collections

from configs import default

EPOCH = 500  # steps of 100 in the 50,000 training images


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.validation_split = "validation"
  config.model.width = 300
  config.model.depth = 2
  config.model.activation = "gated"
  config.model.latent_dim = 40
  config.objective.warmup_steps = 100 * EPOCH
  config.batch_size = 100
  config.optim.learning_rate = 5e-4
  config.num_epochs = 2000
  config.steps_per_dispatch = EPOCH
  config.log_every = 5 * EPOCH
  config.eval_every = 5 * EPOCH
  config.checkpoint_every = 5 * EPOCH
  config.keep_checkpoints = 2
  config.keep_best_checkpoint = True
  config.selection.metric = "neg_elbo"
  config.selection.patience = 10               # 50 epochs without improvement
  config.eval.num_importance_samples = 5000
  config.eval.num_importance_samples_during_training = 0
  return config
