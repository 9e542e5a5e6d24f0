"""The latent-dimension sweep of the MLP VAE on binarized MNIST (beta = 1).

Six latent sizes x 2 seeds, 10 epochs, NLL with k = 1000 (populations whose members are
padded to their largest latent size, each with its own mask: docs/sweeps.md), then its
tables and plots:

  python -m experiments.sweep --config=configs/latent_dim.py \\
      --workdir=workdirs/latent_dim_sweep --parallel=2 \\
      --config.data.manual_dir=../shared/data/binarized_mnist \\
      --config.eval.num_importance_samples=1000
  python -m experiments.tables --workdir=workdirs/latent_dim_sweep

One member alone: python -m experiments.train --config=configs/latent_dim.py:latent_dim=50 ...
"""

import ml_collections

from configs import beta

LATENT_DIMS = (2, 5, 10, 20, 50, 100)
SEEDS = (0, 1)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """configs/beta.py's config and arguments (beta = 1 unless the argument says otherwise)."""
  return beta.config_from(arg, file=__file__)


def sweep() -> list[dict]:
  """Every latent dimension with every seed, as overrides of get_config()."""
  return [{"model.latent_dim": dim, "seed": seed} for dim in LATENT_DIMS for seed in SEEDS]
