r"""Blur in numbers of a run or a sweep: python -m studies.likelihood --workdir=DIR.

For each finished run (of a sweep: pooled by setting, mean ± std over seeds):
the reconstruction RMSE against the grayscale test images, the edge energy of
reconstructions, of decoded prior samples E[x|z] and of draws x ~ p(x|z)
relative to the test images', and the Gaussian scale of p(x|z) (see
studies/likelihood/blur.py). Writes DIR/blur/blur.{json,md}, read-only for the runs;
refuses an existing DIR/blur.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only reads data here.

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from studies.likelihood import blur
from vae_jax.analysis import tables
from vae_jax.training import loop as train

_WORKDIR = flags.DEFINE_string("workdir", None, "A run or a sweep directory.", required=True)
_NUM_IMAGES = flags.DEFINE_integer("num_images", 1000, "Test images (the first N).",
                                   lower_bound=1)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1000, "Prior draws z ~ N(0, I).",
                                    lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the prior draws and of x ~ p(x|z).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  spec = blur.BlurSpec(_NUM_IMAGES.value, _NUM_SAMPLES.value, _SEED.value)
  try:
    paths = blur.write_blur(_WORKDIR.value, spec)
  except (tables.TableError, *train.USER_ERRORS) as e:
    sys.exit(f"FATAL {type(e).__name__}: {e}")
  with open(paths[1], encoding="utf-8") as f:
    print(f.read())
  print("Wrote " + ", ".join(paths))


if __name__ == "__main__":
  app.run(main)
