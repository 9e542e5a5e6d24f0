"""The beta-VAE (Higgins et al. 2017) on binarized MNIST: loss = distortion + beta * rate.

The default MLP VAE with beta exposed; the beta and latent-dimension sweeps
start from this file. Select a variant with a config argument:

  python -m experiments.train --config=configs/beta.py:beta=4 --workdir=/tmp/beta4
  python -m experiments.train --config=configs/beta.py:beta=0.5,latent_dim=10 ...
"""

import ml_collections

from configs import default

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
