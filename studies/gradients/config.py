r"""Why the reparameterization trick: pathwise vs score-function encoder gradients.

For the encoder of a trained run (``run``: the 10-epoch MLP VAE on binarized
MNIST by default) and its first ``num_images`` test images, as the model saw
them, estimates grad_enc mean_b E_q(z|x_b)[log p(x_b|z)] with the pathwise
(reparameterized) estimator, the score-function (REINFORCE) estimator and
REINFORCE with a leave-one-out baseline, with S = ``sample_counts`` samples per
image, R = ``repetitions`` times each (one R for all S, or one per S); checks
that their means agree (per-coordinate z, and against a pathwise reference of
``reference_repetitions`` x max(S) samples per image), reports their
variances, and tests that z = mu + sigma * eps is N(mu, sigma^2) (and that the
test rejects a 5% wrong scale and a 0.05-sigma shifted mean). See
studies/gradients/estimators.py and studies/gradients/study.py.

  .venv/bin/python -m studies.gradients --config=studies/gradients/config.py \
      --workdir=workdirs/studies/gradients

Outputs (refused if DIR already holds them): DIR/gradients.json (every figure,
the run, step, dataset and this config), DIR/gradients.md (the tables) and
DIR/gradient_variance.png (variance and error of the mean against S, log-log).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.run = "workdirs/default"        # a trained run's workdir (read-only)
  config.step = -1                       # its checkpoint step; -1 = the latest
  config.num_images = 16                 # the first test images: one batch, one gradient
  config.sample_counts = (1, 10, 100, 1000)  # S: z samples per image in one estimate
  # R: independent estimates per S (cheap small S get more); an int applies to all.
  config.repetitions = (2000, 1000, 400, 200)
  config.reference_repetitions = 500     # x max(S): the pathwise reference's samples per image
  config.estimators = ("pathwise", "score", "score_loo")
  # z tests of the means along the gradient's direction and these many random ones.
  config.num_random_directions = 8
  config.seed = 0

  config.distribution_test = ml_collections.ConfigDict()
  config.distribution_test.image_index = 0     # whose q(z|x) is sampled
  config.distribution_test.num_samples = 100_000  # z draws per latent dimension
  config.distribution_test.scale_factor = 1.05    # the wrong q the test must reject ...
  config.distribution_test.mean_shift = 0.05      # ... and another, in sigmas
  config.distribution_test.alpha = 0.05
  return config
