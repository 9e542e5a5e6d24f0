"""Progress lines: throttled to one per interval, with the fraction done and an ETA."""

import logging
import re

import jax
import numpy as np

from tests.conftest import make_config
from vae_jax import models
from vae_jax import parallel
from vae_jax import progress
from vae_jax.data import datasets
from vae_jax.evaluation import evaluator as evaluation


def test_lines_are_throttled_and_the_last_one_is_always_logged(monkeypatch):
  clock = [0.0]
  monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
  p = progress.Progress("work", 10, "items", every_s=10)
  lines = []
  for i in range(1, 11):
    clock[0] = 4.0 * i               # 4 s per item
    lines.append(p.update())
  logged = [line for line in lines if line]
  assert len(logged) == 4            # at 12, 24, 36 s (every 10 s at most) and the end
  assert logged[0] == "work: 3/10 items (30%), 12 s elapsed, ETA 28 s"
  assert logged[-1].startswith("work: 10/10 items (100%), 40 s elapsed, ETA 0 s")


def test_short_work_logs_nothing():
  p = progress.Progress("quick", 3, every_s=10)
  assert [p.update() for _ in range(3)] == [None, None, None]


def test_an_evaluation_reports_every_batch_it_finishes(monkeypatch, caplog):
  """Each batch of the sharded split is reported as the host receives it; figures unchanged."""
  monkeypatch.setattr(progress, "REPORT_EVERY_S", 0.0)
  caplog.set_level(logging.INFO)
  config = make_config()
  model = models.build(config, datasets.info("digits"))
  params = parallel.replicate(model.init(jax.random.PRNGKey(0)))
  test = datasets.load("digits").arrays("test")       # 300 examples: 3 batches of 100
  reported = evaluation.Evaluator(model, "dynamic", 0, test, 100).per_example(params, 5)
  lines = [r.getMessage() for r in caplog.records if "evaluation of 300" in r.getMessage()]
  assert [re.search(r"(\d)/3 batches", line).group(1) for line in lines] == ["1", "2", "3"]
  monkeypatch.setattr(progress, "REPORT_EVERY_S", 1e9)
  quiet = evaluation.Evaluator(model, "dynamic", 0, test, 100).per_example(params, 5)
  for key in ("elbo", "log_px"):
    np.testing.assert_array_equal(reported[key], quiet[key])
