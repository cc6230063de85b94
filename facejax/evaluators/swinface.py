"""SwinFace evaluation: verification metrics, the evaluation report, the
verification .bin protocol, and predictions for face crops (used by
launch.analyze; kept out of launch/ so that it can be imported without
launch.analyze's absl flags).
"""

import os
from typing import Iterable, Iterator

import jax
import numpy as np

from facejax import mesh as mesh_lib
from facejax.data.faces import photos
from facejax.evaluators import reports
from facejax.evaluators import verification
from facejax.models import layers
from facejax.models import swinface

FAR_TARGET = 1e-3


def verification_metrics(pos: np.ndarray, neg: np.ndarray,
                         far: float = FAR_TARGET) -> dict[str, float]:
  """Best-threshold accuracy and TAR@FAR from similarity histograms.

  Bin i counts similarities in [-1 + i*w, -1 + (i+1)*w); the thresholds
  are the bin edges (facejax.evaluators.verification's conventions).
  """
  return {"verification_acc": verification.hist_best_accuracy(pos, neg),
          "tar_at_far": verification.hist_tar_at_far(pos, neg, far),
          "pairs": float(np.sum(pos) + np.sum(neg))}


def report(setup, state, split: str, out_dir: str) -> str:
  """Per-task metrics and channel attention over FM1..FM4 (table + PNG).

  `setup.task` is a SwinFace task; written to
  out_dir/swinface_<split>.{md,json,png}.
  """
  task = setup.task
  sums = setup.evaluate(state, task.source(split))
  m = task.summarize(sums)
  fmt = lambda k: f"{m[k]:.4f}" if k in m else "n/a"
  lines = [f"## SwinFace on {split}", "",
           "| task | metric | value |", "|---|---|---|",
           f"| recognition | verification accuracy ({int(m['pairs'])} "
           f"pairs) | {fmt('verification_acc')} |",
           f"| recognition | TAR@FAR={FAR_TARGET:g} | {fmt('tar_at_far')} |",
           f"| expression | accuracy | {fmt('expression_acc')} |",
           f"| age | MAE (years) | {fmt('age_mae')} |",
           f"| gender | accuracy | {fmt('gender_acc')} |",
           f"| attributes | mean accuracy | {fmt('attr_mean_acc')} |"]
  have = sums["attr_count"] > 0
  if have.any():
    lines += ["", "| attribute | accuracy | count |", "|---|---|---|"]
    for i, name in enumerate(swinface.BINARY_TASKS):
      if have[i]:
        lines.append(f"| {name} | "
                     f"{sums['attr_correct'][i] / sums['attr_count'][i]:.4f}"
                     f" | {int(sums['attr_count'][i])} |")
  att = np.asarray(sums["attention"]) / max(float(sums["count"]), 1.0)
  levels = [f"FM{i + 1}" for i in range(att.shape[-1])]
  lines += ["", "Channel attention (mean sigmoid gate) per branch over "
            "the feature levels:", "",
            "| branch | " + " | ".join(levels) + " |",
            "|---|" + "---|" * len(levels)]
  branches = [b for b, _ in swinface.BRANCHES]
  for name, row in zip(branches, att):
    lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row)
                 + " |")
  text = "\n".join(lines) + "\n"
  name = f"swinface_{split}"
  reports.write_report(out_dir, name, text, {
      "metrics": m, "attention": att.tolist(), "branches": branches})
  if reports.writes(out_dir):
    # Grouped bars: per branch, the mean gate of each feature level.
    reports.plot_grouped_bars(att, branches, levels,
                              os.path.join(out_dir, name + ".png"),
                              "mean channel attention")
  return text


def verification_bins(setup, state, paths) -> str:
  """insightface's 10-fold accuracy on verification .bin files (lfw.bin,
  cfp_fp.bin, agedb_30.bin): the table SwinFace's paper reports, through
  the task's evaluation preprocessing."""
  preprocess = setup.task.face_preprocess(train=False)
  from facejax.data import pipeline  # pylint: disable=g-import-not-at-top
  from facejax.data.formats import verification_bin  # pylint: disable=g-import-not-at-top
  lines = ["| set | pairs | accuracy | std | threshold |",
           "|---|---|---|---|---|"]
  for path in paths:
    images, issame = verification_bin.read_bin(path)
    embs = []
    # The protocol's test-time flip: embedding(x) + embedding(flip(x)).
    for view in (images, images[:, :, ::-1]):
      source = [{"image": im} for im in view]
      out = []
      for batch in pipeline.eval_batches(source, preprocess,
                                         setup.eval_batch):
        emb = np.asarray(setup.predict(
            state, mesh_lib.shard_batch(batch, setup.mesh)["image"]
        )["embedding"])
        out.append(emb[np.asarray(batch["mask"]) > 0])
      embs.append(np.concatenate(out))
    emb = np.asarray(layers.l2_normalize(embs[0] + embs[1]))
    dist = np.sum((emb[0::2] - emb[1::2]) ** 2, axis=1)
    r = verification.kfold_accuracy(dist, issame)
    lines.append(f"| {os.path.basename(path)} | {r['pairs']} | "
                 f"{r['accuracy']:.4f} | {r['std']:.4f} | "
                 f"{r['threshold']:.2f} |")
  return "\n".join(lines) + "\n"


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def face_predictions(out: dict, classes, probabilities: bool = False
                     ) -> dict:
  """One face's answers from its row of the network's outputs: age,
  expression, gender and the attributes' probabilities (with
  `probabilities`, also gender's and every expression's)."""
  gender = _softmax(out["Gender"])
  expression = _softmax(out["Expression"])
  answers = {
      "age": round(float(out["Age"]), 2),
      "expression": classes[int(np.argmax(out["Expression"]))],
      "gender": "male" if gender[1] > 0.5 else "female",
      "attributes": {n: round(float(_softmax(out[n])[1]), 4)
                     for n in swinface.BINARY_TASKS if n != "Gender"}}
  if probabilities:
    answers["gender_male_probability"] = round(float(gender[1]), 4)
    answers["expression_probabilities"] = {
        c: round(float(p), 4) for c, p in zip(classes, expression)}
  return answers


def analyze(setup, state, batches: Iterable[list[photos.FaceCrop]],
            npy_dir: str = "", names: dict | None = None) -> Iterator[dict]:
  """One row of predictions per face (problems as rows with 'error').

  With `npy_dir`, each face's L2-normalised recognition embedding goes to
  `<npy_dir>/<name>.face<k>.npy`, `name` from `names` (path -> distinct
  name; `photos.unique_names`) or else the file's base name.
  """
  task = setup.task
  pre = task.preprocess(train=False).base
  classes = task.expression_classes()
  if npy_dir:
    os.makedirs(npy_dir, exist_ok=True)
  for batch in batches:
    outputs = {}
    for group in photos.groups_by_shape(batch):
      x = np.stack([pre((0, {"image": batch[i].crop}))["image"]
                    for i in group])
      out = jax.device_get(setup.predict(
          state, mesh_lib.shard_images(x, setup.mesh)))
      for k, i in enumerate(group):
        outputs[i] = jax.tree.map(lambda a, k=k: np.asarray(a)[k], out)
    for i, face in enumerate(batch):
      if i not in outputs:
        yield face.row()
        continue
      out = outputs[i]
      yield face.row(**face_predictions(out, classes))
      if npy_dir:
        name = (names or {}).get(face.path, os.path.basename(face.path))
        np.save(os.path.join(npy_dir, f"{name}.face{face.face}.npy"),
                out["embedding"].astype(np.float32))
