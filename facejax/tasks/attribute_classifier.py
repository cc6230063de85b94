"""Attribute classifier on the real images of StarGAN's data sets.

A supervised task (a `facejax.tasks.base.SupervisedTask`) over
the same `data.sets` as StarGAN, with the same labels: one CNN with one
output per attribute/class of every data set and the masked loss (BCE on
CelebA-format blocks, softmax CE on RaFD-format blocks, only the
example's own block). StarGAN's evaluation uses it, frozen, to check that
translated images show the requested attribute - never the
discriminator, which was trained together with the generator.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from facejax.data import stargan as sets_lib
from facejax.data import sources
from facejax.models import age_regressor
from facejax.models import attribute_classifier as model_lib
from facejax.tasks import base


class Task(base.SupervisedTask):
  """Masked multi-data-set attribute classification."""

  best_metric = ("acc", "max")
  progress_keys = ("loss", "acc")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.layout = sets_lib.make_layout(config.data)
    m = config.model
    dtype = jnp.dtype(m.get("dtype", "float32"))
    if m.backbone == "small_cnn":
      backbone = model_lib.SmallCNN(
          tuple(m.get("widths", model_lib.SmallCNN.widths)), dtype,
          m.get("conv_impl", "auto"))
    else:
      backbone = age_regressor.create_backbone(
          m.backbone, dtype=dtype, conv_impl=m.get("conv_impl", "auto"))
    self.model = model_lib.AttributeNet(backbone, self.layout.cls_dim)

  def meta(self) -> dict[str, Any]:
    return {"task": "attribute_classifier",
            "backbone": self.config.model.backbone,
            "labels": self.layout.to_json()}

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    return sets_lib.dummy_batch(self.layout, self.config.data.image_size,
                                batch_size)

  def last_block_prefixes(self) -> tuple[str, ...]:
    last = getattr(self.model.backbone, "last_block", ())
    return tuple(f"backbone/{p}" for p in last)

  def init_variables(self, rng: jax.Array) -> dict[str, Any]:
    x = jnp.asarray(self.dummy_batch(1)["image"])
    variables = self.model.init(rng, x, train=False)
    return {"params": variables["params"],
            "batch_stats": variables.get("batch_stats", {})}

  def forward(self, params, batch_stats, images):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    return self.model.apply(variables, images, train=False)

  def loss_fn(self, params, batch_stats, batch, rng):
    del rng
    variables, mutable = {"params": params}, []
    if batch_stats:
      variables["batch_stats"] = batch_stats
      mutable = ["batch_stats"]
    (logits, _), new_vars = self.model.apply(
        variables, batch["image"], train=True, mutable=mutable)
    w = batch["mask"]
    per_example = sets_lib.masked_cls_loss(logits, batch["label"],
                                           self.layout)
    loss = (per_example * w).sum() / jnp.maximum(w.sum(), 1.0)
    cols = sets_lib.active_columns(batch["label"], self.layout) * w[:, None]
    ok = sets_lib.block_correct(logits, batch["label"], self.layout)
    acc = (ok * cols).sum() / jnp.maximum(cols.sum(), 1.0)
    return loss, ({"acc": acc}, new_vars.get("batch_stats", batch_stats))

  def eval_fn(self, params, batch_stats, batch) -> dict[str, jax.Array]:
    """Per-column sums: correct and counted (active block, real rows)."""
    logits, _ = self.forward(params, batch_stats, batch["image"])
    w = batch["mask"]
    cols = sets_lib.active_columns(batch["label"], self.layout) * w[:, None]
    ok = sets_lib.block_correct(logits, batch["label"], self.layout) * cols
    return {"correct": ok.sum(0), "counted": cols.sum(0),
            "count": w.sum()}

  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    correct, counted = np.asarray(sums["correct"]), np.asarray(
        sums["counted"])
    out = {"acc": float(correct.sum() / max(counted.sum(), 1.0)),
           "count": float(sums["count"])}
    for block in self.layout.blocks:
      if block.format == "rafd":  # every column holds the class accuracy
        j = block.offset
        out[f"{block.name}/class"] = float(correct[j] / max(counted[j], 1))
        continue
      for i, name in enumerate(block.names):
        j = block.offset + i
        out[f"{block.name}/{name}"] = float(correct[j] / max(counted[j], 1))
    return out

  # --- data (the same sets and preprocessing as StarGAN) -----------------
  def data_root(self) -> str:
    sets_lib.ensure_synthetic(self.config.data)
    return self.config.data.root or "."

  def source(self, split: str):
    self.data_root()
    return sources.ConcatSource([
        sets_lib.open_source(self.config.data, self.layout, k, split)
        for k in range(self.layout.num_sets)])

  def balance(self, src):
    return src

  def preprocess(self, train: bool) -> sets_lib.AttributeFacePreprocess:
    d = self.config.data
    return sets_lib.AttributeFacePreprocess(d.image_size, flip=train and d.flip,
                                   seed=self.config.seed)

  def baseline(self, train_src, eval_src) -> dict[str, float]:
    """Accuracy of always predicting the training majority per column."""
    del eval_src
    labels = np.stack([train_src[i]["label"] for i in range(len(train_src))])
    correct = counted = 0.0
    for k, block in enumerate(self.layout.blocks):
      rows = labels[np.asarray(self.layout.active(labels, k))][:, block.slice]
      if not len(rows):
        continue
      if block.format == "rafd":
        correct += rows.sum(0).max() * block.size
      else:
        correct += np.maximum(rows.sum(0), len(rows) - rows.sum(0)).sum()
      counted += rows.size
    return {"baseline_acc": float(correct / max(counted, 1.0))}
