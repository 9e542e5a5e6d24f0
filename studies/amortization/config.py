r"""Why q must depend on x: a global q(z), the amortized q(z|x), and per-point SVI.

Two runs of the same MLP VAE (configs/default.py: 500 hidden units, 64 on
squares, 20 latents, Bernoulli decoder, Adam 1e-3), one with the usual encoder
(model.encoder=mlp), one with a single q(z) for the whole dataset
(model.encoder=global); then, on test data, the amortized encoder's q is
refined per data point by SVI with the decoder fixed (studies/amortization/svi.py), and the
amortization and approximation gaps of Cremer et al. 2018 are measured
(studies/amortization/study.py). The config argument picks the data:

  studies/amortization/config.py:data=squares          all-black / all-white 28x28 images
                                                        (embedded; data mean = grey 0.5)
  studies/amortization/config.py:data=binarized_mnist  needs --config.data.manual_dir=DIR
                                                        with the three official .amat files

  python -m studies.amortization --config=studies/amortization/config.py:data=squares \
      --workdir=workdirs/studies/amortization_squares
  python -m studies.amortization --config=studies/amortization/config.py:data=binarized_mnist \
      --workdir=workdirs/studies/amortization_mnist \
      --config.data.manual_dir=../shared/data/binarized_mnist

Outputs: DIR/amortized/ and DIR/global/ (normal run directories; reused when
finished), DIR/amortization.{json,md}, DIR/amortization_pictures.png (inputs,
the global q's output, amortized and refined reconstructions, the data mean),
DIR/amortization_grid.png (the same pixels, unlabelled) and
DIR/amortization_svi_trace.png. data.fallback is '': a study must not quietly
train on other data. The runs' own final evaluation skips the IWAE NLL
(eval.num_importance_samples=0): the study estimates log p(x) itself, on its
study.num_test examples.
"""

import ml_collections

from configs import common
from configs import default

# data -> (training fields, study fields). MNIST: the default run (10 epochs), its
# first 1,000 test images. squares: a narrow MLP (64 units), 500 epochs; with 500
# units the global q's KL creeps down far more slowly (0.26 nats after 10,000 Adam
# steps at 1e-3: the wide decoder's gradient noise through z keeps q jittering).
DATA = {
    "squares": ({"batch_size": 100, "num_train_steps": 5000, "model.width": 64,
                 "eval.batch_size": 200, "eval_every": 1000, "checkpoint_every": 1000,
                 "log_every": 500},
                {"num_test": 200, "batch_size": 200}),
    "binarized_mnist": ({}, {}),
}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = default.get_config()
  data = common.parse_arg(arg, file=__file__,
                          data=common.OneOf("binarized_mnist", tuple(DATA))).data
  train_fields, study_fields = DATA[data]
  config.data.name = data
  config.data.fallback = ""
  config.eval.num_importance_samples = 0        # the study computes log p(x) itself
  config.update_from_flattened_dict(train_fields)

  config.study = study = ml_collections.ConfigDict()
  study.num_test = 1000          # the first N test images (as the model sees them)
  study.batch_size = 500         # test images per SVI problem batch (memory, not results)
  study.svi_steps = 1000         # Adam steps of per-point SVI (from the encoder, from the prior)
  study.svi_learning_rate = 0.02  # cosine-decayed to a tenth over the steps
  study.svi_samples = 4          # reparameterized samples per example per SVI step
  study.elbo_samples = 100       # samples of each reported ELBO (common to every q)
  study.iwae_samples = 5000      # k of the IWAE estimate of log p(x)
  study.iwae_chunk_size = 10
  study.seed = 0
  study.num_pictures = 8
  study.update(study_fields)
  return config
