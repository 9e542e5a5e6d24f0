"""The beta-VAE (Higgins et al. 2017) on binarized MNIST: loss = distortion + beta * rate.

The default MLP VAE with beta exposed; the beta and latent-dimension sweeps
start from this file. Select a variant with a config argument:

  python -m experiments.train --config=configs/beta.py:beta=4 --workdir=/tmp/beta4
  python -m experiments.train --config=configs/beta.py:beta=0.5,latent_dim=10 ...

The beta sweep (7 betas x 3 seeds, 10 epochs, NLL with k = 1000; about 36
minutes on a 2-core CPU), then its tables and plots:

  python -m experiments.sweep --config=configs/beta.py --workdir=workdirs/beta_sweep --parallel=2 \\
      --config.data.manual_dir=../shared/data/binarized_mnist \\
      --config.eval.num_importance_samples=1000
  python -m experiments.tables --workdir=workdirs/beta_sweep
"""

import ml_collections

from configs import default

BETAS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SEEDS = (0, 1, 2)

# Short names accepted in the config argument, and the fields they set.
ARGUMENTS = {"beta": ("objective", "beta", float),
             "latent_dim": ("model", "latent_dim", int),
             "seed": (None, "seed", int)}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = default.get_config()
  config.objective.beta = 1.0
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or key not in ARGUMENTS:
      raise ValueError(f"Bad config argument {item!r} in 'configs/beta.py:{arg}'; expected "
                       f"comma-separated NAME=VALUE with NAME in {sorted(ARGUMENTS)}.")
    section, field, cast = ARGUMENTS[key]
    target = config[section] if section else config
    try:
      target[field] = cast(value)
    except ValueError:
      raise ValueError(f"Config argument {key}={value!r} is not a valid "
                       f"{cast.__name__}.") from None
  return config


def sweep() -> list[dict]:
  """Every beta with every seed, as overrides of get_config()."""
  return [{"objective.beta": beta, "seed": seed} for beta in BETAS for seed in SEEDS]
