"""DEX: age as 101-way classification, read out as the softmax expectation.

Rothe et al. (ICCVW 2015): VGG-16 with a 101-way head (ages 0..100),
trained with cross-entropy on the age bin; the apparent age is
E[age] = sum_i i * softmax(z)_i. Inputs follow the released Caffe model:
BGR, 0..255, Caffe mean subtracted (`data.normalize='caffe_bgr'`), 224 px.

Data, sources, balancing, preprocessing, eval sums and the predict-the-mean
baseline are those of the age regression task; this task changes the
model, the loss and the import of the official weights.
"""

from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections

from facejax.tasks import frozen
from facejax.models import vgg
from facejax.tasks import age_regressor

# model.backbone -> facejax.models.vgg variant
BACKBONES = {"vgg16": "vgg16", "vgg_tiny": "tiny"}


def check_loss_config(cfg: ml_collections.ConfigDict) -> None:
  """config.loss: {label_smoothing in [0, 1), sigma >= 0}."""
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ValueError(f"config key loss: DEX needs a section with "
                     f"label_smoothing and sigma, got {cfg!r}")
  smoothing = cfg.get("label_smoothing", 0.0)
  if not 0.0 <= smoothing < 1.0:
    raise ValueError(f"config key loss.label_smoothing: must be in [0, 1), "
                     f"got {smoothing}")
  sigma = cfg.get("sigma", 0.0)
  if sigma < 0:
    raise ValueError(f"config key loss.sigma: must be >= 0 (0: one-hot "
                     f"labels), got {sigma}")


def age_targets(age: jax.Array, num_ages: int, label_smoothing: float = 0.0,
                sigma: float = 0.0) -> jax.Array:
  """Training targets [B, num_ages] for ages in years.

  sigma = 0: one-hot on the rounded age (clipped to 0..num_ages-1);
  sigma > 0: a Gaussian of that width over the bins (soft labels).
  Label smoothing then mixes in the uniform distribution.
  """
  if sigma > 0:
    target = frozen.soft_age_labels(age, sigma, num_ages)
  else:
    bins = jnp.clip(jnp.round(age), 0, num_ages - 1).astype(jnp.int32)
    target = jax.nn.one_hot(bins, num_ages, dtype=jnp.float32)
  if label_smoothing:
    target = (1.0 - label_smoothing) * target + label_smoothing / num_ages
  return target


class Task(age_regressor.Task):
  """DEX age classifier on an age CSV (or prepared TFDS) data set."""

  best_metric = ("mae", "min")
  progress_keys = ("loss", "mae")

  # pylint: disable-next=super-init-not-called
  def __init__(self, config: ml_collections.ConfigDict):
    # The regressor's __init__ builds its own model and checks a string
    # loss; everything else (data, eval, baseline) is shared.
    self.config = config
    m = config.model
    if m.backbone not in BACKBONES:
      raise ValueError(f"config key model.backbone: unknown {m.backbone!r} "
                       f"for DEX; choose one of {sorted(BACKBONES)}")
    check_loss_config(config.loss)
    self.model = vgg.create_dex(
        BACKBONES[m.backbone], dtype=jnp.dtype(m.get("dtype", "float32")),
        dropout_rate=m.get("dropout", 0.5),
        conv_impl=m.get("conv_impl", "auto"))
    self.num_ages = self.model.num_ages

  def meta(self) -> dict[str, Any]:
    return {"task": self.config.task, "model": self.config.model.name,
            "backbone": self.config.model.backbone}

  def last_block_prefixes(self) -> tuple[str, ...]:
    return tuple(f"backbone/{p}" for p in vgg.VGG.last_block) + ("head",)

  # --- variables ---------------------------------------------------------
  def init_variables(self, rng: jax.Array) -> dict[str, Any]:
    image = jnp.asarray(self.dummy_batch(1)["image"])
    variables = self.model.init({"params": rng, "dropout": rng}, image,
                                train=False)
    return {"params": variables["params"], "batch_stats": {}}

  def import_variables(self, variables: dict[str, Any]) -> dict[str, Any]:
    """config.model.init_from: official DEX weights or an ImageNet VGG.

    A file with `fc8_101` (DEX) fills every layer including the age head;
    any other VGG-16 state dict (e.g. torchvision ImageNet weights) fills
    the convs and fc6/fc7 and leaves the head at its initialisation.
    """
    path = self.config.model.get("init_from", "")
    if not path:
      return variables
    # pylint: disable=g-import-not-at-top
    from facejax.convert import dex as dex_import
    from facejax.convert import imagenet
    from facejax.convert import torch_pickle
    # pylint: enable=g-import-not-at-top
    state_dict = torch_pickle.read_state_dict(path)
    if any(k.split(".")[0].replace("-", "_") == dex_import.DEX_HEAD_KEY
           for k in state_dict):
      logging.info("importing DEX weights (with fc8_101) from %s", path)
      imported = dex_import.dex_from_torch(state_dict, variables, source=path)
    else:
      logging.info("importing VGG weights (no DEX head) from %s", path)
      imported = imagenet.vgg_from_torch(
          state_dict, variables, prefix="backbone", head="head",
          head_key="fc8", source=path)
    # Flattening drops the empty batch_stats collection (VGG has no BN).
    return {"params": imported["params"], "batch_stats": {}}

  # --- train / eval ------------------------------------------------------
  def logits(self, params, batch_stats, images, train: bool = False,
             rng=None):
    """(logits [B, 101], fc7 features [B, C])."""
    del batch_stats  # VGG has no BatchNorm
    rngs = {"dropout": rng} if rng is not None else {}
    return self.model.apply({"params": params}, images, train=train,
                            rngs=rngs)

  def forward(self, params, batch_stats, images):
    """(expected age [B] in years, fc7 features [B, C])."""
    logits, feats = self.logits(params, batch_stats, images)
    return frozen.expected_age(logits), feats

  def loss_fn(self, params, batch_stats, batch, rng):
    cfg = self.config.loss
    logits, _ = self.logits(params, batch_stats, batch["image"], train=True,
                            rng=rng)
    target = age_targets(batch["age"], self.num_ages,
                         cfg.get("label_smoothing", 0.0),
                         cfg.get("sigma", 0.0))
    per_example = -(target * jax.nn.log_softmax(logits)).sum(-1)
    mask = batch["mask"]
    denom = jnp.maximum(mask.sum(), 1.0)
    loss = (per_example * mask).sum() / denom
    pred = frozen.expected_age(logits)
    mae = (jnp.abs(pred - batch["age"]) * mask).sum() / denom
    bins = jnp.clip(jnp.round(batch["age"]), 0, self.num_ages - 1)
    acc = ((logits.argmax(-1) == bins) * mask).sum() / denom
    metrics = {"mae": mae, "acc": acc,
               "age_mean": (batch["age"] * mask).sum() / denom,
               "image_mean": batch["image"].mean()}
    return loss, (metrics, batch_stats)
