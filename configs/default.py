"""The classic MLP VAE on statically binarized MNIST (Kingma & Welling 2014).

One hidden layer of 500 units, 20 latents, Bernoulli decoder, batch 128, Adam
1e-3: the model of the Flax VAE example, so its published test figure (about
104 nats after 10 epochs) is the reference. Expected: test -ELBO 103.71 (<= 104),
NLL(k=5000) 97.57 (docs/published.md).

  python -m experiments.train --config=configs/default.py --workdir=/tmp/vae \
      --config.data.manual_dir=../shared/data/binarized_mnist
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "binarized_mnist"   # see vae_jax.data.datasets.DATASETS
  config.data.train_split = "train"      # TFDS split strings, e.g. "train+validation"
  # Periodic evaluations, keep_best_checkpoint and early stopping use validation only.
  # "auto": the dataset's own validation split (binarized_mnist's 10,000) unless train_split
  # uses it, else a fixed, seeded hold-out of validation_size training examples; "holdout";
  # "none"; or a TFDS split string. Never the test split (vae_jax/data/splits.py).
  config.data.validation_split = "auto"
  config.data.validation_size = -1       # hold-out size; -1: a tenth of the train split
  config.data.test_split = "test"        # evaluated once, at the end, on the selected checkpoint
  # "auto": binary data as is; Bernoulli on grayscale -> dynamic binarization;
  # Gaussian -> dequantized pixels. Or "binary" / "dynamic" / "dequantize".
  config.data.preprocessing = "auto"
  config.data.data_dir = ml_collections.config_dict.placeholder(str)   # TFDS data_dir
  config.data.manual_dir = ml_collections.config_dict.placeholder(str)  # your own files
  config.data.fallback = "mnist_5k"      # used (loudly) if the dataset can't be had; "" = fail

  config.model = ml_collections.ConfigDict()
  config.model.name = "gaussian_vae"     # the family: a module of vae_jax/models (docs/models.md)
  config.model.encoder = "mlp"           # "mlp" | "conv" | "global" (one q(z) for all x)
  config.model.decoder = "mlp"
  config.model.latent_dim = 20
  config.model.width = 500               # MLP hidden units / channels of the first conv
  config.model.depth = 1                 # MLP hidden layers / stride-2 conv stages
  config.model.activation = "relu"
  config.model.likelihood = "bernoulli"  # "bernoulli" | "gaussian_fixed" | "gaussian_learned"
  config.model.gaussian_scale = 0.1      # fixed sigma, or initial sigma when learned
  # How conv encoders/decoders compute their convolutions: "lax" (nn.Conv, nn.ConvTranspose)
  # | "matmul" (the same layers as matrix products; transposed ones in sub-pixel form) |
  # "auto" ("matmul" on CPU, whose convolution gradients are slow; "lax" elsewhere).
  # Same parameters either way; outputs equal up to float rounding.
  config.model.conv_impl = "auto"
  config.model.init = "lecun_normal"     # dense layers' start: "lecun_normal" | "torch"

  config.objective = ml_collections.ConfigDict()
  # What training maximizes: "elbo" | "k_sample_elbo" (mean of k ELBOs) | "iwae" (Burda et al.'s
  # k-sample bound); num_samples = k; gradient_estimator "reparam" | "dreg" (iwae only).
  config.objective.name = "elbo"
  config.objective.num_samples = 1
  config.objective.gradient_estimator = "reparam"
  config.objective.beta = 1.0
  config.objective.warmup_steps = 0      # KL warm-up: beta ramps from 0 over these steps
  config.objective.free_bits = 0.0       # per-dimension KL floor lambda, in nats
  config.objective.kl_estimator = "analytic"  # "analytic" | "mc"
  # A disentanglement model's regularizer in place of beta * KL (objectives/regularizers.py;
  # docs/disentanglement.md): "beta_vae" (today's), "annealed_vae", "beta_tc_vae",
  # "factor_vae", "dip_vae_i", "dip_vae_ii"; each reads its own fields below.
  config.objective.regularizer = "beta_vae"
  config.objective.gamma = 1000.0              # annealed_vae, factor_vae
  config.objective.c_max = 25.0                # annealed_vae: the capacity C reached, nats
  config.objective.iteration_threshold = 100_000  # annealed_vae: steps until C = c_max
  config.objective.lambda_od = 10.0            # dip_vae_*: off-diagonal weight
  config.objective.lambda_d_factor = 10.0      # dip_vae_*: diagonal weight / lambda_od

  config.optim = ml_collections.ConfigDict()
  config.optim.optimizer = "adam"        # "adam" | "adamw" | "sgd" | "adam_iwae" (the IWAE code's)
  config.optim.learning_rate = 1e-3
  # "constant" | "cosine" | "step" (x decay_factor at each of decay_epochs) | "exponential"
  # (x decay_rate per epoch) | "iwae_3i" (the IWAE paper's: lr x 10^(-i/7) for 3^i epochs)
  # | "iwae_3i_stretched" (its 8 passes laid over the run in proportion 3^i: budget protocols)
  config.optim.schedule = "constant"
  config.optim.decay_epochs = ()         # "step": the epochs at which the rate is multiplied
  config.optim.decay_factor = 0.1        # "step": the factor at each of them
  config.optim.decay_rate = 1.0          # "exponential": the factor per epoch
  config.optim.adam_eps = 1e-8           # adam/adamw epsilon (Burda et al.: 1e-4)
  config.optim.warmup_steps = 0          # linear learning-rate warm-up
  config.optim.grad_clip_norm = 0.0      # 0 = no clipping
  config.optim.weight_decay = 0.0        # adamw only
  config.optim.on_nonfinite = "stop"     # NaN/Inf loss or grad norm: "stop" (error) | "skip"
  config.optim.max_consecutive_nonfinite = 10  # "skip": stop after this many in a row

  config.batch_size = 128                # global: per-device batch x device count
  config.num_epochs = 10
  config.num_train_steps = -1            # > 0 overrides num_epochs
  config.steps_per_dispatch = 200        # steps fused into one lax.scan per device call
  config.log_every = 200
  config.eval_every = 1000               # validation ELBO every N steps (and at the end)
  config.checkpoint_every = 1000
  config.keep_checkpoints = 3            # the latest N ...
  config.keep_best_checkpoint = False    # ... plus the best on validation: tested at the end

  config.selection = ml_collections.ConfigDict()
  config.selection.metric = "neg_elbo"   # on validation: "neg_elbo" | "nll" (k of training evals)
  config.selection.patience = 0          # early stopping: evaluations without improvement; 0 = off

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 1000          # global
  config.eval.seed = 0                   # fixed: the same test binarization and noise always
  config.eval.num_importance_samples = 5000  # IWAE NLL at the end (Burda et al.'s k)
  config.eval.extra_num_importance_samples = ()  # more k for the final test NLL, e.g. (5000,)
  config.eval.num_importance_samples_during_training = 50  # at every eval_every; 0 = none
  config.eval.iwae_chunk_size = 10       # samples per chunk: memory ~ batch x chunk (10 x 1000
                                         # logit rows stay near the CPU's cache: fastest here)
  config.eval.collapse_rate_floor = 0.1  # nats; a lower test rate raises the collapse alarm

  config.images = ml_collections.ConfigDict()
  config.images.num_reconstructions = 32
  config.images.num_samples = 64

  config.debug = ml_collections.ConfigDict()
  config.debug.nan_at_step = -1          # fault injection: update N's loss becomes NaN
  return config
