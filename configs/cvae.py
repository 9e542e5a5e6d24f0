"""A conditional VAE (Sohn et al. 2015) on labelled digits: q(z|x,y), p(x|y,z), p(z) = N(0, I).

The default config's MLP (500 hidden units, Bernoulli pixels, batch 128, Adam
1e-3) with the label concatenated (one-hot) to the encoder's and the decoder's
inputs, and 20 latents. Default data: the embedded mnist_5k (5,000 labelled
digits, binarized dynamically), 150 epochs (4,650 steps: for about the first
thousand steps the encoder also puts the class in z, and the decoder learns to
read it from y only later; at 30 epochs the class grid still ignores y). The test figures are the
conditional -ELBO and IWAE NLL of log p(x|y). Config argument: the fields
below by short name, e.g. prior=learned (p(z|y) = N(m_y, diag(s_y^2))) or
data=fashion_mnist (IDX files in data.manual_dir).

  python -m experiments.train --config=configs/cvae.py --workdir=/tmp/cvae
  python -m experiments.train --config=configs/cvae.py:data=fashion_mnist,num_epochs=10 \\
      --workdir=/tmp/cvae_fashion --config.data.manual_dir=/usr/share/datasets/fashion-mnist
  python -m experiments.pictures --workdir=/tmp/cvae

Its sweep (standard / learned prior), then the table:

  python -m experiments.sweep --config=configs/cvae.py --workdir=workdirs/cvae_sweep
  python -m experiments.tables --workdir=workdirs/cvae_sweep
"""

import ml_collections

from configs import common
from configs import default

LABELLED = ("mnist_5k", "digits", "fashion_mnist", "mnist", "cifar10")

# Short names accepted in the config argument -> the fields they set.
ARGUMENTS = {"data": "data.name", "latent_dim": "model.latent_dim", "prior": "model.prior",
             "num_epochs": "num_epochs", "seed": "seed"}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.name = "mnist_5k"
  config.num_epochs = 150               # 4,650 steps: the decoder needs that long to use y
  config.model = ml_collections.ConfigDict()
  config.model.name = "cvae"
  config.model.latent_dim = 20
  config.model.width = 500               # MLP hidden units, encoder and decoder
  config.model.depth = 1
  config.model.activation = "relu"
  config.model.likelihood = "bernoulli"  # "bernoulli" | "gaussian_fixed" (colour data)
  config.model.gaussian_scale = 0.1
  config.model.prior = "standard"        # "standard": N(0, I) | "learned": p(z|y)
  defaults = {name: config[field] for name, field in ARGUMENTS.items()}
  defaults["data"] = common.OneOf(config.data.name, LABELLED)
  args = common.parse_arg(arg, file=__file__, **defaults)
  config.update_from_flattened_dict({field: args[name] for name, field in ARGUMENTS.items()})
  if config.data.name == "cifar10":  # colour: a Gaussian decoder of dequantized pixels
    config.model.likelihood = "gaussian_fixed"
  return config


def sweep() -> list[dict]:
  """The standard and the learned prior."""
  return [{"model.prior": prior} for prior in ("standard", "learned")]
