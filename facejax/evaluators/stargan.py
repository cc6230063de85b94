"""StarGAN evaluation: the per-target report (the separately trained
attribute classifier on translations vs inputs, reconstruction L1) and
one photo's faces translated to every target of every data set
(launch.stargan). `run` is the restored run (facejax.train.loop.Setup)
of a StarGAN task."""

import jax
import numpy as np

from facejax import mesh as mesh_lib
from facejax.data import pipeline
from facejax.data import stargan as sets_lib
from facejax.data.faces import photos
from facejax.evaluators import reports


def input_label(layout, dataset: int) -> np.ndarray:
  """The label of a photo taken as an example of data set `dataset`: its
  first class (RaFD format) or every attribute 0 (CelebA format)."""
  if not 0 <= dataset < layout.num_sets:
    raise ValueError(f"--dataset={dataset}: the run has "
                     f"{layout.num_sets} data set(s)")
  block = layout.blocks[dataset]
  values = 0 if block.format == "rafd" else np.zeros(block.size, np.float32)
  return layout.encode(dataset, values)


def translate_faces(setup, state, crops, warn, dataset: int = 0,
                    crop_size: int = 0):
  """The grid (PIL image): one row per face of `crops`, labelled; `warn`
  is told about photos without a usable face."""
  task = setup.task
  label = input_label(task.layout, dataset)
  pre = sets_lib.AttributeFacePreprocess(setup.config.data.image_size)
  faces, labels = photos.labelled_faces(crops, warn)
  examples = [(dataset, pre((0, {"image": f.crop, "label": label,
                                 "dataset": dataset,
                                 "crop_size": crop_size})))
              for f in faces]
  if not examples:
    raise ValueError("no face to translate in " + ", ".join(crops.paths[:5]))
  return task.translation_grid(jax.device_get(state.gen), examples, labels)


def report(run, state, split: str, out_dir: str) -> str:
  """Per target attribute: classifier accuracy and reconstruction L1.

  For each data set and each of its test-time target settings (hair
  colour set / attribute flipped / expression), every image of the
  split (up to eval.max_images per set) is translated; the separately
  trained classifier is asked for the targeted attribute in the
  translation and, as the baseline, in the untranslated input.
  One compiled program serves every batch and target (padded batches).
  """
  task = run.task
  frozen = run.frozen
  has_clf = task.has_classifier(frozen)
  step_fn = run.compile(task.report_step)
  limit = task.config.eval.max_images
  rows = []
  for k, src in enumerate(task.sources(split)):
    if limit and len(src) > limit:
      src = _Head(src, limit)
    block = task.layout.blocks[k]
    stats = {}
    for batch in pipeline.eval_batches(src, task.preprocess(False),
                                       run.eval_batch,
                                       task.config.data.num_workers):
      for name, j, c_trg in task.layout.target_settings(
          k, batch["label"]):
        inputs = {"image": batch["image"], "label": batch["label"],
                  "target": c_trg, "mask": batch["mask"]}
        out = jax.device_get(step_fn(
            state, frozen, mesh_lib.shard_batch(inputs, run.mesh)))
        keep = out["mask"] > 0
        s = stats.setdefault(name, {"n": 0, "rec": 0.0, "hit": 0,
                                    "base": 0})
        s["n"] += int(keep.sum())
        s["rec"] += float(out["rec"][keep].sum())
        if has_clf:
          s["hit"] += int(out["hit"][keep, j].sum())
          s["base"] += int(out["base"][keep, j].sum())
    for name, s in stats.items():
      rows.append((block.name, name, s))
  return _report_table(rows, split, int(jax.device_get(state.step)),
                       has_clf, out_dir)


def _report_table(rows, split: str, step: int, has_clf: bool,
                  out_dir: str) -> str:
  """The Markdown table (also written to out_dir with a JSON summary)."""
  lines = [f"StarGAN {split} split, step {step}"
           + ("" if has_clf else " (no eval.classifier_workdir: "
              "classifier columns empty)"), "",
           "| data set | target | images | classifier: translated | "
           "classifier: input | rec L1 |",
           "|---|---|---|---|---|---|"]
  summary = {}
  for set_name, name, s in rows:
    n = max(s["n"], 1)
    hit = f"{s['hit'] / n:.3f}" if has_clf else "-"
    base = f"{s['base'] / n:.3f}" if has_clf else "-"
    lines.append(f"| {set_name} | {name} | {s['n']} | {hit} | {base} | "
                 f"{s['rec'] / n:.4f} |")
    summary[f"{set_name}:{name}"] = {
        "images": s["n"], "translated_acc": s["hit"] / n if has_clf
        else None, "input_acc": s["base"] / n if has_clf else None,
        "rec_l1": s["rec"] / n}
  if has_clf and rows:
    for set_name in dict.fromkeys(r[0] for r in rows):
      mine = [s for name, _, s in rows if name == set_name]
      tot = sum(s["n"] for s in mine)
      hit = sum(s["hit"] for s in mine) / max(tot, 1)
      base = sum(s["base"] for s in mine) / max(tot, 1)
      lines.append(f"| {set_name} | mean | {tot} | {hit:.3f} | "
                   f"{base:.3f} | |")
      summary[f"{set_name}:mean"] = {"translated_acc": hit,
                                     "input_acc": base}
    tot = sum(s["n"] for _, _, s in rows)
    hit = sum(s["hit"] for _, _, s in rows) / max(tot, 1)
    base = sum(s["base"] for _, _, s in rows) / max(tot, 1)
    lines.append(f"| all | mean | {tot} | {hit:.3f} | {base:.3f} | |")
    summary["all"] = {"translated_acc": hit, "input_acc": base}
  table = "\n".join(lines) + "\n"
  reports.write_report(out_dir, f"stargan_{split}", table, summary)
  return table


class _Head:
  """The first `n` records of a source."""

  def __init__(self, source, n: int):
    self.source, self.n = source, n

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> dict:
    return self.source[i]
