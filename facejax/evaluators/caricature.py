"""Caricature translation evaluation: the report table and style grids.

Per direction (photo2cari, cari2photo) on a split's subjects: FID-small
(facejax.evaluators.fid) of translations against real target-domain
images, with the untranslated baseline; the identity cosine of source and
translation; cross-domain verification (TAR at FAR 0.1% / 1% and ROC AUC,
facejax.evaluators.verification's definitions; the WebCaricature
protocol's metrics) of translated vs real target-domain images; and a
probe discriminator's held-out cross-entropy (facejax.evaluators.probe).

Every function takes a `setup` whose task is a caricature task
(facejax.tasks.caricature): its translator, its frozen identity network
and its data.
"""

import weakref

import jax
import numpy as np

from facejax import mesh as mesh_lib
from facejax.data import caricature as data_lib
from facejax.data import pipeline
from facejax.evaluators import fid as fid_lib
from facejax.evaluators import probe as probe_lib
from facejax.evaluators import reports
from facejax.evaluators import verification as verification_lib
from facejax.models import layers

# Compiled per-image functions of each setup: {setup: {key: fn}}.
_COMPILED = weakref.WeakKeyDictionary()


def _has_identity(frozen) -> bool:
  """Whether the frozen networks hold an identity network
  (facejax.tasks.frozen's `Identity`, with its variables; `NoIdentity` has
  none). Duck-typed: evaluators import no task module."""
  return hasattr(frozen, "variables")


def _unit(x: np.ndarray) -> np.ndarray:
  return np.asarray(layers.l2_normalize(x))


def verification(emb_a: np.ndarray, id_a: np.ndarray, emb_b: np.ndarray,
                 id_b: np.ndarray) -> dict[str, float]:
  """All (a, b) pairs: TAR@FAR 0.1% / 1% and AUC of cosine scores
  (identities < 0 are unknown: in no pair)."""
  scores = _unit(emb_a) @ _unit(emb_b).T
  same = id_a[:, None] == id_b[None, :]
  known = (id_a[:, None] >= 0) & (id_b[None, :] >= 0)
  pos, neg = scores[same & known], scores[~same & known]
  if not len(pos) or not len(neg):
    return {"tar@far0.1%": float("nan"), "tar@far1%": float("nan"),
            "auc": float("nan"), "pairs": 0}
  pairs = verification_lib.from_pos_neg(pos, neg)
  return {"tar@far0.1%": verification_lib.tar_at_far(*pairs, 0.001),
          "tar@far1%": verification_lib.tar_at_far(*pairs, 0.01),
          "auc": verification_lib.roc_auc(*pairs),
          "pairs": int(len(pos) + len(neg)),
          "mean_pos": float(pos.mean()), "mean_neg": float(neg.mean())}


def split_outputs(setup, state, src, direction: str | None,
                  images: bool = False) -> dict[str, np.ndarray]:
  """Per image of `src` (translated by `direction`, or not): 'ids', 'fid'
  features, 'emb' (identity embedding, with an identity network) and,
  with `images`, the [-1, 1] 'image's themselves."""
  task = setup.task
  e = task.config.eval
  feat_fn = (fid_lib.random_features_fn() if e.fid_features == "random"
             else None)
  has_id = _has_identity(setup.frozen)
  key = ("report", direction, images)

  def fn(st, frozen, batch):
    x = batch["image"]
    if direction is not None:
      x = task.translate(st.gen, st.gen_stats, x, direction,
                         task.eval_styles(x.shape[0]))
    out = {"mask": batch["mask"]}
    if has_id:
      out["emb"] = task.embed(frozen, x)
    out["fid"] = (feat_fn(x) if feat_fn is not None else
                  task.embed(frozen, x))
    if images:
      out["image"] = x
    return out

  compiled = _COMPILED.setdefault(setup, {})
  if key not in compiled:
    compiled[key] = setup.compile(fn)
  step_fn = compiled[key]
  limit = e.max_images
  if limit and len(src) > limit:
    src = data_lib.DomainSource(src.paths[:limit],
                                src.identities[:limit], src.names,
                                src.points[:limit], src.domain)
  parts = {}
  for batch in pipeline.eval_batches(src, task.face_preprocess(False),
                                     setup.eval_batch,
                                     task.config.data.num_workers):
    out = jax.device_get(step_fn(state, setup.frozen, mesh_lib.shard_batch(
        {"image": batch["image"], "mask": batch["mask"]}, setup.mesh)))
    keep = out.pop("mask") > 0
    out["ids"] = batch["identity"]
    for k, v in out.items():
      parts.setdefault(k, []).append(np.asarray(v)[keep])
  return {k: np.concatenate(v) for k, v in parts.items()}


def discriminability(setup, state, direction: str,
                     split: str = "test") -> dict[str, float]:
  """How well a fresh probe discriminator tells translated from real.

  A fresh `ProbeNet` (config eval.probe: fixed seeds, steps, batch, lr)
  learns real target-domain images vs `direction`'s translations of the
  *train* subjects, and is scored on the subjects of `split` (test or
  valid: identities it never saw). See `probe.probe_discriminator`.
  """
  if split == "train":
    raise ValueError("the probe discriminator is scored on held-out "
                     "subjects: split 'valid' or 'test'")
  task = setup.task
  src, dst = data_lib.DIRECTIONS[direction]
  sets = {}
  for part in ("train", split):
    domains = dict(zip(data_lib.DOMAINS, task.domains(part)))
    fake = split_outputs(setup, state, domains[src], direction,
                         images=True)["image"]
    real = split_outputs(setup, state, domains[dst], None,
                         images=True)["image"]
    sets[part] = (real, fake)
  return probe_lib.probe_discriminator(*sets["train"], *sets[split],
                                       task.config.eval.probe)


def evaluate_translation(setup, state, split: str = "test",
                         probe: bool = True) -> dict[str, dict[str, float]]:
  """{row: metrics} for both directions and the untranslated baselines."""
  task = setup.task
  if task.config.eval.fid_features == "identity" and not _has_identity(
      setup.frozen):
    raise ValueError("config key eval.fid_features='identity' needs an "
                     "identity network (identity.source)")
  photo, cari = task.domains(split)
  real = {"photo": split_outputs(setup, state, photo, None),
          "cari": split_outputs(setup, state, cari, None)}
  rows = {}
  for direction, (src, dst) in data_lib.DIRECTIONS.items():
    fake = split_outputs(setup, state, {"photo": photo, "cari": cari}[src],
                         direction)
    row = {"fid_small": fid_lib.fid(fake["fid"], real[dst]["fid"]),
           "fid_small_untranslated": fid_lib.fid(real[src]["fid"],
                                                 real[dst]["fid"]),
           "images": int(len(fake["fid"]))}
    if "emb" in fake:
      cos = np.sum(_unit(fake["emb"]) * _unit(real[src]["emb"]), axis=1)
      row["id_cos"] = float(cos.mean())
      # Translated source images verified against real target images.
      row.update(verification(fake["emb"], fake["ids"], real[dst]["emb"],
                              real[dst]["ids"]))
    if probe and split != "train" and task.config.eval.probe.steps:
      row.update(discriminability(setup, state, direction, split))
    rows[direction] = row
  if "emb" in real["photo"]:
    rows["real cari vs real photo"] = verification(
        real["cari"]["emb"], real["cari"]["ids"], real["photo"]["emb"],
        real["photo"]["ids"])
  return rows


def report(setup, state, split: str, out_dir: str) -> str:
  """The Markdown evaluation table (also written to out_dir as
  caricature_<split>.{md,json})."""
  rows = evaluate_translation(setup, state, split)
  table = report_table(setup.task, rows, split,
                       int(jax.device_get(state.step)))
  reports.write_report(out_dir, f"caricature_{split}", table, rows)
  return table


def report_table(task, rows: dict[str, dict[str, float]], split: str,
                 step: int) -> str:
  """Markdown table of `evaluate_translation` rows of `task`'s run."""
  e = task.config.eval
  name = fid_lib.NAMES[e.fid_features]
  lines = [f"Caricature translation, {split} subjects, step {step}. "
           f"{name}; identity cos = cosine of the "
           f"{task.config.identity.source} {task.identity_name} of source "
           f"and translation; verification of translated images against "
           f"real images of the target domain (all pairs). Probe D: a "
           f"fresh small conv discriminator ({e.probe.steps} steps, "
           f"{len(e.probe.seeds)} seeds) trained on train subjects' real "
           f"vs translated images, scored on the {split} subjects: "
           f"held-out cross-entropy (chance ln 2 = {np.log(2):.3f}) and "
           f"discriminability 1 - CE / ln 2 (0 = chance, 1 = perfect).",
           "",
           "| direction | images | FID-small | FID-small untranslated | "
           "identity cos | TAR@FAR 0.1% | TAR@FAR 1% | AUC | probe D CE | "
           "probe D acc | discriminability |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  fmt = lambda r, k: (f"{r[k]:.3f}" if k in r and np.isfinite(r[k])
                      else "-")
  for key, r in rows.items():
    lines.append(f"| {key} | {r.get('images', '-')} | "
                 f"{fmt(r, 'fid_small')} | "
                 f"{fmt(r, 'fid_small_untranslated')} | "
                 f"{fmt(r, 'id_cos')} | {fmt(r, 'tar@far0.1%')} | "
                 f"{fmt(r, 'tar@far1%')} | {fmt(r, 'auc')} | "
                 f"{fmt(r, 'probe_ce')} | {fmt(r, 'probe_acc')} | "
                 f"{fmt(r, 'discriminability')} |")
  return "\n".join(lines) + "\n"


def translate_file(setup, state, image_path: str, direction: str,
                   num_styles: int, seed: int = 0, landmarks: str = ""):
  """The style grid (PIL image) of one image file (launch.caricature)."""
  points = (data_lib.read_landmarks(landmarks) if landmarks
            else np.full((5, 2), np.nan, np.float32))
  return translate_records(setup, state, [{
      "image_path": image_path, "identity": np.int32(-1), "points": points}],
      direction, num_styles, seed)


def translate_records(setup, state, records: list[dict], direction: str,
                      num_styles: int, seed: int = 0, row_labels=None):
  """The style grid of face records: {'image_path', 'points'} (aligned here
  when the points are finite) or {'image'} (a face already cropped)."""
  if num_styles < 1:
    raise ValueError(f"--styles={num_styles}: need at least 1")
  task = setup.task
  pre = task.face_preprocess(False)
  images = [pre((0, dict({"identity": np.int32(-1)}, **r)))["image"]
            for r in records]
  return task.style_grid(jax.device_get(state.gen),
                         jax.device_get(state.gen_stats), images,
                         direction, num_styles, seed, row_labels)
