"""A categorical VAE (Gumbel-softmax / Concrete; Jang et al. 2017) on binarized MNIST.

30 categorical latents of 10 classes (Jang et al.'s 30 x 10), the default
config's MLP (one hidden layer of 500 units each way), Bernoulli pixels, batch
128, Adam 1e-3, 10 epochs. Training decodes relaxed samples at temperature
tau = max(0.5, exp(-3e-4 * step)) (0.5 from step ~2,300 on); the reported test
ELBO and IWAE NLL use discrete z ~ q, so they are valid bounds
(vae_jax/models/gumbel_vae.py). Config argument: the fields below by short name.

  python -m experiments.train --config=configs/gumbel.py --workdir=/tmp/gumbel \\
      --config.data.manual_dir=../shared/data/binarized_mnist
  python -m experiments.train --config=configs/gumbel.py:straight_through=true ...

Its sweep (straight-through off / on), then the table:

  python -m experiments.sweep --config=configs/gumbel.py --workdir=workdirs/gumbel_sweep \\
      --config.data.manual_dir=../shared/data/binarized_mnist
  python -m experiments.tables --workdir=workdirs/gumbel_sweep
"""

import ml_collections

from configs import common
from configs import default

# Short names accepted in the config argument -> the fields they set.
ARGUMENTS = {"num_latents": "model.num_latents", "categories": "model.categories",
             "straight_through": "model.straight_through",
             "min_temperature": "model.min_temperature", "anneal_rate": "model.anneal_rate",
             "seed": "seed"}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = ml_collections.ConfigDict()
  config.model.name = "gumbel_vae"
  config.model.num_latents = 30          # N categorical variables ...
  config.model.categories = 10           # ... of K classes each
  config.model.width = 500               # MLP hidden units, encoder and decoder
  config.model.depth = 1
  config.model.activation = "relu"
  # tau = max(min_temperature, initial_temperature * exp(-anneal_rate * step))
  config.model.initial_temperature = 1.0
  config.model.min_temperature = 0.5
  config.model.anneal_rate = 3e-4
  config.model.straight_through = False  # one-hot forward, relaxed gradient backward
  args = common.parse_arg(arg, file=__file__,
                          **{name: config[field] for name, field in ARGUMENTS.items()})
  config.update_from_flattened_dict({field: args[name] for name, field in ARGUMENTS.items()})
  return config


def sweep() -> list[dict]:
  """The relaxed and the straight-through estimator."""
  return [{"model.straight_through": value} for value in (False, True)]
