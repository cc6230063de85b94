"""Age regression: a CNN regressor trained with L1 or MSE on age in years.

The task owns what is model-specific: building the module, initial
variables (from scratch or imported PyTorch weights), the loss, eval
metrics and the data sources. `facejax.train.loop` does the rest.
"""

from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from facejax.data import age as age_data
from facejax.data import transforms
from facejax.models import age_regressor
from facejax.tasks import base

LOSSES = ("l1", "mse")


def _age_loss(pred, target, kind: str):
  if kind == "l1":
    return jnp.abs(pred - target)
  if kind == "mse":
    return jnp.square(pred - target)
  raise ValueError(f"config key loss: unknown {kind!r}; choose one of "
                   f"{LOSSES}")


class Task(base.SupervisedTask):
  """Age regression on an age CSV (or prepared TFDS) data set."""

  best_metric = ("mae", "min")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = age_regressor.create(config.model, config.optim.freeze)
    if config.loss not in LOSSES:
      raise ValueError(f"config key loss: unknown {config.loss!r}; choose "
                       f"one of {LOSSES}")

  # --- identity / shapes -------------------------------------------------
  def meta(self) -> dict[str, Any]:
    """What a workdir's checkpoints are; a mismatch refuses to resume."""
    return {"task": self.config.task, "model": self.config.model.name,
            "backbone": self.config.model.backbone}

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    size = self.config.data.image_size
    return {"image": np.zeros((batch_size, size, size, 3), np.float32),
            "age": np.zeros((batch_size,), np.float32),
            "mask": np.ones((batch_size,), np.float32)}

  def last_block_prefixes(self) -> tuple[str, ...]:
    return age_regressor.last_block_prefixes(self.model)

  # --- variables ---------------------------------------------------------
  def init_variables(self, rng: jax.Array) -> dict[str, Any]:
    batch = self.dummy_batch(1)
    variables = self.model.init({"params": rng, "dropout": rng},
                                jnp.asarray(batch["image"]), train=False)
    return {"params": variables["params"],
            "batch_stats": variables.get("batch_stats", {})}

  def import_variables(self, variables: dict[str, Any]) -> dict[str, Any]:
    """Applies config.model.init_from (PyTorch/safetensors weights)."""
    path = self.config.model.get("init_from", "")
    if not path:
      return variables
    from facejax.convert import imagenet  # pylint: disable=g-import-not-at-top
    arch = "vgg" if self.config.model.backbone.startswith("vgg") else "resnet"
    logging.info("importing %s weights from %s", arch, path)
    kwargs = {}
    if arch == "resnet":
      # A trained 1-unit PyTorch regressor's fc predicts the age itself;
      # this model adds age_scale / age_shift on top of its head.
      m = self.config.model
      kwargs["head_affine"] = (float(m.get("age_scale", 30.0)),
                               float(m.get("age_shift", 50.0)))
    return imagenet.load_pretrained(path, variables, arch, **kwargs)

  # --- train / eval ------------------------------------------------------
  def loss_fn(self, params, batch_stats, batch, rng):
    variables = {"params": params}
    mutable = []
    if batch_stats:
      variables["batch_stats"] = batch_stats
      mutable = ["batch_stats"]
    (pred, _), new_vars = self.model.apply(
        variables, batch["image"], train=True, rngs={"dropout": rng},
        mutable=mutable)
    mask = batch["mask"]
    per_example = _age_loss(pred, batch["age"], self.config.loss)
    denom = jnp.maximum(mask.sum(), 1.0)
    loss = (per_example * mask).sum() / denom
    mae = (jnp.abs(pred - batch["age"]) * mask).sum() / denom
    # Cheap fingerprints of the batch contents: logged, they show that a
    # resumed run reads the same batches as an uninterrupted one.
    fingerprint = {"age_mean": (batch["age"] * mask).sum() / denom,
                   "image_mean": batch["image"].mean()}
    return loss, ({"mae": mae, **fingerprint},
                  new_vars.get("batch_stats", batch_stats))

  def forward(self, params, batch_stats, images):
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    pred, feats = self.model.apply(variables, images, train=False)
    return pred, feats

  def eval_fn(self, params, batch_stats, batch) -> dict[str, jax.Array]:
    """Per-batch sums; the loop adds them up over the split."""
    pred, _ = self.forward(params, batch_stats, batch["image"])
    err = jnp.abs(pred - batch["age"]) * batch["mask"]
    return {"abs_err": err.sum(), "sq_err": (err**2).sum(),
            "count": batch["mask"].sum()}

  @staticmethod
  def summarize(sums: dict[str, np.ndarray]) -> dict[str, float]:
    count = max(float(sums["count"]), 1.0)
    return {"mae": float(sums["abs_err"]) / count,
            "rmse": float(np.sqrt(sums["sq_err"] / count)),
            "count": float(sums["count"])}

  # --- data --------------------------------------------------------------
  def data_root(self) -> str:
    return age_data.data_root(self.config.data)

  def source(self, split: str):
    return age_data.source(self.config.data, split)

  def balance(self, src):
    """The age-balanced sampler (config data.balance), logged."""
    return age_data.balance(src, self.config.data.balance, self.config.seed)

  def preprocess(self, train: bool) -> transforms.Preprocess:
    cfg = self.config.data
    aug = None
    if train and cfg.augment.enabled:
      aug = transforms.Augment(
          flip=cfg.augment.flip, rotate_deg=cfg.augment.rotate_deg,
          scale_jitter=cfg.augment.scale_jitter,
          color_jitter=cfg.augment.color_jitter)
    return transforms.Preprocess(
        image_size=cfg.image_size, normalize=cfg.normalize,
        crop_fraction=cfg.crop_fraction, augment=aug,
        seed=self.config.seed, skip_bad=cfg.skip_bad_records,
        label_keys=("age",))

  def baseline(self, train_src, eval_src) -> dict[str, float]:
    """MAE of always predicting the training mean age (NaN if unknown)."""
    if hasattr(train_src, "ages") and hasattr(eval_src, "ages"):
      return {"baseline_mae": float(np.mean(np.abs(
          eval_src.ages - train_src.ages.mean())))}
    return {"baseline_mae": float("nan")}
