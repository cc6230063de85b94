"""SphereFace-20 identity network trained with A-Softmax (state-task form).

Data: identity-labelled faces of the two-domain caricature data
(facejax.data.caricature; the synthetic WebCaricature-layout set by
default). `data.domains` picks photos, caricatures or both (the seed
project fine-tuned on caricatures and photos of WebCaricature);
`data.split_by='images'` keeps every identity in train and valid (each
identity's last image per domain is held out), so validation accuracy is
identity classification. The trained workdir is the caricature task's
frozen identity network (config identity.workdir there).

Loss: A-Softmax (m = 4) with the reference's annealed lambda =
max(lambda_min, 1500 / (1 + 0.1 * step)). Evaluation: top-1 accuracy of
the cos-theta logits, and the mean A-Softmax loss.
Weights: `model.init_from` = a sphereface_pytorch .pth (sphere20a keys).
"""

from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from facejax import optim
from facejax.data import caricature as data_lib
from facejax.data import sources
from facejax.models import sphereface as model_lib
from facejax.tasks import base
from facejax.train import state as state_lib
from facejax.train import steps as steps_lib


def resize_to(images: jax.Array, input_size) -> jax.Array:
  """[B, S, S, 3] -> [B, H, W, 3] (the network's input size)."""
  h, w = int(input_size[0]), int(input_size[1])
  if images.shape[1:3] == (h, w):
    return images
  return jax.image.resize(images, (images.shape[0], h, w, 3), "linear")


class Task(base.Task):
  """SphereFace-20 + A-Softmax on identity folders."""

  best_metric = ("accuracy", "max")
  progress_keys = ("loss", "accuracy")
  finite_keys = ("loss",)

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    m = config.model
    for d in config.data.domains:
      if d not in data_lib.DOMAINS:
        raise ValueError(f"config key data.domains: unknown {d!r}; choose "
                         f"from {data_lib.DOMAINS}")
    self.input_size = tuple(int(v) for v in m.input_size)
    self.num_classes = int(m.num_classes) or self._count_identities()
    self.model = model_lib.create(m.variant, self.num_classes, m.margin)
    self.tx, self.schedule = optim.create_optimizer(
        config.optim, config.total_steps, None)

  def _count_identities(self) -> int:
    photo, _ = self._domains("train")
    return len(photo.names)

  # --- identity / shapes -------------------------------------------------
  def meta(self) -> dict[str, Any]:
    m = self.config.model
    return {"task": "sphereface", "variant": m.variant,
            "classes": self.num_classes,
            "input_size": list(self.input_size)}

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    s = self.config.data.image_size
    return {"image": np.zeros((batch_size, s, s, 3), np.float32),
            "identity": np.zeros((batch_size,), np.int32),
            "mask": np.ones((batch_size,), np.float32)}

  def describe(self, state) -> str:
    return (f"SphereFace ({self.config.model.variant}) "
            f"{state_lib.count_params(state.params):,} params, "
            f"{self.num_classes} identities, input {self.input_size}")

  def learning_rate(self, step: int) -> float:
    return float(self.schedule(step))

  # --- state -------------------------------------------------------------
  def init_state(self, rng: jax.Array) -> state_lib.TrainState:
    h, w = self.input_size
    params = self.model.init(rng, jnp.zeros((1, h, w, 3)))["params"]
    return self._state(params)

  def _state(self, params) -> state_lib.TrainState:
    return state_lib.TrainState(step=jnp.zeros((), jnp.int32),
                                params=params, batch_stats={},
                                opt_state=self.tx.init(params))

  def has_import(self) -> bool:
    return bool(self.config.model.get("init_from", ""))

  def import_pretrained(self, state):
    # pylint: disable-next=g-import-not-at-top
    from facejax.convert import sphereface as sphereface_convert
    path = self.config.model.init_from
    logging.info("importing sphereface_pytorch weights from %s", path)
    params = sphereface_convert.load(path, jax.device_get(state.params),
                                    self.input_size)
    return self._state(params)

  def load_frozen(self):
    return base.Frozen()

  # --- networks ----------------------------------------------------------
  def features(self, params, images: jax.Array) -> jax.Array:
    """fc5 features [B, D] of RGB [-1, 1] images (any square size)."""
    return self.model.apply({"params": params},
                            resize_to(images, self.input_size),
                            method=self.model.features)

  def _loss(self, params, batch, step):
    _, cos, phi = self.model.apply(
        {"params": params}, resize_to(batch["image"], self.input_size))
    m = self.config.model
    lamb = model_lib.lambda_at(step.astype(jnp.float32), m.lambda_min)
    per = model_lib.angle_loss(cos, phi, batch["identity"], lamb)
    w = batch["mask"]
    loss = (per * w).sum() / jnp.maximum(w.sum(), 1.0)
    acc = ((jnp.argmax(cos, -1) == batch["identity"]) * w).sum() / (
        jnp.maximum(w.sum(), 1.0))
    return loss, {"accuracy": acc, "lambda": lamb}

  def train_step(self, state, batch, frozen):
    def loss_fn(params, batch_stats, batch, ctx):
      loss, metrics = self._loss(params, batch, ctx.step)
      return loss, (metrics, batch_stats)
    step = steps_lib.supervised_step(loss_fn, self.tx, self.config.seed)
    return step(state, batch, frozen)

  def eval_step(self, state, batch, frozen):
    del frozen
    _, cos, phi = self.model.apply(
        {"params": state.params}, resize_to(batch["image"], self.input_size))
    w = batch["mask"]
    lamb = jnp.float32(self.config.model.lambda_min)
    per = model_lib.angle_loss(cos, phi, batch["identity"], lamb)
    return {"correct": ((jnp.argmax(cos, -1) == batch["identity"]) * w
                        ).sum(),
            "loss": (per * w).sum(), "count": w.sum()}

  @staticmethod
  def summarize(sums) -> dict[str, float]:
    n = max(float(sums["count"]), 1.0)
    return {"accuracy": float(sums["correct"]) / n,
            "loss": float(sums["loss"]) / n, "count": float(sums["count"])}

  # --- data --------------------------------------------------------------
  def data_root(self) -> str:
    return data_lib.data_root(self.config.data)

  def _domains(self, split: str):
    d = self.config.data
    root = self.data_root()
    cfg = ml_collections.ConfigDict(d.to_dict())  # a copy, unlocked
    cfg.root = root
    return data_lib.open_domains(cfg, split)

  def source(self, split: str):
    photo, cari = self._domains(split)
    picked = {"photo": photo, "cari": cari}
    return sources.ConcatSource([picked[d] for d in self.config.data.domains])

  def balance(self, src):
    return src

  def preprocess(self, train: bool) -> data_lib.DomainFacePreprocess:
    return data_lib.face_preprocess(self.config.data, train, self.config.seed)

  def baseline(self, train_src, eval_src) -> dict[str, float]:
    del train_src, eval_src
    return {"chance_accuracy": 1.0 / self.num_classes}

