r"""The second stage of a discrete-code model (e.g. configs/vqvae.py): an autoregressive prior.

Loads a trained run whose codes are integer grids (a model with ``num_codes``
and ``grid_shape``, like ``vqvae``), encodes its training split to codes, fits
a MADE prior over the grid (studies/code_prior/prior.py) for a fixed number of
steps (no model selection, so the test split is only read at the end), and
reports on the test split the bound with the uniform prior the model was
trained with vs the learned prior (nats and bits per dim), codebook usage, and
prior samples.

  python -m studies.code_prior --config=studies/code_prior/config.py \
      --config.run=workdirs/vq --workdir=workdirs/vq_prior

Outputs (refused if DIR already holds them): DIR/code_prior.{json,md},
DIR/prior_samples.png (codes from the learned prior, decoded),
DIR/uniform_samples.png (codes from the uniform prior), DIR/prior_params.msgpack.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.run = "workdirs/vq"     # a trained run's workdir (read-only)
  config.step = -1               # its checkpoint; -1 = the latest
  config.width = 512             # MADE hidden units
  config.steps = 2000            # a multiple of 100
  config.batch_size = 128
  config.learning_rate = 1e-3
  config.num_samples = 64
  config.encode_batch = 1000     # images encoded at once
  config.seed = 0
  return config
