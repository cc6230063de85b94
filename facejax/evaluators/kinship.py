"""Kinship evaluation: the RFIW protocol, its report and the pixel baseline.

The threshold maximising Youden's J (TPR - FPR) on the validation list,
then accuracy per relation and over all pairs (micro), ROC AUC, TAR at FAR
1e-2 / 1e-3 (facejax.evaluators.verification's definitions), accuracy per
demographic group, a Markdown table and a ROC PNG.
"""

import json
import os

import jax
import numpy as np

from facejax import mesh as mesh_lib
from facejax.data import kinship as kin_data
from facejax.data import pipeline
from facejax.data import transforms
from facejax.evaluators import reports
from facejax.evaluators import verification

# The stored threshold (launch.evaluate writes it, launch.kinship reads it).
THRESHOLD_FILE = "kinship_threshold.json"


def scores(setup, state, source, fn=None) -> dict[str, np.ndarray]:
  """Per-pair scores and labels of a whole split (host arrays).

  `setup.task` is a kinship task; `fn`: its `score_fn` compiled with
  `setup.compile` (compiled here when not given).
  """
  task = setup.task
  fn = fn or setup.compile(task.score_fn)
  parts = []
  for batch in pipeline.eval_batches(source, task.preprocess(False),
                                     setup.eval_batch,
                                     task.config.data.num_workers):
    out = jax.device_get(fn(state, setup.frozen,
                            mesh_lib.shard_batch(batch, setup.mesh)))
    keep = out.pop("mask") > 0
    parts.append({k: np.asarray(v)[keep] for k, v in out.items()})
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def score_pairs(setup, state, pairs, fn=None, size: int = 0) -> list[dict]:
  """Score (and most likely relation) of each (face a, face b) crop pair.

  The pairs are padded to `size` rows (default: the setup's eval batch;
  a multiple of the device count) by repeating the last one; `fn` is the
  task's `score_fn` compiled with `setup.compile` (compiled here if not
  given).
  """
  task = setup.task
  fn = fn or setup.compile(task.score_fn)
  pre = task.preprocess(train=False).preprocess
  size = size or setup.eval_batch
  image = lambda face: np.asarray(pre((0, {"image": face}))["image"])
  rows = [image(f) for pair in pairs for f in pair]
  rows += rows[-2:] * (size - len(pairs))
  batch = {k: np.zeros((size,), np.int32) for k in kin_data.LABEL_KEYS}
  batch.update(label=np.zeros((size,), np.float32),
               mask=np.ones((size,), np.float32),
               image_a=np.stack(rows[0::2]), image_b=np.stack(rows[1::2]))
  out = jax.device_get(fn(state, setup.frozen,
                          mesh_lib.shard_batch(batch, setup.mesh)))
  names = {v: k for k, v in kin_data.RELATION_LABELS.items()}
  results = []
  for i in range(len(pairs)):
    r = {"score": float(out["score"][i])}
    if "relation_pred" in out:
      r["relation"] = names[int(out["relation_pred"][i])]
    results.append(r)
  return results


def stored_threshold(setup, state, workdir: str) -> tuple[float, str]:
  """(threshold, where it came from): the one `report` stored in
  `workdir` (THRESHOLD_FILE), else Youden's J on the validation list,
  scored now (the run's data must be on this machine)."""
  path = os.path.join(workdir, THRESHOLD_FILE)
  if os.path.exists(path):
    with open(path) as f:
      return float(json.load(f)["threshold"]), path
  val = scores(setup, state, setup.task.source("valid"))
  return (verification.youden_threshold(val["score"], val["label"]),
          "Youden's J on the validation list")


def report(setup, state, split: str, out_dir: str) -> str:
  """RFIW protocol on `split` (threshold from the validation list).

  Writes out_dir/kinship_<name>.{md,json}, the threshold
  (THRESHOLD_FILE) and the ROC curve kinship_roc_<name>.png.
  """
  task = setup.task
  fn = setup.compile(task.score_fn)
  val = scores(setup, state, task.source("valid"), fn)
  threshold = verification.youden_threshold(val["score"], val["label"])
  r = scores(setup, state, task.source(split), fn)
  res = verification_report(r, threshold)
  res.update(split=split, step=int(jax.device_get(state.step)),
             val_auc=verification.roc_auc(val["score"], val["label"]))
  name = os.path.basename(split).replace(".txt", "")
  text = report_markdown(res, task.config, name)
  if reports.writes(out_dir):
    reports.write_report(out_dir, f"kinship_{name}", text,
                         {k: v for k, v in res.items() if k != "roc"})
    reports.write_json(out_dir, THRESHOLD_FILE.removesuffix(".json"), {
        "threshold": threshold, "head": task.config.model.head,
        "step": res["step"]})
    png = os.path.join(out_dir, f"kinship_roc_{name}.png")
    reports.plot_roc(res["roc"], png, f"{name}: AUC {res['auc']:.3f}")
    text += f"\nROC curve: {png}\n"
  return text


def pixel_baseline_auc(source, size: int = 16, limit: int = 1000) -> float:
  """AUC of the cosine of mean-centred 16 px greyscale images."""
  pre = transforms.Preprocess(image_size=size, normalize="unit",
                              label_keys=())
  pair_scores, labels = [], []
  for i in range(min(len(source), limit)):
    rec = source[i]
    x = [pre((0, {"image_path": rec[f"image_{s}_path"]}))["image"]
         .mean(-1).ravel() for s in ("a", "b")]
    x = [v - v.mean() for v in x]
    pair_scores.append(float(np.dot(x[0], x[1]) / (
        np.linalg.norm(x[0]) * np.linalg.norm(x[1]) + 1e-8)))
    labels.append(float(rec["label"]))
  return verification.roc_auc(pair_scores, labels)


def verification_report(r: dict[str, np.ndarray], threshold: float) -> dict:
  """Accuracies at `threshold`, AUC, TAR@FAR, per relation and group."""
  score, label = r["score"], r["label"] > 0
  correct = (score >= threshold) == label
  res = {"threshold": threshold, "pairs": int(len(score)),
         "accuracy": float(correct.mean()),
         "auc": verification.roc_auc(score, label),
         "tar_far_1e-2": verification.tar_at_far(score, label, 1e-2),
         "tar_far_1e-3": verification.tar_at_far(score, label, 1e-3),
         "roc": verification.roc_curve(score, label)[:2]}
  names = {v: k for k, v in kin_data.RELATION_LABELS.items()}
  res["relations"] = {
      names[int(k)]: {"pairs": int((r["relation"] == k).sum()),
                      "accuracy": float(correct[r["relation"] == k].mean())}
      for k in np.unique(r["relation"])}
  groups = {}
  for g in np.unique(r["group_a"]):
    sel = r["group_a"] == g
    groups[int(g)] = {"pairs": int(sel.sum()),
                      "accuracy": float(correct[sel].mean())}
  res["groups"] = groups
  if "relation_pred" in r:
    pos = label
    res["relation_acc"] = float((r["relation_pred"][pos] ==
                                 r["relation"][pos]).mean())
  return res


def report_markdown(res: dict, config, name: str) -> str:
  """The Markdown table of a `verification_report` (plus split/step)."""
  m = config.model
  lines = [f"## Kinship verification on {name} (step {res['step']})", "",
           f"model.head={m.head}, model.backbone={m.backbone}, "
           f"loss.name={config.loss.name}, debias.enabled="
           f"{config.debias.enabled}; threshold {res['threshold']:.4f} "
           f"(Youden's J on the validation list, val AUC "
           f"{res['val_auc']:.3f}).", "",
           "| metric | value |", "|---|---|",
           f"| accuracy (all {res['pairs']} pairs, micro) | "
           f"{res['accuracy']:.3f} |",
           f"| ROC AUC | {res['auc']:.3f} |",
           f"| TAR @ FAR 1e-2 | {res['tar_far_1e-2']:.3f} |",
           f"| TAR @ FAR 1e-3 | {res['tar_far_1e-3']:.3f} |"]
  if "relation_acc" in res:
    lines.append(f"| relation-type accuracy (kin pairs) | "
                 f"{res['relation_acc']:.3f} |")
  lines += ["", "| relation | pairs | accuracy |", "|---|---|---|"]
  for rel in kin_data.RELATIONS:
    if rel in res["relations"]:
      v = res["relations"][rel]
      lines.append(f"| {rel} | {v['pairs']} | {v['accuracy']:.3f} |")
  if any(g >= 0 for g in res["groups"]):
    lines += ["", "| group (of face a) | pairs | accuracy |", "|---|---|---|"]
    for g, v in sorted(res["groups"].items()):
      lines.append(f"| {g if g >= 0 else 'unknown'} | {v['pairs']} | "
                   f"{v['accuracy']:.3f} |")
    accs = [v["accuracy"] for g, v in res["groups"].items() if g >= 0]
    lines.append(f"\nGroup accuracy spread (max - min): "
                 f"{max(accs) - min(accs):.3f}")
  return "\n".join(lines) + "\n"
