"""VQ-VAE (van den Oord et al. 2017) on Fashion-MNIST or CIFAR-10 (vae_jax/models/vqvae.py).

Two sizes (``size=``): "cpu" is small enough to train in minutes on a shared
2-core CPU (a 7x7 grid of 64 codes of dimension 16 on Fashion-MNIST, 2,000 steps
of batch 64); "full" is the paper's CIFAR-10 model for accelerators (two
stride-2 conv stages of 128 and 256 channels, two residual blocks, a 512 x 64
codebook, beta = 0.25, Adam 2e-4, batch 128, 250k steps). The codebook follows
exponential moving averages (the paper's appendix; ``ema=false``: trained by
gradients, which Adam moves by about the learning rate per step, far slower than
the encoder's outputs move early on: see docs/vqvae.md), and ``restart=true``
restarts dead codes from encoder outputs.

  python -m experiments.train --config=configs/vqvae.py --workdir=/tmp/vq \\
      --config.data.manual_dir=/usr/share/datasets/fashion-mnist
  python -m experiments.train --config=configs/vqvae.py:size=full,data=cifar10 --workdir=...
  python -m experiments.pictures --workdir=/tmp/vq
  python -m studies.code_prior --config.run=/tmp/vq --workdir=/tmp/vq_prior  # the code prior

Its sweep (EMA codebook off / on) runs through experiments.sweep unchanged.
"""

import ml_collections

from configs import common
from configs import default


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, file=__file__, size=common.OneOf("cpu", ("cpu", "full")),
                          data=common.OneOf("fashion_mnist", ("fashion_mnist", "cifar10",
                                                              "mnist_5k")),
                          ema=True, restart=True, seed=0)
  config = default.get_config()
  config.seed = args.seed
  config.data.name = args.data
  config.data.fallback = ""   # a VQ-VAE result on other data would be mislabelled
  config.model = ml_collections.ConfigDict()
  m = config.model
  m.name = "vqvae"
  m.num_codes = 64            # K
  m.code_dim = 16             # D
  m.width = 32                # channels of the first conv stage (then 2x per stage)
  m.depth = 2                 # stride-2 stages: 28x28 -> a 7x7 code grid
  m.num_residual = 1          # residual blocks each side
  m.activation = "relu"
  # A fixed sigma (the paper's squared error) on dequantized pixels: the bound in bits/dim.
  # A learned per-pixel sigma shrinks on the blank background, where every code switch then
  # costs hundreds of nats: training swung between 8 and 10 bits/dim in a trial.
  m.likelihood = "gaussian_fixed"
  m.gaussian_scale = 0.1
  m.conv_impl = "auto"
  m.commitment_cost = 0.25    # beta of the paper
  m.ema = args.ema
  m.ema_decay = 0.99
  m.ema_epsilon = 1e-5
  m.restart_dead_codes = args.restart
  m.dead_code_threshold = 1e-3  # uses per example (EMA); below it a code is dead
  config.objective.beta = 1.0
  config.batch_size = 64
  config.num_train_steps = 2000
  config.steps_per_dispatch = 100
  config.log_every = 500
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.eval.batch_size = 500
  # q is deterministic: the IWAE bound equals the ELBO, so one sample says it all.
  config.eval.num_importance_samples = 1
  config.eval.num_importance_samples_during_training = 0
  if args.size == "full":
    m.num_codes, m.code_dim, m.width, m.num_residual = 512, 64, 128, 2
    config.optim.learning_rate = 2e-4
    config.batch_size = 128
    config.num_train_steps = 250_000
    config.steps_per_dispatch = 500
    config.log_every = 1000
    config.eval_every = 10_000
    config.checkpoint_every = 10_000
  return config


def sweep() -> list[dict]:
  """The codebook trained by gradients vs by EMA, one seed each."""
  return [{"model.ema": False}, {"model.ema": True}]
