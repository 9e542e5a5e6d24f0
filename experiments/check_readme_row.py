r"""Checks a run against the README's results row: python -m experiments.check_readme_row --workdir=DIR.

DIR: a finished run of configs/default.py (or configs/beta.py with its defaults),
seed 0. Exit 0 when its test -ELBO and NLL(k=5000) are within the tolerance of
the row that processors and rounding leave (vae_jax/analysis/readme_row.py),
exit 1 with one line otherwise.
"""

from experiments import cli  # pylint: disable=g-import-not-at-top,wrong-import-position  # first: signals
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from vae_jax.analysis import readme_row

_WORKDIR = flags.DEFINE_string("workdir", None, "A finished run of configs/default.py.",
                               required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  print(readme_row.check_workdir(_WORKDIR.value))


if __name__ == "__main__":
  cli.run(main, "check_readme_row", workdir_flag="")  # reads only: no log file in DIR
