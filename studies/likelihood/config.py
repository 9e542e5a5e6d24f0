r"""The decoder's likelihood: Bernoulli vs Gaussian (fixed scale) vs Gaussian (learned scale).

The same MLP VAE (configs/default.py: 500 hidden units, 20 latents, Adam 1e-3)
with each observation model p(x|z) on grayscale digits or clothes:

  bernoulli         on dynamically binarized pixels, x ~ Bernoulli(pixel / 255);
  gaussian_fixed    N(x; mu(z), sigma^2) on dequantized pixels (pixel + u) / 256,
                    at sigma = 0.1 (this codebase's default) and sigma = 1 (the
                    "unit-variance Gaussian" = summed squared error / 2 of many
                    tutorials). A fixed sigma is a hidden beta: -log p(x|z) =
                    |x - mu|^2 / (2 sigma^2) + const, so the ELBO's trade-off of
                    rate against squared error is set by 2 sigma^2;
  gaussian_learned  a per-pixel log sigma learned with the rest (starts at 0.1).

The config argument picks the data (and a training length for its size):

  studies/likelihood/config.py:data=mnist_5k       5,000 real digits, embedded (4,000 / 1,000)
  studies/likelihood/config.py:data=fashion_mnist  needs --config.data.manual_dir=DIR with the
                                                    four IDX files (vae_jax/data/idx.py)
  studies/likelihood/config.py:data=mnist          likewise, MNIST's IDX files (or TFDS)

data.fallback is '' here: a study must not quietly train on other data.
The two sweeps (4 settings x 3 seeds each, NLL with k = 1000), then their tables:

  python -m experiments.sweep --config=studies/likelihood/config.py:data=mnist_5k \
      --workdir=workdirs/studies/likelihood_mnist --parallel=1 \
      --config.eval.num_importance_samples=1000
  python -m experiments.tables --workdir=workdirs/studies/likelihood_mnist

  python -m experiments.sweep --config=studies/likelihood/config.py:data=fashion_mnist \
      --workdir=workdirs/studies/likelihood_fashion --parallel=1 \
      --config.data.manual_dir=/usr/share/datasets/fashion-mnist \
      --config.eval.num_importance_samples=1000
  python -m experiments.tables --workdir=workdirs/studies/likelihood_fashion

Bernoulli NLLs are nats per binarized image; Gaussian ones are densities of
dequantized 8-bit pixels, also reported as bits/dim. They model different data
and are not comparable with each other (see docs/studies.md).
"""

import ml_collections

from configs import common
from configs import default

SEEDS = (0, 1, 2)
FIXED_SCALES = (0.1, 1.0)
LEARNED_INITIAL_SCALE = 0.1
# data -> training steps at batch 128: 129 epochs of mnist_5k's 4,000 digits (past ~5,000
# steps the learned per-pixel scale overfits them: test NLL rises while train improves),
# 20 epochs of the 60,000 training images of (Fashion-)MNIST.
DATA = {"mnist_5k": 4000, "fashion_mnist": 9360, "mnist": 9360}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = default.get_config()
  data = common.parse_arg(arg, file=__file__, data=common.OneOf("mnist_5k", tuple(DATA))).data
  config.data.name = data
  config.data.fallback = ""
  config.num_train_steps = DATA[data]
  config.model.gaussian_scale = LEARNED_INITIAL_SCALE
  config.eval_every = 1000
  config.checkpoint_every = 1000
  return config


def sweep() -> list[dict]:
  """Each likelihood (two scales for the fixed Gaussian) with every seed."""
  settings = ([{"model.likelihood": "bernoulli"}]
              + [{"model.likelihood": "gaussian_fixed", "model.gaussian_scale": s}
                 for s in FIXED_SCALES]
              + [{"model.likelihood": "gaussian_learned"}])
  return [{**setting, "seed": seed} for setting in settings for seed in SEEDS]
