"""The gradient-estimator study on a trained run: pathwise vs score function.

For the encoder of a trained VAE and a batch of test images (as the model saw
them), ``run_study`` estimates grad_enc mean_b E_q[log p(x_b|z)] with each
estimator of ``studies.gradients.estimators`` at each sample count S, R times; compares
the means (per-coordinate z against the pathwise estimator at the same S, and
against an independent high-precision pathwise reference), reports the total
variance per estimator and S, tests that z = mu + sigma * eps is N(mu, sigma^2),
and writes gradients.json, gradients.md and gradient_variance.png.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from studies.gradients import estimators as E
from vae_jax import progress
from vae_jax import validation
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.evaluation import saved_run as checkpoint_eval
from vae_jax.models import interface
from vae_jax.training import workdir as workdir_lib

OUTPUTS = ("gradients.json", "gradients.md", "gradient_variance.png")
_KEY_REFERENCE, _KEY_PILOT, _KEY_DISTRIBUTION = 0, 98, 99
_PILOT_REPETITIONS = 10


def _fail(field: str, value: Any, why: str) -> None:
  raise validation.ConfigError(f"config.{field}={value!r} is invalid: {why}.")


def repetitions_per_count(config: ml_collections.ConfigDict) -> list[int]:
  """R for each sample count: one int for all, or one per entry of sample_counts."""
  reps = config.repetitions
  counts = list(config.sample_counts)
  reps = [reps] * len(counts) if isinstance(reps, int) else list(reps)
  if len(reps) != len(counts) or not all(isinstance(r, int) and r >= 2 for r in reps):
    _fail("repetitions", config.repetitions,
          f"must be an int >= 2 or {len(counts)} of them, one per sample count")
  return reps


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails on the first bad field, naming it and what is valid (before any work)."""
  counts = config.sample_counts
  if (not isinstance(counts, (tuple, list)) or not counts
      or not all(isinstance(s, int) and s >= 1 for s in counts) or list(counts) != sorted(set(counts))):
    _fail("sample_counts", counts, "must be increasing positive ints, e.g. (1, 10, 100, 1000)")
  repetitions_per_count(config)
  if not isinstance(config.reference_repetitions, int) or config.reference_repetitions < 2:
    _fail("reference_repetitions", config.reference_repetitions, "must be an int >= 2")
  ests = tuple(config.estimators)
  if "pathwise" not in ests or not set(ests) <= set(E.ESTIMATORS) or len(set(ests)) != len(ests):
    _fail("estimators", ests, f"must be distinct names from {E.ESTIMATORS}, pathwise included")
  if not isinstance(config.num_random_directions, int) or config.num_random_directions < 0:
    _fail("num_random_directions", config.num_random_directions, "must be an int >= 0")
  if not isinstance(config.num_images, int) or config.num_images < 1:
    _fail("num_images", config.num_images, "must be an int >= 1")
  if not isinstance(config.step, int) or config.step < -1:
    _fail("step", config.step, "must be a checkpoint step, or -1 for the latest")
  dist = config.distribution_test
  if not 0 <= dist.image_index < config.num_images:
    _fail("distribution_test.image_index", dist.image_index, f"must be in [0, {config.num_images})")
  if dist.num_samples < 100:
    _fail("distribution_test.num_samples", dist.num_samples, "must be >= 100")
  if dist.scale_factor <= 0 or dist.scale_factor == 1.0:
    _fail("distribution_test.scale_factor", dist.scale_factor, "must be > 0 and != 1 (a wrong q)")
  if dist.mean_shift == 0.0:
    _fail("distribution_test.mean_shift", dist.mean_shift, "must be != 0 (a wrong q)")


def check_outputs(workdir: str) -> None:
  """Refuses a workdir that already holds this study's results."""
  existing = [f for f in OUTPUTS if os.path.exists(os.path.join(workdir, f))]
  if existing:
    raise workdir_lib.WorkdirError(
        f"{workdir} already holds {', '.join(existing)}; move them away or pick another --workdir.")


def _by_layer(var_tree) -> dict[str, float]:
  flat, _ = jax.tree_util.tree_flatten_with_path(var_tree)
  return {jax.tree_util.keystr(path): float(np.sum(np.asarray(v, np.float64)))
          for path, v in flat}


def _slope(counts: list[int], values: list[float]) -> float | None:
  """Least-squares slope of log variance against log S (-1 for iid averaging)."""
  if len(counts) < 2:
    return None
  return float(np.polyfit(np.log(counts), np.log(values), 1)[0])


def run_study(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the study of ``config.run`` and writes OUTPUTS into ``workdir``."""
  start = time.time()
  validate(config)
  check_outputs(workdir)
  run = checkpoint_eval.load_run(config.run, None if config.step == -1 else config.step)
  interface.require(run.model, ("posterior", "log_likelihood"), "The gradient study")
  if config.num_images > len(run.dataset.test):
    _fail("num_images", config.num_images, f"the test split has {len(run.dataset.test)} images")
  ids = np.arange(config.num_images)
  x = evaluation.eval_inputs(run.dataset.test[: config.num_images], ids, run.preprocessing,
                             run.config.eval.seed)
  key = jax.random.PRNGKey(config.seed)
  counts, reps = list(config.sample_counts), repetitions_per_count(config)

  def gradient(estimator, num_samples):
    return lambda k: E.encoder_gradient(estimator, run.model, run.params, x, k, num_samples)

  # A pilot estimate of the gradient's direction (independent draws) for the projections.
  s_ref, k_ref = counts[-1], config.reference_repetitions
  pilot, _ = E.moments(gradient("pathwise", s_ref), jax.random.fold_in(key, _KEY_PILOT),
                       _PILOT_REPETITIONS)
  directions = E.probe_directions(E.flat(pilot), config.num_random_directions, config.seed)

  def estimate_moments(estimator, num_samples, k, repetitions):
    fn = E.with_projections(gradient(estimator, num_samples), directions)
    mean, var = E.moments(fn, k, repetitions)
    return {"mean": E.flat(mean["grad"]), "var": E.flat(var["grad"]), "reps": repetitions,
            "along_mean": np.asarray(mean["along"], np.float64),
            "along_var": np.asarray(var["along"], np.float64), "var_tree": var["grad"]}

  def agreement(a, b):
    return {"per_coordinate": E.compare(a["mean"], a["var"], a["reps"], b["mean"], b["var"],
                                        b["reps"]),
            "along_directions": E.compare(a["along_mean"], a["along_var"], a["reps"],
                                          b["along_mean"], b["along_var"], b["reps"],
                                          keep_z=True)}

  t = time.time()
  ref = estimate_moments("pathwise", s_ref, jax.random.fold_in(key, _KEY_REFERENCE), k_ref)
  g_ref, ref_var_of_mean = ref["mean"], ref["var"] / k_ref
  reference = {"estimator": "pathwise", "num_samples": s_ref, "repetitions": k_ref,
               "samples_per_image": s_ref * k_ref, "norm": float(np.linalg.norm(g_ref)),
               "relative_std_of_mean": float(np.sqrt(ref_var_of_mean.sum()) / np.linalg.norm(g_ref)),
               "pilot_cosine": float(directions[0] @ g_ref / np.linalg.norm(g_ref)),
               "seconds": time.time() - t}
  logging.info("Reference: %s", reference)

  rows, pathwise = [], {}
  work = progress.Progress("gradient study", sum(
      1 for e in config.estimators for s in counts if e != "score_loo" or s >= 2), "estimates")
  for i, estimator in enumerate(config.estimators):
    for num_samples, repetitions in zip(counts, reps):
      if estimator == "score_loo" and num_samples < 2:
        continue
      t = time.time()
      k = jax.random.fold_in(jax.random.fold_in(key, i + 1), num_samples)
      m = estimate_moments(estimator, num_samples, k, repetitions)
      row = {"estimator": estimator, "num_samples": num_samples, "repetitions": repetitions,
             **E.summarize(m["mean"], m["var"], repetitions, g_ref, ref_var_of_mean),
             "vs_reference": agreement(m, ref),
             "variance_by_layer": _by_layer(m["var_tree"])}
      if estimator == "pathwise":
        pathwise[num_samples] = (m, row["total_variance"])
      else:
        p, p_total = pathwise[num_samples]
        row["variance_ratio_to_pathwise"] = row["total_variance"] / p_total
        row["vs_pathwise"] = agreement(m, p)
      row["seconds"] = time.time() - t
      logging.info("%s S=%d R=%d: total variance %.4g, relative error %.3g (noise %.3g), %.1fs",
                   estimator, num_samples, repetitions, row["total_variance"],
                   row["relative_error"], row["relative_error_from_noise"], row["seconds"])
      rows.append(row)
      work.update(note=f"{estimator} S={num_samples}")

  slopes = {}
  for estimator in config.estimators:
    mine = [r for r in rows if r["estimator"] == estimator]
    slopes[estimator] = _slope([r["num_samples"] for r in mine],
                               [r["total_variance"] for r in mine])

  dist = config.distribution_test
  xi = x[dist.image_index: dist.image_index + 1]
  q = run.model.posterior(run.params, {"image": xi})
  mean, logvar = q.mean, q.logvar
  dkey = jax.random.fold_in(key, _KEY_DISTRIBUTION)
  test = lambda **kw: E.distribution_test(np.asarray(mean[0]), np.asarray(logvar[0]), dkey,
                                          dist.num_samples, config.seed, alpha=dist.alpha, **kw)
  distribution = {"image_index": dist.image_index, "right": test(),
                  "wrong_scale": test(scale_factor=dist.scale_factor),
                  "wrong_mean": test(mean_shift=dist.mean_shift)}

  record = {
      "what": "grad_enc of mean_b E_q(z|x_b)[log p(x_b|z)] (nats per example): pathwise vs "
              "score-function estimators, S samples per image and estimate, R estimates",
      "run": {"workdir": run.workdir, "step": run.step, "checkpoint": run.checkpoint,
              "dataset": run.dataset.name, "source": run.dataset.source,
              "preprocessing": run.preprocessing,
              "model": workdir_lib.config_dict(run.config)["model"]},
      "config": workdir_lib.config_dict(config),
      "num_images": config.num_images,
      "num_encoder_params": int(g_ref.size), "reference": reference, "rows": rows,
      "variance_slopes": slopes, "distribution_test": distribution,
      "platform": jax.default_backend(), "wall_time_s": time.time() - start,
      "versions": workdir_lib.versions(),
  }
  os.makedirs(workdir, exist_ok=True)
  check_outputs(workdir)  # again: nothing written meanwhile is replaced
  plot(record, os.path.join(workdir, OUTPUTS[2]))
  with open(os.path.join(workdir, OUTPUTS[1]), "x", encoding="utf-8") as f:
    f.write(markdown(record))
  workdir_lib.write_json(os.path.join(workdir, OUTPUTS[0]), record)
  return record


def _g(v: float | None, digits: int = 3) -> str:
  return "–" if v is None else f"{v:.{digits}g}"


def markdown(record: dict[str, Any]) -> str:
  """The study's tables in Markdown."""
  ref, run = record["reference"], record["run"]
  zeros = record["rows"][0]["vs_reference"]["per_coordinate"]
  agree = sum(all(r[k]["per_coordinate"]["zero_variance_mismatches"] == 0
                  for k in ("vs_reference", "vs_pathwise") if k in r) for r in record["rows"])
  lines = [
      f"Encoder gradient of the expected reconstruction term, {run['dataset']}, "
      f"{record['num_images']} test images, step {run['step']} of `{os.path.basename(run['workdir'])}`"
      f" ({record['num_encoder_params']:,} encoder parameters). Reference: pathwise, "
      f"{ref['samples_per_image']:,} samples per image, ‖g_ref‖ = {ref['norm']:.4g} "
      f"(its own relative noise {ref['relative_std_of_mean']:.2g}).", "",
      "Agreement of the means: z = (ḡ_a − ḡ_b) / √(var_a/R_a + var_b/R_b), per coordinate (the "
      "fraction within ±1.96, ≈ 0.95 if unbiased, but coordinates are correlated; the largest |z| "
      "against the Bonferroni threshold) and along fixed unit directions (û: the pilot gradient's "
      "direction; the largest |z| of "
      f"{record['config']['num_random_directions']} random directions), against the pathwise "
      "estimator with the same S and against the reference. Per coordinate: the "
      f"{zeros['num_coordinates'] - zeros['num_zero_variance']:,} coordinates that vary; the "
      f"other {zeros['num_zero_variance']:,} (first-layer weights of pixels that are 0 in every "
      "image, weights of units that never fire) have zero variance, and their means agree "
      f"exactly in {agree} of {len(record['rows'])} rows. s: wall seconds with compilation "
      f"({record['platform']}).", "",
      "| estimator | S | R | total variance E‖g − Eg‖² | × pathwise | √var / ‖g‖ "
      "| ‖ḡ − g_ref‖ / ‖g_ref‖ (from noise alone) "
      "| vs pathwise: \\|z\\| < 1.96 | max \\|z\\| (Bonferroni) | z along û; random "
      "| vs ref: \\|z\\| < 1.96 | max \\|z\\| (Bonferroni) | z along û; random | s |",
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
      "| ---: |"]

  def cells(agreement):
    if agreement is None:
      return "– | – | –"
    c, d = agreement["per_coordinate"], agreement["along_directions"]["z"]
    random = f"{max(abs(v) for v in d[1:]):.2f}" if len(d) > 1 else "–"
    return (f"{c['fraction_abs_z_below_1.96']:.3f} | {c['max_abs_z']:.2f} "
            f"({c['bonferroni_threshold']:.2f}; {c['num_above_bonferroni']} above) | "
            f"{d[0]:+.2f}; {random}")

  for r in record["rows"]:
    lines.append(
        f"| {r['estimator']} | {r['num_samples']} | {r['repetitions']} | "
        f"{r['total_variance']:.4g} | {_g(r.get('variance_ratio_to_pathwise'), 4)} | "
        f"{r['relative_std']:.3g} | {r['relative_error']:.3g} ({r['relative_error_from_noise']:.3g}) | "
        f"{cells(r.get('vs_pathwise'))} | {cells(r['vs_reference'])} | {r['seconds']:.0f} |")
  slopes = ", ".join(f"{k} {_g(v)}" for k, v in record["variance_slopes"].items())
  lines += ["", f"Log–log slope of total variance against S: {slopes} (−1 = 1/S).", ""]
  dist = record["distribution_test"]
  right = dist["right"]
  lines += [
      f"z = μ + σ·ε (`distributions.reparameterize`) against N(μ, σ²), q(z|x) of test image "
      f"{dist['image_index']}: {right['num_samples']:,} draws × {right['num_dims']} dims. "
      "p-values: pooled over all standardized draws / smallest per dimension × dims (Bonferroni); "
      f"rejected = the smaller of the two × 2 < {right['alpha']}.", "",
      "| draws from | KS vs exact CDF | Cramér–von Mises vs exact CDF "
      "| 2-sample KS vs `numpy` `rng.normal` | rejected |",
      "| --- | --- | --- | --- | --- |"]
  names = {"right": "N(μ, σ²) (the claim)",
           "wrong_scale": f"N(μ, ({dist['wrong_scale']['scale_factor']:g}σ)²)",
           "wrong_mean": f"N(μ + {dist['wrong_mean']['mean_shift_in_sigmas']:g}σ, σ²)"}
  for name, label in names.items():
    d = dist[name]
    cell = lambda t: (f"p = {d[t]['pooled_pvalue']:.3g} / {d[t]['bonferroni_pvalue_per_dim']:.3g}"
                      f" (stat {d[t]['pooled_statistic']:.3g})")
    rejected = ", ".join(t for t in ("ks", "cramervonmises", "ks_2samp") if d[t]["rejected"])
    lines.append(f"| {label} | {cell('ks')} | {cell('cramervonmises')} | {cell('ks_2samp')} | "
                 f"{rejected or 'none'} |")
  return "\n".join(lines) + "\n"


def plot(record: dict[str, Any], path: str) -> None:
  """Total variance and error of the mean against S, log-log, one curve per estimator."""
  fig = Figure(figsize=(10, 4.2), layout="constrained")
  FigureCanvasAgg(fig)
  ax_var, ax_err = fig.subplots(1, 2)
  colors = {"pathwise": "C0", "score": "C3", "score_loo": "C1"}
  labels = {"pathwise": "pathwise (reparameterized)", "score": "score function (REINFORCE)",
            "score_loo": "score function, leave-one-out baseline"}
  for estimator in record["config"]["estimators"]:
    rows = [r for r in record["rows"] if r["estimator"] == estimator]
    s = np.array([r["num_samples"] for r in rows], float)
    v = np.array([r["total_variance"] for r in rows])
    c = colors.get(estimator)
    ax_var.plot(s, v[0] * s[0] / s, "-", color=c, lw=7, alpha=0.2, solid_capstyle="round")
    ax_var.plot(s, v, "o-", color=c, label=labels.get(estimator, estimator))
    ax_err.plot(s, [r["relative_error"] for r in rows], "o-", color=c)
    ax_err.plot(s, [r["relative_error_from_noise"] for r in rows], "--", color=c, alpha=0.6)
  counts = record["config"]["sample_counts"]
  for ax in (ax_var, ax_err):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("samples per image and estimate, S")
    ax.grid(True, which="both", alpha=0.3)
  ax_var.set_ylabel("total variance E‖g − E g‖² of one estimate")
  ax_var.set_title("variance (wide pale bands: exactly ∝ 1/S from the first point)", fontsize=9)
  ax_var.legend(fontsize=8)
  ax_err.set_ylabel("‖ḡ − g_ref‖ / ‖g_ref‖ of the mean of R estimates")
  ax_err.set_title("error of the mean (dashed: expected from noise alone)", fontsize=9)
  run = record["run"]
  fig.suptitle(f"Encoder gradient of E_q[log p(x|z)]: {run['dataset']}, "
               f"{record['num_images']} test images, step {run['step']}", fontsize=10)
  tmp = f"{path}.tmp.png"
  fig.savefig(tmp, dpi=120)
  os.replace(tmp, path)
