"""The beta-VAE (Higgins et al. 2017) on binarized MNIST: loss = distortion + beta * rate.

The default MLP VAE with beta exposed; the beta and latent-dimension sweeps
start from this file. Select a variant with a config argument:

  python -m experiments.train --config=configs/beta.py:beta=4 --workdir=/tmp/beta4
  python -m experiments.train --config=configs/beta.py:beta=0.5,latent_dim=10 ...

The beta sweep (7 betas x 3 seeds, 10 epochs, NLL with k = 1000; its members train as
populations, two processes at a time on a 2-core CPU: docs/sweeps.md), then its tables
and plots:

  python -m experiments.sweep --config=configs/beta.py --workdir=workdirs/beta_sweep --parallel=2 \\
      --config.data.manual_dir=../shared/data/binarized_mnist \\
      --config.eval.num_importance_samples=1000
  python -m experiments.tables --workdir=workdirs/beta_sweep
"""

import ml_collections

from configs import common
from configs import default

BETAS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SEEDS = (0, 1, 2)

# Short names accepted in the config argument -> the fields they set. Defaults: the
# fields' values below (beta = 1, and default.get_config()'s latent_dim = 20, seed = 0).
ARGUMENTS = {"beta": "objective.beta", "latent_dim": "model.latent_dim", "seed": "seed"}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  return config_from(arg, file=__file__)


def config_from(arg: str, *, file: str) -> ml_collections.ConfigDict:
  """The default config with the ARGUMENTS fields set from ``arg``.

  ``file`` is the config file the user named (this one, or configs/latent_dim.py,
  which shares these arguments), so a bad argument is reported against it.
  """
  config = default.get_config()
  config.objective.beta = 1.0
  args = common.parse_arg(arg, file=file,
                          **{name: config[field] for name, field in ARGUMENTS.items()})
  config.update_from_flattened_dict({field: args[name] for name, field in ARGUMENTS.items()})
  return config


def sweep() -> list[dict]:
  """Every beta with every seed, as overrides of get_config()."""
  return [{"objective.beta": beta, "seed": seed} for beta in BETAS for seed in SEEDS]
