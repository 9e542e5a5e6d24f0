r"""Burda, Grosse & Salakhutdinov (2015), "Importance Weighted Autoencoders", Table 1.

One cell of the table per config argument; the sweep (``sweep()``) is the whole
table: k in {1, 5, 50} x {VAE, IWAE} x {1, 2 stochastic layers}, each cell with the
seeds SEEDS (``seed`` overrides; the paper table shows their mean ± std).

  layers=1   784-200-200-50 (gaussian_vae: 2 tanh layers of 200, 50 latents)
  layers=2   784-200-200-100-100-100-50 (two_layer_vae)
  objective  vae (k_sample_elbo: the mean of k ELBOs) | iwae (the k-sample bound)
  k          samples per example in training (1, 5, 50)
  estimator  reparam | dreg (IWAE's encoder gradient, Tucker et al. 2018; not in the paper)
  protocol   full: the paper's 3^i epochs at 0.001 * 10^(-i/7), i = 0..7 (3,280 epochs)
             budget: the same schedule (optim.schedule="iwae_3i") cut after BUDGET_EPOCHS
             epochs: the paper's runs stopped early, not a compressed copy of them
  epochs     0: the protocol's (3,280 or BUDGET_EPOCHS); N > 0: cut the paper's schedule
             after N epochs (num_epochs = N)
  test_images  -1: the protocol's (full: all 10,000; budget: the first BUDGET_TEST_IMAGES,
             data.test_split="test[:N]", the same images for every cell); 0: all; N > 0: N
  data       static: the official binarized MNIST (50,000 train, 10,000 test; here offline)
             dynamic: grayscale MNIST's 60,000 training images, binarized afresh each
             epoch (the paper's Table 1; needs TFDS `mnist` or its IDX files in manual_dir)

Batch 20, the Adam of the paper's code (optim.optimizer="adam_iwae": beta1 0.99, second
moments from 1, eps 1e-4, gradients of the batch's sum; with optax's Adam the two-layer VAE
at k = 50 collapsed to 4 units and never used z2, with this one it kept 78+1: docs/objectives.md),
test NLL with k = 5,000 (both protocols, as the paper), active units by Cov_x(E_q[u]) > 1e-2
(evaluation.diagnostics), one stochastic layer at a time, z2's at one draw of z1 as the
paper's code counts them (model.z2_mean_draws). Dense layers start LeCun-normal, not as the
paper's code starts them (Glorot uniform, model.init="glorot_uniform"): the one 7-epoch run
with the paper's Adam that reached 118.00 nats started LeCun-normal (docs/objectives.md says
what was compared with yburda/iwae, and what was measured).
No protocol uses optim.schedule="iwae_3i_stretched" any more (runs recorded with it keep it).

  # the whole table, budget protocol, three seeds a cell, on this machine (docs/objectives.md):
  python -m experiments.sweep --config=configs/iwae.py --workdir=workdirs/iwae_table_3seeds \
      --config.data.manual_dir=../shared/data/binarized_mnist
  python -m experiments.tables --workdir=workdirs/iwae_table_3seeds
  # the paper's protocol (GPU/TPU):
  python -m experiments.sweep --config=configs/iwae.py:protocol=full \
      --workdir=workdirs/iwae_table_full --config.data.manual_dir=../shared/data/binarized_mnist
"""

import ml_collections

from configs import common
from configs import default

FULL_EPOCHS = 3280          # sum of 3^i, i = 0..7
# Sized for the whole table (12 cells x 3 seeds, k = 5,000 test NLL) in about 3 h of a
# shared 2-core CPU: the arithmetic is in docs/objectives.md ("Sizing the budget").
BUDGET_EPOCHS = 7
# k = 5,000 on all 10,000 test images would take the 36 runs about 3.8 h here by itself;
# the budget scores the first BUDGET_TEST_IMAGES (the same for every cell) instead.
BUDGET_TEST_IMAGES = 2000
NLL_SAMPLES = 5000          # the test NLL's k, the paper's, in both protocols
SEEDS = (0, 1, 2)
KS = (1, 5, 50)
OBJECTIVES = {"vae": "k_sample_elbo", "iwae": "iwae"}
LAYERS = {1: {"model.name": "gaussian_vae", "model.latent_dim": 50},
          2: {"model.name": "two_layer_vae", "model.latent_dim": 100}}

# Burda et al. (2015), Table 1 (MNIST, dynamic binarization): test NLL (nats) and active
# units, by (layers, objective, k). Source: arXiv:1509.00519, Table 1. The NLLs agree with the
# paper's column quoted by the nbip/IWAE reproduction; the unit counts are from memory of the
# paper and unconfirmed (docs/objectives.md says which is least certain).
PAPER = {
    (1, "vae", 1): (86.76, "19"), (1, "vae", 5): (86.47, "20"), (1, "vae", 50): (86.35, "20"),
    (1, "iwae", 1): (86.76, "19"), (1, "iwae", 5): (85.54, "22"), (1, "iwae", 50): (84.78, "25"),
    (2, "vae", 1): (85.33, "16+5"), (2, "vae", 5): (85.01, "17+5"),
    (2, "vae", 50): (84.78, "17+5"), (2, "iwae", 1): (85.33, "16+5"),
    (2, "iwae", 5): (83.89, "21+5"), (2, "iwae", 50): (82.90, "28+4"),
}

# The paper's appendix D (MNIST with Larochelle's fixed binarization, the data of
# data=static): test NLL of the one-layer IWAE, by k, as quoted by the nbip/IWAE README; the
# appendix's VAE and two-layer figures were not found (docs/objectives.md).
PAPER_STATIC = {(1, "iwae", 1): 88.71, (1, "iwae", 5): 87.63, (1, "iwae", 50): 87.10}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  args = common.parse_arg(
      arg, file=__file__, layers=common.OneOf("1", ("1", "2")),
      objective=common.OneOf("iwae", tuple(OBJECTIVES)), k=1,
      estimator=common.OneOf("reparam", ("reparam", "dreg")),
      protocol=common.OneOf("budget", ("budget", "full")), epochs=0, test_images=-1,
      data=common.OneOf("static", ("static", "dynamic")))
  for name, low, meaning in (("epochs", 0, "> 0 (0: the protocol's)"),
                             ("test_images", -1, ">= 0 (0: all; -1: the protocol's)")):
    if args[name] < low:
      raise common.ConfigArgumentError(
          f"Bad config argument '{name}={args[name]}' in '{common.display_path(__file__)}': "
          f"must be {meaning}.")
  config = default.get_config()
  if args.data == "dynamic":
    config.data.name, config.data.preprocessing = "mnist", "dynamic"
    config.data.fallback = ""
  config.model.encoder = config.model.decoder = "mlp"
  config.model.width, config.model.depth, config.model.activation = 200, 2, "tanh"
  config.model.top_latent_dim, config.model.top_width = 50, 100   # the second layer's
  # Not yburda/iwae's "glorot_uniform" (nnet.py Linear.random): alone, without its Adam, it
  # collapsed more units (docs/objectives.md).
  config.model.init = "lecun_normal"
  config.model.z2_mean_draws = 1                # z2's units as yburda/iwae counts them
  config.update_from_flattened_dict(LAYERS[int(args.layers)])
  config.objective.name = OBJECTIVES[args.objective]
  config.objective.num_samples = args.k
  config.objective.gradient_estimator = args.estimator
  config.objective.kl_estimator = "mc"
  config.optim.learning_rate, config.optim.adam_eps = 1e-3, 1e-4
  config.optim.optimizer = "adam_iwae"  # yburda/iwae optimizers.py (training/state.iwae_adam)
  # The paper's schedule in both protocols; a budget only stops it early (the rate stays at
  # each pass's value, so the first epoch is at 1e-3 whatever the length).
  config.optim.schedule = "iwae_3i"
  config.batch_size = 20
  config.num_epochs = args.epochs or (FULL_EPOCHS if args.protocol == "full" else BUDGET_EPOCHS)
  config.steps_per_dispatch = 500
  config.log_every = 2500
  config.eval_every = config.checkpoint_every = 25000
  config.eval.num_importance_samples = NLL_SAMPLES
  test_images = args.test_images if args.test_images >= 0 else (
      0 if args.protocol == "full" else BUDGET_TEST_IMAGES)
  if test_images:
    config.data.test_split = f"test[:{test_images}]"
  config.eval.num_importance_samples_during_training = 0
  config.eval.batch_size = 500
  config.images.num_reconstructions = config.images.num_samples = 0
  return config


def sweep() -> list[dict]:
  """The table's 12 cells (k x {VAE, IWAE} x {1, 2 layers}) x SEEDS, as overrides of
  get_config(): a cell's seeds differ only in a value, so they train as one population."""
  return [{**LAYERS[layers], "objective.name": OBJECTIVES[objective],
           "objective.num_samples": k, "seed": seed}
          for layers in LAYERS for objective in OBJECTIVES for k in KS for seed in SEEDS]


def table_layout() -> dict:
  """The paper's layout for experiments.tables (vae_jax/analysis/paper_table.py)."""
  names = {layers: LAYERS[layers]["model.name"] for layers in LAYERS}
  return {
      "rows": "objective.num_samples", "columns": "objective.name", "blocks": "model.name",
      "labels": {"objective.num_samples": {"__name__": "k"},
                 "objective.name": {OBJECTIVES["vae"]: "VAE", OBJECTIVES["iwae"]: "IWAE"},
                 "model.name": {names[1]: "1 stochastic layer", names[2]: "2 stochastic layers"}},
      "metrics": [(("nll",), "NLL", ".2f"),
                  # one layer: mean ± std of the seeds' counts; two: each seed's "z1+z2"
                  (("active_units_by_layer", "active_units"), "active units", ".1f")],
      "reference": {(names[layers], OBJECTIVES[objective], k): [f"{nll:.2f}", units]
                    for (layers, objective, k), (nll, units) in PAPER.items()},
      "reference_name": "Burda et al. 2015, Table 1: dynamically binarized MNIST",
  }
