"""A convolutional VAE on binarized MNIST: two stride-2 conv stages each way.

Encoder: 4x4 convolutions with 32 and 64 channels (28 -> 14 -> 7), then dense
layers to the 20 latents; decoder: a dense projection to 7x7x64, transposed
convolutions back to 28x28 and a 3x3 output convolution. Otherwise the default
config (Bernoulli decoder, batch 128, Adam 1e-3, 10 epochs).

  python -m experiments.train --config=configs/conv.py --workdir=/tmp/conv \
      --config.data.manual_dir=../shared/data/binarized_mnist
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.encoder = "conv"
  config.model.decoder = "conv"
  config.model.width = 32
  config.model.depth = 2
  return config
