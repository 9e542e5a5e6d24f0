"""The README's results row against a run: rounding and processors pass, a change of meaning fails."""

import json

import pytest

from vae_jax.analysis import readme_row


def _results(neg_elbo, nll, **protocol):
  fields = dict(readme_row.PROTOCOL, **protocol)
  return {"test": {"neg_elbo": neg_elbo, "nll": nll,
                   "num_importance_samples": fields["num_importance_samples"]},
          "dataset": {"used": fields["dataset"]}, "seed": fields["seed"],
          "epochs": fields["epochs"]}


def test_the_readme_has_the_row_the_check_reads():
  assert readme_row.readme_row() == {"neg_elbo": 103.712, "nll": 97.565}


@pytest.mark.parametrize("neg_elbo, nll", [
    (103.712, 97.565),             # the row's machine
    (103.71249, 97.56549),         # rounding
    (103.778, 97.579),             # a 2-core AMD EPYC without AVX-512 (README)
    (103.751, 97.565),             # XLA's SSE4.2 vector path (README)
])
def test_rounding_and_processors_pass(neg_elbo, nll):
  line = readme_row.compare(_results(neg_elbo, nll), readme_row.readme_row())
  assert "within 0.2 nats of the README's row" in line
  assert f"test -ELBO {neg_elbo:.3f} (README 103.712" in line


@pytest.mark.parametrize("results, message", [
    (_results(104.24, 97.565), r"test -ELBO differ.* more than 0.2 nats"),  # one epoch fewer
    (_results(103.712, 100.08), r"NLL\(k=5000\) differ"),                   # k = 50's NLL
    (_results(103.5, 97.3), r"test -ELBO, NLL\(k=5000\) differ"),
    (_results(103.712, 97.565, num_importance_samples=50),
     r"protocol .*num_importance_samples=50 \(the row's: 5000\)"),
    (_results(103.712, 97.565, dataset="mnist_5k"), r"dataset='mnist_5k'"),
    (_results(103.712, 97.565, seed=1), r"seed=1"),
    (_results(103.712, 97.565, epochs=9.0), r"epochs=9.0"),
])
def test_a_change_of_meaning_fails(results, message):
  with pytest.raises(readme_row.RowError, match=message):
    readme_row.compare(results, readme_row.readme_row())


def test_a_workdir_is_read_and_a_missing_run_is_one_line(tmp_path):
  (tmp_path / "results.json").write_text(json.dumps(_results(103.778, 97.579)))
  assert "within 0.2 nats" in readme_row.check_workdir(str(tmp_path))
  with pytest.raises(readme_row.RowError, match="cannot read .*nowhere/results.json"):
    readme_row.check_workdir(str(tmp_path / "nowhere"))
