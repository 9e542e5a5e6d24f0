r"""Pictures of a trained model: python -m experiments.pictures --workdir=DIR.

Reconstructions, prior samples (E[x|z] and x ~ p(x|z)), linear and spherical
interpolations, latent traversals sorted by KL, and for 2-D latents the
manifold grid and the scatter of test codes; latent arithmetic on labelled data
(--labelled_data=mnist_5k lends labels to a model of unlabelled binarized MNIST).
Written as PNGs and TensorBoard images to DIR/pictures/step_STEP/ from the
latest checkpoint (or --step). On a sweep directory: every finished member,
plus DIR/pictures/comparison.png with the members side by side.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only reads data here.

from experiments import cli  # pylint: disable=g-import-not-at-top,wrong-import-position  # first: signals
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from vae_jax.evaluation import saved_run as checkpoint_eval
from vae_jax.analysis import gallery as pictures
from vae_jax.training import preemption

_WORKDIR = flags.DEFINE_string("workdir", None, "A run or sweep directory.", required=True)
_STEP = flags.DEFINE_string("step", None, "Checkpoint step, or 'best' (default: the latest).")
_LABELLED = flags.DEFINE_string(
    "labelled_data", None, "An embedded labelled dataset of the same image shape (mnist_5k) "
    "for the scatter and latent arithmetic of models trained on unlabelled data.")
_OUTPUT = flags.DEFINE_string("output_dir", None,
                              "Where to write (default: DIR/pictures/step_STEP); must not exist.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    step = checkpoint_eval.parse_step(_STEP.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  with preemption.read_only_command("the pictures"):
    if pictures.is_sweep(_WORKDIR.value):
      if step is not None or _OUTPUT.value:
        raise app.UsageError("--step and --output_dir apply to one run, not to a sweep.")
      pictures.pictures_of_sweep(_WORKDIR.value, borrow_labels=_LABELLED.value)
    else:
      run = checkpoint_eval.load_run(_WORKDIR.value, step)
      pictures.pictures_of_run(run, borrow_labels=_LABELLED.value, directory=_OUTPUT.value)


if __name__ == "__main__":
  cli.run(main, "pictures")
