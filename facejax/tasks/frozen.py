"""Networks used frozen inside another model's loss or evaluation.

Each loader reads a trained run (facejax.runs) or official weights and
returns host variables that the loop passes to the jitted steps as the
task's `frozen` argument (never optimised, never baked in as constants):
  age estimators       the age transformer's age loss (`load_estimator`)
  embedding networks   kinship's model.backbone='frozen' and the caricature
                       translator's SwinFace identity network
                       (`load_frozen_embedding`)
  identity networks    the caricature translator's identity loss
                       (`load_identity`: SphereFace or SwinFace)
  classifiers          StarGAN's evaluation: an attribute_classifier run
                       (`load_classifier`)

Age estimators. An estimator turns images into a distribution over the
ages 0..100. The age transformer (HRFAE) trains its generator with the
cross-entropy of a frozen DEX classifier on the edited image against the
target age; a regressor (e.g. the ResNet34 age regressor) can stand in for
DEX by spreading its continuous prediction over the age bins with a
Gaussian (`soft_age_labels`).

  est = load_estimator(config.age_loss)
  frozen = est.variables                      # passed to the jitted step
  logp = est.log_probs(frozen, images)        # [B, 101], inside the loss
  age = est.age(frozen, images)               # [B]

`images` are NHWC float32 RGB in [0, 1] at any size. The estimator crops,
resizes and normalises them the way its own training data was prepared,
all in JAX, so gradients flow back to the images; its own variables never
receive gradients (stop_gradient) and BatchNorm runs in inference mode.

The `age_loss` config section (see `default_age_loss_config`):
  estimator  'dex' | 'regressor'
  workdir    a facejax training workdir of a `dex` or `age_regression` run
             (its config.json and best, else latest, checkpoint)
  weights    dex only: the official DEX PyTorch weights (.pth) instead
  sigma      regressor only: Gaussian width in years over the age bins
"""

import dataclasses
import json
import os
from typing import Any, Callable

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from facejax.models import age_regressor
from facejax.models import swinface

NUM_AGES = 101  # ages 0..100, DEX's fc8_101
ESTIMATORS = ("dex", "regressor")
# Per-channel statistics matching facejax.data.transforms.normalize.
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
_NORMALIZATIONS = ("imagenet", "unit", "caffe_bgr")
# config.task of a workdir each estimator accepts
_WORKDIR_TASKS = {"dex": "dex", "regressor": "age_regression"}


def default_age_loss_config() -> ml_collections.ConfigDict:
  """The `age_loss` config section (include it in a model's config)."""
  c = ml_collections.ConfigDict()
  c.estimator = "dex"  # dex | regressor
  c.workdir = ""       # training workdir of a dex / age_regression run
  c.weights = ""       # dex only: official DEX .pth (instead of a workdir)
  c.sigma = 3.0        # regressor: Gaussian width (years) over the age bins
  return c


# ---------------------------------------------------------------------------
# Distributions over the age bins.
# ---------------------------------------------------------------------------


def _gaussian_logits(age: jax.Array, sigma, num_bins: int) -> jax.Array:
  bins = jnp.arange(num_bins, dtype=jnp.float32)
  age = jnp.asarray(age, jnp.float32)
  return -jnp.square(bins - age[..., None]) / (2.0 * jnp.square(sigma))


def soft_age_labels(age: jax.Array, sigma: float,
                    num_bins: int = NUM_AGES) -> jax.Array:
  """Gaussian over the integer ages 0..num_bins-1 centred at `age`.

  Args:
    age: [B] ages in years (continuous; differentiable).
    sigma: width in years (> 0).
    num_bins: number of age bins.

  Returns:
    [B, num_bins] probabilities summing to 1, peaking at the bin nearest
    to `age` (clipped to the range).
  """
  return jax.nn.softmax(_gaussian_logits(age, sigma, num_bins), axis=-1)


def soft_age_log_probs(age: jax.Array, sigma: float,
                       num_bins: int = NUM_AGES) -> jax.Array:
  """log(soft_age_labels(...)), computed stably (no log of 0)."""
  return jax.nn.log_softmax(_gaussian_logits(age, sigma, num_bins), axis=-1)


def expected_age(logits: jax.Array) -> jax.Array:
  """DEX's apparent age: sum_i i * softmax(logits)_i.  [B, K] -> [B]."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return probs @ jnp.arange(logits.shape[-1], dtype=jnp.float32)


# ---------------------------------------------------------------------------
# Input transform (JAX, differentiable).
# ---------------------------------------------------------------------------


def normalize(images: jax.Array, mode: str) -> jax.Array:
  """RGB in [0, 1] -> network input, as facejax.data.transforms.normalize."""
  if mode == "imagenet":
    return (images - _IMAGENET_MEAN) / _IMAGENET_STD
  if mode == "unit":
    return images * 2.0 - 1.0
  if mode == "caffe_bgr":  # BGR, 0..255, Caffe mean subtracted
    return images[..., ::-1] * 255.0 - _CAFFE_MEAN_BGR
  raise ValueError(f"unknown normalization {mode!r}; choose one of "
                   f"{_NORMALIZATIONS}")


def crop_and_resize(images: jax.Array, size: int,
                    crop_fraction: float = 1.0) -> jax.Array:
  """Central square crop (fraction of the shorter side), bilinear resize.

  The same box as facejax.data.transforms.Preprocess, so an estimator sees
  what its training data looked like. Antialiased when shrinking, as PIL.

  Args:
    images: [B, H, W, C].
    size: output side.
    crop_fraction: kept fraction of the shorter side.

  Returns:
    [B, size, size, C] float32.
  """
  images = jnp.asarray(images, jnp.float32)
  _, h, w, c = images.shape
  side = min(h, w) * crop_fraction
  if h == w == size and crop_fraction == 1.0:
    return images
  scale = size / side
  # Output pixel o samples the input at (o - t) / scale: t maps the crop
  # box's corner (w - side) / 2 to 0.
  translation = jnp.array([-(h - side) / 2 * scale, -(w - side) / 2 * scale],
                          jnp.float32)
  return jax.image.scale_and_translate(
      images, (images.shape[0], size, size, c), (1, 2),
      jnp.array([scale, scale], jnp.float32), translation, "linear",
      antialias=True)


# ---------------------------------------------------------------------------
# The estimator.
# ---------------------------------------------------------------------------

# (variables, normalised images) -> (age [B], log_probs [B, 101], feats)
ForwardFn = Callable[[Any, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]


@flax.struct.dataclass
class FrozenEstimator:
  """Frozen variables plus a static forward function and input transform.

  A pytree whose only leaves are `variables`, so it may itself be passed
  through `jax.jit`; the methods take the variables explicitly so a train
  step can receive them as an argument (never baked in as constants).
  """
  variables: Any
  forward: ForwardFn = flax.struct.field(pytree_node=False)
  kind: str = flax.struct.field(pytree_node=False)
  image_size: int = flax.struct.field(pytree_node=False)
  normalization: str = flax.struct.field(pytree_node=False)
  crop_fraction: float = flax.struct.field(pytree_node=False, default=1.0)
  source: str = flax.struct.field(pytree_node=False, default="")

  def prepare(self, images: jax.Array) -> jax.Array:
    """[B, H, W, 3] RGB in [0, 1] -> the network's input."""
    x = crop_and_resize(images, self.image_size, self.crop_fraction)
    return normalize(x, self.normalization)

  def _run(self, variables, images):
    variables = jax.lax.stop_gradient(variables)
    return self.forward(variables, self.prepare(images))

  def log_probs(self, variables, images: jax.Array) -> jax.Array:
    """[B, 101] log-probabilities over the ages 0..100."""
    return self._run(variables, images)[1]

  def age(self, variables, images: jax.Array) -> jax.Array:
    """[B] estimated age in years."""
    return self._run(variables, images)[0]

  def features(self, variables, images: jax.Array) -> jax.Array:
    """[B, C] penultimate features (DEX fc7, the regressor's pooled ones)."""
    return self._run(variables, images)[2]


def photo_ages(estimator: FrozenEstimator) -> Callable:
  """uint8 [B, H, W, 3] face crops -> numpy ages, through `estimator`
  (jitted once; the crops are scaled to [0, 1] as its `age` expects)."""
  age_fn = jax.jit(estimator.age)

  def predict(images):
    return np.asarray(age_fn(estimator.variables,
                             np.asarray(images, np.float32) / 255.0))
  return predict


def _dex_forward(apply_logits: Callable) -> ForwardFn:
  def forward(variables, x):
    logits, feats = apply_logits(variables, x)
    return (expected_age(logits), jax.nn.log_softmax(logits, axis=-1),
            feats)
  return forward


def _regressor_forward(apply_age: Callable, sigma: float) -> ForwardFn:
  def forward(variables, x):
    age, feats = apply_age(variables, x)
    return age, soft_age_log_probs(age, sigma), feats
  return forward


def _check(cfg: ml_collections.ConfigDict) -> None:
  """Validates the age_loss section; errors name the key."""
  unknown = set(cfg.keys()) - set(default_age_loss_config().keys())
  if unknown:
    logging.info("age_loss: ignoring keys %s", sorted(unknown))
  kind = cfg.get("estimator", "dex")
  if kind not in ESTIMATORS:
    raise ValueError(f"age_loss.estimator: unknown {kind!r}; choose one of "
                     f"{ESTIMATORS}")
  workdir, weights = cfg.get("workdir", ""), cfg.get("weights", "")
  if weights and kind != "dex":
    raise ValueError(f"age_loss.weights: official weights exist for "
                     f"estimator 'dex' only, not {kind!r}; give "
                     f"age_loss.workdir (a trained regressor) instead")
  if workdir and weights:
    raise ValueError("age_loss.weights: give either age_loss.workdir or "
                     "age_loss.weights, not both")
  if not (workdir or weights):
    need = ("age_loss.workdir (a trained dex run) or age_loss.weights "
            "(the official DEX .pth)" if kind == "dex" else
            "age_loss.workdir (a trained age_regression run)")
    raise ValueError(f"age_loss.workdir: empty; set {need}")
  sigma = cfg.get("sigma", 3.0)
  if kind == "regressor" and not (isinstance(sigma, (int, float))
                                  and sigma > 0):
    raise ValueError(f"age_loss.sigma: must be a number > 0 (years), got "
                     f"{sigma!r}")


def load_estimator(cfg: ml_collections.ConfigDict) -> FrozenEstimator:
  """Builds the frozen estimator described by an `age_loss` config section.

  Args:
    cfg: see `default_age_loss_config` (a ConfigDict or a plain dict).

  Returns:
    A FrozenEstimator whose `variables` are host (numpy) arrays.

  Raises:
    ValueError: a bad value, naming the `age_loss.<key>`; also a workdir
      without config.json or checkpoint, or of the wrong task.
  """
  _check(cfg)
  if cfg.get("weights", ""):
    return _load_dex_weights(cfg.get("weights"))
  return _load_workdir(cfg.get("workdir"), cfg.get("estimator", "dex"),
                       float(cfg.get("sigma", 3.0)))


def _load_dex_weights(path: str) -> FrozenEstimator:
  """Official DEX (Caffe-converted VGG-16) weights; 224 px for the release.

  The VGG's shape and input size are read from the file (fc6's width
  fixes the input size), so smaller DEX-format files work too.
  """
  from facejax.convert import dex as dex_import  # pylint: disable=g-import-not-at-top
  from facejax.convert import torch_pickle  # pylint: disable=g-import-not-at-top
  from facejax.models import vgg  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise ValueError(f"age_loss.weights: no file at {path!r}")
  try:
    state_dict = torch_pickle.read_state_dict(path)
    geo = dex_import.dex_geometry(state_dict)
    model = vgg.DEX(backbone=vgg.VGG(
        block_sizes=geo["block_sizes"], channels=geo["channels"],
        fc_width=geo["fc_width"], include_fc=True, dropout_rate=0.0),
                    num_ages=geo["num_ages"])
    if geo["num_ages"] != NUM_AGES:
      raise ValueError(f"{path}: age head has {geo['num_ages']} outputs, "
                       f"DEX has {NUM_AGES} (ages 0..100)")
    size = geo["image_size"]
    abstract = jax.eval_shape(
        lambda r: model.init(r, jnp.zeros((1, size, size, 3)), train=False),
        jax.random.key(0))
    variables = dex_import.dex_from_torch(state_dict, abstract,
                                          source=path)
  except (OSError, ValueError) as e:
    raise ValueError(f"age_loss.weights: {e}") from e
  variables = {"params": variables["params"]}

  def apply_logits(v, x):
    return model.apply(v, x, train=False)
  return FrozenEstimator(
      variables=variables, forward=_dex_forward(apply_logits), kind="dex",
      image_size=size, normalization="caffe_bgr", source=path)


def _load_workdir(workdir: str, kind: str, sigma: float) -> FrozenEstimator:
  # pylint: disable=g-import-not-at-top
  from facejax import runs
  from facejax import tasks
  # pylint: enable=g-import-not-at-top
  key = "age_loss.workdir"
  config = runs.read_config(workdir, key)
  task_name = config.get("task", "")
  if task_name != _WORKDIR_TASKS[kind]:
    raise ValueError(
        f"age_loss.workdir: {workdir!r} holds a {task_name!r} run; "
        f"age_loss.estimator={kind!r} needs a {_WORKDIR_TASKS[kind]!r} run "
        f"(or set age_loss.estimator to match)")
  task = tasks.get(task_name)(config)
  state, step = runs.restore_host(workdir, task, key)
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats

  def split(v):
    return v["params"], v.get("batch_stats", {})

  if kind == "dex":
    forward = _dex_forward(lambda v, x: task.logits(*split(v), x))
  else:
    forward = _regressor_forward(lambda v, x: task.forward(*split(v), x),
                                 sigma)
  data = config.data
  return FrozenEstimator(
      variables=variables, forward=forward, kind=kind,
      image_size=int(data.image_size),
      normalization=data.get("normalize", "imagenet"),
      crop_fraction=float(data.get("crop_fraction", 1.0)),
      source=f"{workdir} (step {step})")


def describe(est: FrozenEstimator) -> str:
  """One line for logs."""
  n = sum(int(np.size(x)) for x in jax.tree.leaves(est.variables))
  return (f"{est.kind} age estimator from {est.source}: {n:,} frozen "
          f"params, {est.image_size} px, {est.normalization}")


# ---------------------------------------------------------------------------
# Embedding networks of trained runs (kinship's frozen backbone, the
# caricature translator's SwinFace identity network).
# ---------------------------------------------------------------------------

# Runs whose embedding network kinship's model.backbone='frozen' can reuse.
FROZEN_TASKS = ("age_regression", "kinship", "swinface")
# The SwinFace subtrees that make up its recognition embedding.
SWIN_PARTS = ("swin", "recognition")


def restore_state(workdir: str, task, key: str):
  """The state of `workdir`'s best (else latest) checkpoint (host arrays)."""
  from facejax import runs  # pylint: disable=g-import-not-at-top
  return runs.restore_host(workdir, task, key)[0]


def workdir_config(workdir: str, key: str,
                   tasks_ok: tuple[str, ...]) -> ml_collections.ConfigDict:
  """`workdir`'s training config, checked to be one of `tasks_ok`."""
  from facejax import runs  # pylint: disable=g-import-not-at-top
  if not workdir:
    raise ValueError(f"config key {key} is empty: give a trained "
                     f"{' or '.join(tasks_ok)} workdir")
  cfg = runs.read_config(workdir, key)
  if cfg.get("task") not in tasks_ok:
    raise ValueError(f"config key {key}: {workdir!r} holds a "
                     f"{cfg.get('task')!r} run; expected "
                     f"{' or '.join(tasks_ok)}")
  return cfg


def workdir_task(workdir: str, key: str, tasks_ok: tuple[str, ...]):
  """(config, task) of `workdir`'s run, checked to be one of `tasks_ok`."""
  from facejax import tasks  # pylint: disable=g-import-not-at-top
  cfg = workdir_config(workdir, key, tasks_ok)
  if cfg.task == "swinface" and not cfg.model.get("num_identities", 0):
    # SwinFace counts its classes from its identity data; the workdir's
    # model.json has the count, so that data need not be on this machine.
    path = os.path.join(workdir, "model.json")
    if os.path.exists(path):
      with open(path) as f:
        classes = json.load(f).get("num_classes")
      if classes:
        with cfg.unlocked():
          cfg.model.num_identities = int(classes)
  return cfg, tasks.get(cfg.task)(cfg)


def create_backbone(model_cfg: ml_collections.ConfigDict, dtype: Any,
                    conv_impl: str = "auto"):
  """The embedding network of a kinship `config.model` (not 'frozen').

  Here, not in the kinship task, because a frozen kinship or age_regression
  run's embedding network is built the same way (`frozen_backbone`).
  Applied as `module.apply(variables, images, train=...)` -> [N, D].
  """
  if model_cfg.backbone == "swin":
    return swinface.create_recognition(model_cfg, dtype)
  return age_regressor.create_backbone(model_cfg.backbone, dtype=dtype,
                                       conv_impl=conv_impl)


def frozen_backbone(cfg: ml_collections.ConfigDict, dtype: Any,
                    conv_impl: str, key: str = "model.frozen_workdir"):
  """The embedding network of a trained run's config `cfg` (FROZEN_TASKS)."""
  if cfg.task == "swinface":
    # float32 as SwinFace itself runs it: the embeddings match its own.
    return swinface.create_recognition(cfg.model)
  if cfg.model.backbone == "frozen":
    raise ValueError(f"config key {key}: that kinship run has a frozen "
                     f"backbone itself; give its model.frozen_workdir "
                     f"({cfg.model.frozen_workdir!r}) instead")
  return create_backbone(cfg.model, dtype, conv_impl)


def frozen_variables(cfg: ml_collections.ConfigDict, state) -> dict:
  """{'params', 'batch_stats'} of the embedding network in a run's state."""
  stats = state.batch_stats or {}
  if cfg.task == "swinface":
    model = state.params["model"]
    return {"params": {k: model[k] for k in SWIN_PARTS},
            "batch_stats": {k: v for k, v in stats.items()
                            if k in SWIN_PARTS}}
  return {"params": state.params["backbone"],
          "batch_stats": stats.get("backbone", {})}


def load_frozen_embedding(workdir: str, key: str,
                          tasks_ok: tuple[str, ...] = FROZEN_TASKS,
                          dtype: Any = jnp.float32, conv_impl: str = "auto"):
  """(module, variables, run config) of a trained run's embedding network.

  The best checkpoint, else the latest; errors name config key `key`.
  Kinship's frozen backbones and the caricature translator's SwinFace
  identity network both load through here.
  """
  cfg, task = workdir_task(workdir, key, tasks_ok)
  state = restore_state(workdir, task, key)
  return (frozen_backbone(cfg, dtype, conv_impl, key),
          frozen_variables(cfg, state), cfg)


# ---------------------------------------------------------------------------
# Identity networks (the caricature translator's `config.identity`).
# ---------------------------------------------------------------------------

IDENTITY_SOURCES = ("workdir", "swinface", "weights", "random", "none")
NEED_IDENTITY = (
    "the identity loss needs a trained identity network: train one first,\n"
    "  python -m launch.train --config=configs/sphereface.py:smoke "
    "--workdir=runs/sphereface_smoke\n"
    "then pass --config.identity.workdir=runs/sphereface_smoke (or "
    "identity.source='weights' with identity.weights=<sphere20a .pth>, or "
    "loss.identity_w=0 / identity.source='none')")


@flax.struct.dataclass
class Identity:
  """The frozen identity network's variables: {'params'} of a SphereFace,
  or {'params', 'batch_stats'} of SwinFace's 'swin' + 'recognition'."""
  variables: Any


@flax.struct.dataclass
class NoIdentity:
  """No identity network (identity.source='none')."""


@dataclasses.dataclass(frozen=True)
class IdentityNetwork:
  """How to run a loaded identity network (static; never a jit argument).

  Attributes:
    embed: (variables, [-1, 1] images [B, H, W, 3]) -> [B, D] embeddings;
      None for identity.source='none'.
    name: for reports ("SphereFace fc5", ...).
    input_size: SwinFace's image size (source 'swinface'), else None.
  """
  embed: Callable[[Any, jax.Array], jax.Array] | None = None
  name: str = "none"
  input_size: int | None = None


def load_identity(config: ml_collections.ConfigDict
                  ) -> tuple[IdentityNetwork, Identity | NoIdentity]:
  """The frozen identity network of a caricature translator's config.

  config.identity.source: 'workdir' (a sphereface run), 'swinface' (a
  swinface run's recognition embedding, `load_frozen_embedding`), 'weights'
  (sphereface_pytorch weights), 'random' (tests and benchmarks only) or
  'none'.

  Args:
    config: the translator's config (its identity, loss.identity_w and
      data.image_size keys are read).

  Returns:
    (how to embed, the variables to pass to the steps as `frozen`).
  """
  # pylint: disable-next=g-import-not-at-top
  from facejax.tasks import sphereface as sphere_task
  idc = config.identity
  if idc.source == "none":
    if config.loss.identity_w:
      raise ValueError("config key identity.source='none' but "
                       "loss.identity_w != 0\n" + NEED_IDENTITY)
    return IdentityNetwork(), NoIdentity()
  if idc.source == "swinface":
    return _load_swinface_identity(idc.workdir)
  if idc.source == "workdir":
    if not idc.workdir:
      raise ValueError("config key identity.workdir is empty: "
                       + NEED_IDENTITY)
    from facejax import runs  # pylint: disable=g-import-not-at-top
    cfg = runs.read_config(idc.workdir, "identity.workdir")
    if cfg.get("task") != "sphereface":
      hint = (" (for a SwinFace run set identity.source='swinface')"
              if cfg.get("task") == "swinface" else "")
      raise ValueError(f"config key identity.workdir={idc.workdir!r} is "
                       f"a {cfg.get('task')!r} workdir, not "
                       f"sphereface{hint}")
    task = sphere_task.Task(cfg)
    state, step = runs.restore_host(idc.workdir, task, "identity.workdir")
    logging.info("identity network: %s step %d", idc.workdir, step)
    return _sphereface_identity(task, state.params)
  # 'weights' or 'random': a network of identity.variant / input_size.
  cfg = ml_collections.ConfigDict({
      "model": {"variant": idc.variant, "input_size": idc.input_size,
                "num_classes": 1, "margin": 4, "lambda_min": 5.0,
                "init_from": ""},
      "data": {"domains": ["photo"], "image_size": config.data.image_size},
      "optim": {"name": "sgd", "lr": 0.0}, "total_steps": 1, "seed": 0})
  task = sphere_task.Task(cfg)
  h, w = task.input_size
  params = task.model.init(jax.random.key(idc.seed),
                           jnp.zeros((1, h, w, 3)))["params"]
  if idc.source == "weights":
    # pylint: disable-next=g-import-not-at-top
    from facejax.convert import sphereface as sphereface_convert
    if not idc.weights:
      raise ValueError("config key identity.weights is empty: "
                       + NEED_IDENTITY)
    params = sphereface_convert.load(idc.weights, jax.device_get(params),
                                     task.input_size)
  return _sphereface_identity(task, params)


def _sphereface_identity(task, params) -> tuple[IdentityNetwork, Identity]:
  """A SphereFace task's fc5 feature as the identity embedding."""
  net = IdentityNetwork(
      embed=lambda v, x: task.features(v["params"], x),
      name="SphereFace fc5")
  return net, Identity({"params": jax.device_get(params)})


def _load_swinface_identity(workdir: str
                            ) -> tuple[IdentityNetwork, Identity]:
  """identity.source='swinface': a configs/swinface.py run's 'swin' +
  'recognition' variables in swinface.RecognitionNet."""
  key = "identity.workdir"
  if not workdir:
    raise ValueError(f"config key {key} is empty: identity.source="
                     f"'swinface' needs a configs/swinface.py training "
                     f"workdir")
  if not os.path.isdir(workdir):
    raise ValueError(f"config key {key}={workdir!r}: no such directory "
                     f"(identity.source='swinface' needs a "
                     f"configs/swinface.py training workdir)")
  net, variables, cfg = load_frozen_embedding(workdir, key, ("swinface",))
  size = int(net.backbone["img_size"])
  norm = cfg.data.get("normalize", "unit")

  def embed(v, images):
    # The translator's [-1, 1] images -> SwinFace's input: its image
    # size and its data normalisation (differentiable, for the loss).
    x = crop_and_resize((images + 1.0) / 2.0, size)
    return net.apply(v, normalize(x, norm), train=False)

  logging.info("identity network: SwinFace %s (%d px)", workdir, size)
  return (IdentityNetwork(embed=embed, name="SwinFace recognition embedding",
                          input_size=size),
          Identity(jax.device_get(variables)))


# ---------------------------------------------------------------------------
# Attribute classifiers (StarGAN's evaluation).
# ---------------------------------------------------------------------------


@flax.struct.dataclass
class Classifier:
  """The frozen attribute classifier (evaluation only)."""
  params: Any
  batch_stats: Any


@flax.struct.dataclass
class NoClassifier:
  """No classifier configured (eval.classifier_workdir empty)."""


def load_classifier(workdir: str):
  """(params, batch_stats, task, config) of an attribute_classifier run."""
  # pylint: disable=g-import-not-at-top
  from facejax import runs
  from facejax.tasks import attribute_classifier
  # pylint: enable=g-import-not-at-top
  key = "eval.classifier_workdir"
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} not found (config key {key}): train the "
        f"classifier first with configs/attribute_classifier.py")
  config = runs.read_config(workdir, key)
  if config.task != "attribute_classifier":
    raise ValueError(f"config key {key}={workdir!r} is a "
                     f"{config.task!r} workdir, not attribute_classifier")
  task = attribute_classifier.Task(config)
  state, _ = runs.restore_host(workdir, task, key)
  return state.params, state.batch_stats, task, config


__all__ = [
    "NUM_AGES", "ESTIMATORS", "default_age_loss_config", "soft_age_labels",
    "soft_age_log_probs", "expected_age", "normalize", "crop_and_resize",
    "FrozenEstimator", "load_estimator", "describe",
    "FROZEN_TASKS", "SWIN_PARTS", "restore_state", "workdir_config",
    "workdir_task", "create_backbone", "frozen_backbone", "frozen_variables",
    "load_frozen_embedding",
    "IDENTITY_SOURCES", "NEED_IDENTITY", "Identity", "NoIdentity",
    "IdentityNetwork", "load_identity",
    "Classifier", "NoClassifier", "load_classifier",
]
