"""Age-transformer evaluation: per-target-age numbers over a split (the
evaluation and training estimators' age errors, identity cosine,
reconstruction) and their report, and the grid of faces edited to target
ages (launch.age_transformer). `run` is the restored run
(facejax.train.loop.Setup) of an age-transformer task."""

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from facejax import mesh as mesh_lib
from facejax.data import pipeline
from facejax.data.faces import photos
from facejax.evaluators import reports


def load_faces(crops, preprocess, warn) -> tuple[np.ndarray, list[str]]:
  """Every face as the task's preprocess yields it, and its row label;
  `warn(message)` is told about photos without a usable face."""
  faces, labels = photos.labelled_faces(crops, warn)
  if not faces:
    raise ValueError("no face to edit in " + ", ".join(crops.paths[:5]))
  images = [preprocess((0, {"image": f.crop, "age": np.float32(0)}))["image"]
            for f in faces]
  return np.stack(images), labels


def edit_grid(setup, state, images: np.ndarray, ages: list[float],
              histogram: bool, batch_size: int = 16
              ) -> list[list[np.ndarray]]:
  """Rows [input, edit at ages[0], ...] of RGB in [0, 1], `batch_size`
  faces at a time (a folder of hundreds of faces fits in memory)."""
  fn = setup.task.edit_fn(histogram)
  devices = jax.device_count()
  # Every chunk padded to one size (a multiple of the device count, as the
  # batch is sharded): one compiled program for the whole folder.
  per = -(-min(batch_size, len(images)) // devices) * devices
  rows = [[(im + 1.0) * 0.5] for im in images]
  for start in range(0, len(images), per):
    chunk = images[start:start + per]
    padded = np.concatenate([chunk, np.repeat(chunk[-1:],
                                               per - len(chunk), 0)])
    x = mesh_lib.shard_batch({"image": padded}, setup.mesh)["image"]
    for age in ages:
      t = mesh_lib.shard_batch({"t": np.full((per,), age, np.float32)},
                               setup.mesh)["t"]
      out = np.asarray(jax.device_get(fn(state, x, t)))
      for i in range(len(chunk)):
        rows[start + i].append(out[i])
  return rows


def _pooled_corr(targets, mean_age, mean_sq) -> float:
  """Correlation of (target, age) over all faces x targets, from per-target
  means of age and age^2 (every target has the same faces)."""
  t, a, a2 = (np.asarray(v, np.float64) for v in (targets, mean_age, mean_sq))
  var_t = np.mean(t * t) - np.mean(t) ** 2
  var_a = np.mean(a2) - np.mean(a) ** 2
  cov = np.mean(t * a) - np.mean(t) * np.mean(a)
  if not (var_t > 0 and var_a > 0):
    return float("nan")
  return float(cov / np.sqrt(var_t * var_a))


def edit_metrics(run, state, source, ages: Sequence[float],
                 frozen=None) -> dict[str, Any]:
  """Per-target-age numbers over a split (host floats).

  For every target age: the mean age estimate of the edited image and
  mean |age estimate - target| of the edited and of the unedited image
  (by the evaluation estimator, config.eval.estimator, and by the
  training estimator), and identity cosine similarity between
  evaluation-estimator features of input and edit. Plus the
  reconstruction L1 at target = source age (model domain, [0, 1] scale).

  Returns:
    {'ages': [...], 'eval_err': [...], 'eval_age': [...],
     'train_age': [...], 'eval_err_unedited': [...],
     'train_err': [...], 'identity': [...], 'recon_l1': float,
     'recon_identity': float, 'count': int, 'eval_estimator': str,
     'eval_corr': Pearson correlation of target and evaluation-estimator
     age over all (face, target) pairs}.
  """
  task = run.task
  frozen = run.frozen if frozen is None else frozen
  ev = task.eval_estimator()
  ev_vars = ev.variables if ev is not None else None
  ages = [float(a) for a in ages]
  per_batch = task.edit_metric_fn(ages)
  totals = None
  for batch in pipeline.eval_batches(source, task.preprocess(train=False),
                                     run.eval_batch,
                                     task.config.data.num_workers):
    sums = per_batch(state, frozen, ev_vars,
                     mesh_lib.shard_batch(batch, run.mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals,
                                                      sums)
  eval_name, train_name = task.estimator_names()
  t = {k: float(v) for k, v in jax.device_get(totals).items()}
  n = max(t["count"], 1.0)
  per_age = lambda name: [t[f"{name}_{k}"] / n if f"{name}_{k}" in t
                          else float("nan") for k in range(len(ages))]
  return {
      "ages": ages, "count": int(t["count"]),
      "eval_corr": _pooled_corr(ages, per_age("eval_age"),
                                per_age("eval_age_sq")),
      "eval_err": per_age("eval_err"),
      "eval_age": per_age("eval_age"),
      "train_age": per_age("train_age"),
      "eval_err_unedited": per_age("eval_err_unedited"),
      "train_err": per_age("train_err"),
      "train_err_unedited": per_age("train_err_unedited"),
      "identity": per_age("identity"),
      "recon_l1": t["recon_l1"] / n,
      "recon_identity": t.get("recon_identity", float("nan")) / n,
      "eval_estimator": eval_name, "train_estimator": train_name}


def report(run, state, split: str, out_dir: str) -> str:
  """Markdown table per target age; also written to out_dir."""
  src = run.task.source(split)
  r = edit_metrics(run, state, src, run.task.config.eval.ages)
  name = os.path.basename(split).replace(".csv", "")
  fmt = lambda v: "n/a" if np.isnan(v) else f"{v:.2f}"
  lines = [f"## Age transformer on {name} ({r['count']} faces)", ""]
  if r["eval_estimator"]:
    lines.append(f"Evaluation estimator (not used in training): "
                 f"{r['eval_estimator']}.")
  else:
    lines.append("Evaluation estimator: **not set** (config key "
                 "eval.estimator.workdir, e.g. a trained age_regression "
                 "workdir); its columns show n/a.")
  lines += [f"Training estimator: {r['train_estimator']}.", "",
            "| target age | eval est. \\|age - target\\| (edited) | "
            "(unedited) | train est. \\|age - target\\| (edited) | "
            "(unedited) | identity cos |",
            "|---|---|---|---|---|---|"]
  for k, age in enumerate(r["ages"]):
    lines.append(
        f"| {age:.0f} | {fmt(r['eval_err'][k])} | "
        f"{fmt(r['eval_err_unedited'][k])} | {fmt(r['train_err'][k])} | "
        f"{fmt(r['train_err_unedited'][k])} | {fmt(r['identity'][k])} |")
  lines += ["", f"Reconstruction at the source age: L1 "
            f"{r['recon_l1']:.4f} (RGB in [0, 1]), identity cos "
            f"{fmt(r['recon_identity'])}."]
  text = "\n".join(lines) + "\n"
  reports.write_report(out_dir, f"age_edit_{name}", text)
  return text
