"""experiments.benchmark end to end on a small model: figures, FLOP census, JSON, no overwrite."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# The benchmark command in a subprocess: the full suite only.
pytestmark = pytest.mark.slow

BATCH, PIXELS, WIDTH, LATENTS = 32, 8 * 8, 32, 20
SMALL_MODEL = ["--config.data.name=digits", f"--config.model.width={WIDTH}",
               f"--config.model.latent_dim={LATENTS}", "--config.eval.batch_size=100",
               "--config.steps_per_dispatch=20"]


def _benchmark(*args, env=None):
  return subprocess.run([sys.executable, "-m", "experiments.benchmark", *args],
                        capture_output=True, text=True, cwd=REPO, timeout=600, env=env)


def _mlp_train_flops(batch):
  """Forward, then per dense layer dW and dX (none for the input): 2 flops a multiply-add."""
  layers = [PIXELS * WIDTH, WIDTH * LATENTS, WIDTH * LATENTS, LATENTS * WIDTH, WIDTH * PIXELS]
  macs = 3 * sum(layers) - PIXELS * WIDTH
  return 2 * batch * macs


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
  output = tmp_path_factory.mktemp("bench") / "small.json"
  cache = tmp_path_factory.mktemp("xla_cache")  # a persistent cache the run must not use
  proc = _benchmark(*SMALL_MODEL, f"--batch_sizes={BATCH}", "--conv_config=",
                    "--num_importance_samples=30", "--eval_examples=200", "--repeats=2",
                    "--key_impls=rbg", "--population_sizes=1,3", f"--output={output}",
                    env=dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache)))
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Its compile times are XLA's: it neither read nor wrote the cache it was given.
  assert not os.listdir(cache)
  return output, proc.stdout


def test_population_rows_are_aggregates_of_members_trained_as_one_program(small_run):
  output, stdout = small_run
  pops = [r for r in json.load(open(output))["measurements"] if r["kind"] == "population"]
  # Members looped inside the program and vmapped (a population of one: the solo program).
  assert [(r["members"], r["member_map"]) for r in pops] == [(1, "loop"), (3, "loop"),
                                                            (3, "vmap")]
  for row in pops:
    assert row["batch_size"] == BATCH
    assert row["examples_per_s"] == pytest.approx(
        row["members"] * BATCH / row["seconds_per_step"])
    assert row["examples_per_s_per_member"] == pytest.approx(row["examples_per_s"] / row["members"])
  assert "x one" in stdout


def test_the_benchmark_prints_a_table_and_writes_its_figures(small_run):
  output, stdout = small_run
  assert "| train |" in stdout and "| IWAE k=30, 200 test images |" in stdout
  record = json.load(open(output))
  assert record["environment"]["platform"] == "cpu"
  peak, train, reference, impls_train, sgd, evaluation, impls_eval, *pops = (
      record["measurements"])
  assert peak["kind"] == "peak" and peak["gflops_per_s"] > 0
  assert train["kind"] == "train" and train["batch_size"] == BATCH
  assert train["product_flops_per_device"] == _mlp_train_flops(BATCH)
  assert train["examples_per_s"] == pytest.approx(BATCH * train["steps_per_s"])
  # The hand-written loop of the same model runs the same products, as many steps a dispatch.
  assert "| reference |" in stdout and reference["kind"] == "reference"
  assert reference["product_flops_per_device"] == train["product_flops_per_device"]
  assert reference["steps_per_dispatch"] == train["steps_per_dispatch"]
  # Timed in turn with the train chunk and the products alone: ratios of one moment's load.
  alongside = reference["alongside"]
  assert alongside["reference_seconds_per_step"] == reference["seconds_per_step"]
  assert alongside["train_speed_over_reference"] == pytest.approx(
      alongside["reference_seconds_per_step"] / alongside["train_seconds_per_step"])
  assert 0 < alongside["train_roofline_ratio"] < 2 and 0 < alongside["reference_roofline_ratio"] < 2
  # Where a step's time goes: the products apart, the rest by source.
  for row in (train, reference):
    found = row["breakdown"]
    assert found["by_source"][0]["us"] > 0 and found["product_us_per_call"] > 0
    assert found["ops_per_call"] > {"train": 20, "reference": 14}[row["kind"]]
  assert any(g["where"].startswith("vae_jax/") for g in train["breakdown"]["by_source"])
  # The SGD baseline runs the same products: the optimizer's cost is all elementwise.
  assert train["model"].endswith("adam") and sgd["model"].endswith("sgd")
  assert sgd["product_flops_per_device"] == train["product_flops_per_device"]
  assert evaluation["kind"] == "eval" and evaluation["num_importance_samples"] == 30
  # IWAE: the encoder once and the decoder once per sample, for the 200 images.
  eval_macs = 200 * ((PIXELS * WIDTH + 2 * WIDTH * LATENTS) +
                     31 * (LATENTS * WIDTH + WIDTH * PIXELS))  # 30 samples + the ELBO's z
  assert evaluation["product_flops_per_device"] == 2 * eval_macs
  # --key_impls: the step and the evaluation under Threefry (always) and rbg, in turn.
  assert "| train, batch 32 (20 steps) | rbg |" in stdout
  for row in (impls_train, impls_eval):
    assert row["kind"].startswith("key_impls") and list(row["impls"]) == ["threefry2x32", "rbg"]
    assert row["impls"]["threefry2x32"]["speed_over_threefry2x32"] == 1.0
    assert row["control"]["speed_over_threefry2x32"] > 0  # the A/A pair: this run's noise
  assert impls_train["steps_per_dispatch"] == train["steps_per_dispatch"]
  for m in impls_train["impls"].values():
    assert m["examples_per_s"] == pytest.approx(BATCH / m["seconds_per_step"])
    assert 0 < m["draws_seconds_per_step"] and m["speed_over_reference"] > 0
  assert impls_eval["num_importance_samples"] == 30
  for row in (train, reference, sgd, evaluation):
    assert row["compile_seconds"] > 0 and row["peak_host_bytes"] > 0
    assert 0 < row["roofline_seconds"] and 0 < row["roofline_ratio"] < 2, row
    assert row["roofline_ratio"] == pytest.approx(
        row["roofline_seconds"] / (row.get("seconds_per_step") or row["seconds"]))


def test_results_are_never_overwritten(small_run):
  output, _ = small_run
  before = open(output).read()
  proc = _benchmark(*SMALL_MODEL, "--batch_sizes=32", "--conv_config=",
                    "--num_importance_samples=0", f"--output={output}")
  assert proc.returncode == 1 and "exists" in proc.stderr and str(output) in proc.stderr
  assert open(output).read() == before


def test_bad_batch_sizes_and_fields_are_named(tmp_path):
  proc = _benchmark("--batch_sizes=32,abc", f"--output={tmp_path / 'x.json'}")
  assert proc.returncode == 1 and "--batch_sizes=32,abc" in proc.stderr
  proc = _benchmark("--key_impls=rbg,threefry", f"--output={tmp_path / 'x.json'}")
  assert proc.returncode == 1 and "--key_impls=rbg,threefry: unknown key implementation " \
      "threefry; valid: threefry2x32, rbg" in proc.stderr
  proc = _benchmark("--config.model.widht=3", f"--output={tmp_path / 'x.json'}")
  assert proc.returncode == 1 and "Did you mean --config.model.width" in proc.stderr
  assert not os.path.exists(tmp_path / "x.json")


def test_baseline_overrides_are_cast_to_the_fields_type_and_bad_ones_named():
  from configs import default  # pylint: disable=g-import-not-at-top
  from vae_jax import validation  # pylint: disable=g-import-not-at-top
  from vae_jax.perf import benchmark  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  changed = benchmark.with_overrides(
      config, ["model.conv_impl=lax", "model.width=7", "objective.beta=0.5",
               "keep_best_checkpoint=true"])
  assert (changed.model.conv_impl, changed.model.width, changed.objective.beta,
          changed.keep_best_checkpoint) == ("lax", 7, 0.5, True)
  assert config.model.conv_impl == "auto"  # a copy: the measured config is unchanged
  for bad in ("model.conv_imp=lax", "model=lax", "model.width", "model.width=wide",
              "keep_best_checkpoint=maybe"):
    with pytest.raises(validation.ConfigError, match=bad.split("=")[0]):
      benchmark.with_overrides(config, [bad])
