"""Locatello et al. (2019)'s six models on dSprites: disentanglement_lib's unsupervised study.

Every member is ``configs/dsprites.py``'s model, data and optimizer (its conv
encoder/decoder, batch 64, Adam) with one of the six regularizers of
``vae_jax/objectives/regularizers.py`` at one of its six values
(``config/unsupervised_study_v1/sweep.py``):

  beta_vae      objective.beta       1, 2, 4, 6, 8, 16
  annealed_vae  objective.c_max      5, 10, 25, 50, 75, 100   (gamma 1,000)
  factor_vae    objective.gamma      10, 20, 30, 40, 50, 100  (its discriminator: auxiliary.py)
  dip_vae_i     objective.lambda_od  1, 2, 5, 10, 20, 50      (lambda_d = 10 lambda_od)
  dip_vae_ii    objective.lambda_od  1, 2, 5, 10, 20, 50      (lambda_d = lambda_od)
  beta_tc_vae   objective.beta       1, 2, 4, 6, 8, 10

times SEEDS (the study: 50). The protocols are dsprites.py's: ``paper`` (300,000 steps at
1e-4, the capacity of AnnealedVAE reaching c_max at step 100,000) for an accelerator, and
``budget`` (BUDGET_STEPS at 1e-3, the capacity's threshold at the same third of the run).
Members of one model differ only in traced values and train as populations; the six
models are six programs.

  python -m experiments.sweep --config=configs/dsprites_study.py --workdir=workdirs/study
  python -m experiments.disentanglement --workdir=workdirs/study
  python -m experiments.tables --workdir=workdirs/study
"""

import ml_collections

from configs import common
from configs import dsprites

# model -> (the field its sweep varies, the values; fixed fields).
GRID = {
    "beta_vae": ("objective.beta", (1.0, 2.0, 4.0, 6.0, 8.0, 16.0), {}),
    "annealed_vae": ("objective.c_max", (5.0, 10.0, 25.0, 50.0, 75.0, 100.0),
                     {"objective.gamma": 1000.0}),
    "factor_vae": ("objective.gamma", (10.0, 20.0, 30.0, 40.0, 50.0, 100.0), {}),
    "dip_vae_i": ("objective.lambda_od", (1.0, 2.0, 5.0, 10.0, 20.0, 50.0),
                  {"objective.lambda_d_factor": 10.0}),
    "dip_vae_ii": ("objective.lambda_od", (1.0, 2.0, 5.0, 10.0, 20.0, 50.0),
                   {"objective.lambda_d_factor": 1.0}),
    "beta_tc_vae": ("objective.beta", (1.0, 2.0, 4.0, 6.0, 8.0, 10.0), {}),
}
SEEDS = dsprites.SEEDS
PAPER_THRESHOLD = 100_000   # annealed_vae.iteration_threshold of the study


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, file=__file__, model=common.OneOf("beta_vae", tuple(GRID)),
                          seed=0, protocol=common.OneOf("budget", ("budget", "paper")))
  config = dsprites.get_config(f"seed={args.seed},protocol={args.protocol}")
  field, values, fixed = GRID[args.model]
  config.objective.regularizer = args.model
  config.update_from_flattened_dict({field: values[0], **fixed})
  config.objective.iteration_threshold = (
      PAPER_THRESHOLD if args.protocol == "paper"
      else round(dsprites.BUDGET_STEPS * PAPER_THRESHOLD / dsprites.PAPER_STEPS))
  return config


def sweep() -> list[dict]:
  """Every model at each of its values, each with every seed (the study's order)."""
  return [{"objective.regularizer": model, field: value, **fixed, "seed": seed}
          for model, (field, values, fixed) in GRID.items()
          for value in values for seed in SEEDS]
