r"""Tables and plots of a finished sweep: python -m experiments.tables --workdir=DIR.

One row per setting (the member's overrides without the seed), mean ± std over
the seeds that finished, as DIR/tables/ablation.{md,csv,tex}, and the plots the
swept fields call for in DIR/plots/. Prints the table and the members that
failed or are missing. Refuses (exit status 1) a sweep whose runs were trained
or scored differently, and one with no finished member. A sweep config with
``table_layout()`` also gets DIR/tables/paper_table.md: its cells laid out as a
paper's table, the paper's figures beside ours (vae_jax/analysis/paper_table.py). Members
that logged their training loss get DIR/tables/learning_curves.md: each setting's loss over
training (vae_jax/analysis/learning_curves.py). A sweep
over disentanglement models (objective.regularizer) also gets DIR/tables/models.md, one
table per model, and DIR/plots/metrics_by_model.png (vae_jax/analysis/model_study.py).
"""

from experiments import cli  # pylint: disable=g-bad-import-order  # first: signals
from absl import app
from absl import flags

from vae_jax.analysis import learning_curves
from vae_jax.analysis import model_study
from vae_jax.analysis import paper_table
from vae_jax.analysis import plots
from vae_jax.analysis import table_formats
from vae_jax.analysis import tables

_WORKDIR = flags.DEFINE_string("workdir", None, "A sweep directory (with sweep.json).",
                               required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  ablation = tables.summarize(_WORKDIR.value)
  paths = (table_formats.write_tables(ablation) + learning_curves.write(ablation)
           + plots.write_plots(ablation))
  print(table_formats.to_markdown(ablation))
  if model_study.applies(ablation):  # several disentanglement models: one table each
    paths += model_study.write(ablation)
    print("\n" + model_study.to_markdown(ablation))
  layout = paper_table.layout_of(ablation.config, _WORKDIR.value)
  if layout is not None:  # the sweep config lays its members out as a paper's table
    path, text = paper_table.write(_WORKDIR.value, layout)
    print("\n" + text)
    paths.append(path)
  counts = {s: len(ablation.with_status(s)) for s in ("done", "failed", "missing")}
  print(f"{len(ablation.members)} members: {counts['done']} done, {counts['failed']} failed, "
        f"{counts['missing']} missing.")
  print("Wrote " + ", ".join(paths))


if __name__ == "__main__":
  cli.run(main, "tables")
