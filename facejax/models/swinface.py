"""SwinFace (Qin et al. 2023): Swin backbone, recognition subnet, eleven
analysis subnets with multi-level channel attention (MLCA), 42 heads.

  backbone -> FM1..FM4 (all at the last stage's resolution)
  recognition: LN -> token mean -> Linear -> BN -> Linear -> BN (embedding)
  analysis branch b (11 of them, no sharing):
    MLFF: 3x3 conv per level (no bias), concatenated -> fam_dim channels
    CA:   CBAM channel gate (avg- and max-pool, shared MLP, sigmoid)
    ReLU -> global max pool -> BN
    TSS:  (Linear, ReLU, Dropout 0.5) x 2
    OM:   one Linear per task of the branch
The CosFace identity classifier is a separate parameter (`id_classifier`)
so that its weight can be sharded over the `model` mesh axis.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from facejax.models import layers
from facejax.models import swin

BN_EPS = 2e-5
BN_MOMENTUM = 0.9  # torch momentum 0.1

# (branch name, ((task name, outputs), ...)); head order = output_fcs order.
BRANCHES = (
    ("gender", (("Gender", 2),)),
    ("age", (("Age", 1), ("Young", 2))),
    ("expression", (("Expression", 7), ("Smiling", 2))),
    ("whole_face", (("Attractive", 2), ("Blurry", 2), ("Chubby", 2),
                    ("Heavy Makeup", 2), ("Oval Face", 2),
                    ("Pale Skin", 2))),
    ("hair", (("Bald", 2), ("Bangs", 2), ("Black Hair", 2),
              ("Blond Hair", 2), ("Brown Hair", 2), ("Gray Hair", 2),
              ("Receding Hairline", 2), ("Straight Hair", 2),
              ("Wavy Hair", 2), ("Wearing Hat", 2))),
    ("eyes", (("Arched Eyebrows", 2), ("Bags Under Eyes", 2),
              ("Bushy Eyebrows", 2), ("Eyeglasses", 2), ("Narrow Eyes", 2))),
    ("nose", (("Big Nose", 2), ("Pointy Nose", 2))),
    ("cheek", (("High Cheekbones", 2), ("Rosy Cheeks", 2),
               ("Wearing Earrings", 2), ("Sideburns", 2))),
    ("mouth", (("Five O'Clock Shadow", 2), ("Big Lips", 2),
               ("Mouth Slightly Open", 2), ("Mustache", 2),
               ("Wearing Lipstick", 2), ("No Beard", 2))),
    ("chin", (("Double Chin", 2), ("Goatee", 2))),
    ("neck", (("Wearing Necklace", 2), ("Wearing Necktie", 2))),
)
HEADS = tuple(t for _, tasks in BRANCHES for t in tasks)   # 42 (name, k)
TASK_NAMES = tuple(name for name, _ in HEADS)
# The 40 binary heads (all but Age and Expression), in head order: the
# column order of the `attrs` label vector.
BINARY_TASKS = tuple(n for n, k in HEADS if k == 2)
EXPRESSION_CLASSES = 7


def celeba_column(task: str) -> str:
  """The CelebA `list_attr_celeba.txt` column of a binary head."""
  special = {"Gender": "Male", "Five O'Clock Shadow": "5_o_Clock_Shadow"}
  return special.get(task, task.replace(" ", "_"))


def split_channels(level_dims: Sequence[int], total: int) -> list[int]:
  """MLFF output channels per level, proportional to its input channels.

  (192, 384, 768, 768) -> (47, 93, 186, 186) for 512, as the reference.
  """
  s = sum(level_dims)
  out = [int(np.floor(total * d / s + 0.5)) for d in level_dims[:-1]]
  return out + [total - sum(out)]


class ChannelGate(nn.Module):
  """CBAM channel attention: sigmoid(MLP(avgpool) + MLP(maxpool))."""
  reduction: int = 16

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    fc1 = nn.Dense(max(1, c // self.reduction), name="mlp_1")
    fc2 = nn.Dense(c, name="mlp_3")
    mlp = lambda v: fc2(nn.relu(fc1(v)))
    gate = jax.nn.sigmoid(mlp(x.mean((1, 2))) + mlp(x.max((1, 2))))  # [B, C]
    return x * gate[:, None, None, :], gate


# (task, branch, first column in the branch's output, outputs) per head.
HEAD_SLOTS = tuple(
    (name, b, sum(k for _, k in tasks[:i]), k)
    for b, (_, tasks) in enumerate(BRANCHES)
    for i, (name, k) in enumerate(tasks))
BRANCH_OUTPUTS = max(sum(k for _, k in tasks) for _, tasks in BRANCHES)


class AnalysisBranch(nn.Module):
  """MLCA (split conv + channel gate) -> BN -> TSS -> output layer.

  The output layer ('om') has BRANCH_OUTPUTS columns, the branch's heads
  side by side (HEAD_SLOTS) and the rest unused, so that all eleven
  branches have one shape and run as one vmapped (stacked) module: one
  compile instead of eleven.
  """
  fam_dim: int
  hidden: int
  train: bool
  dropout: float = 0.5
  reduction: int = 16

  @nn.compact
  def __call__(self, fms):
    dims = split_channels([f.shape[-1] for f in fms], self.fam_dim)
    # layers.Conv (nn.Conv's parameters): its form suits each map's size.
    # XLA's own convolution, vmapped over the branches, took 56 of the
    # smoke step's 281 ms on a 2-core Intel Xeon with AMX; with this, the
    # step took 204 ms (docs/performance.md section 18).
    parts = [layers.Conv(d, (3, 3), padding=((1, 1), (1, 1)),
                         use_bias=False, name=f"conv_{i}")(f)
             for i, (d, f) in enumerate(zip(dims, fms))]
    x = jnp.concatenate(parts, axis=-1)                   # [B, R, R, fam]
    x, gate = ChannelGate(self.reduction, name="channel_attention")(x)
    x = nn.relu(x).max((1, 2))                            # [B, fam]
    x = nn.BatchNorm(use_running_average=not self.train,
                     momentum=BN_MOMENTUM, epsilon=BN_EPS, name="norm")(x)
    init = swin.trunc_normal
    for i in (0, 3):
      x = nn.Dense(self.hidden, kernel_init=init, name=f"tss_{i}")(x)
      x = nn.relu(x)
      x = nn.Dropout(self.dropout, deterministic=not self.train)(x)
    out = nn.Dense(BRANCH_OUTPUTS, kernel_init=init, name="om")(x)
    # Mean gate per level: how much the branch uses FM1..FM4.
    bounds = np.cumsum([0] + dims)
    levels = jnp.stack([gate[:, a:b].mean(-1)
                        for a, b in zip(bounds[:-1], bounds[1:])], -1)
    return out, levels


# The eleven branches as one module with parameters stacked on axis 0.
AnalysisBranches = nn.vmap(
    AnalysisBranch, variable_axes={"params": 0, "batch_stats": 0},
    split_rngs={"params": True, "dropout": True}, in_axes=None,
    out_axes=0, axis_size=len(BRANCHES))


class Recognition(nn.Module):
  """Linear -> BN -> Linear -> BN on the pooled tokens (the embedding)."""
  embedding_dim: int = 512

  @nn.compact
  def __call__(self, tokens, train: bool):
    c = tokens.shape[-1]
    bn = lambda name: nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
        name=name)
    x = nn.Dense(c, use_bias=False, kernel_init=swin.trunc_normal,
                 name="feature_0")(tokens)
    x = bn("feature_1")(x)
    x = nn.Dense(self.embedding_dim, use_bias=False,
                 kernel_init=swin.trunc_normal, name="feature_2")(x)
    return bn("feature_3")(x)


class SwinFace(nn.Module):
  """Backbone + recognition subnet + 11 analysis branches (42 heads).

  Returns a dict: 'embedding' [B, emb] (not normalised; the reference's
  'Recognition' output), one [B, k] array per task name ('Age' is [B]),
  and 'attention' [B, 11, 4] (mean channel-gate value per branch and level).
  """
  backbone: dict
  embedding_dim: int = 512
  fam_dim: int = 512
  tss_dim: int = 512
  dropout: float = 0.5
  analysis: bool = True

  @nn.compact
  def __call__(self, images, train: bool = False):
    fms, tokens = swin.SwinBackbone(**self.backbone, name="swin")(images,
                                                                  train)
    out = {"embedding": Recognition(self.embedding_dim, name="recognition")(
        tokens, train)}
    if not self.analysis:
      return out
    logits, levels = AnalysisBranches(
        self.fam_dim, self.tss_dim, train, self.dropout,
        name="branches")(fms)          # [11, B, BRANCH_OUTPUTS], [11, B, L]
    for name, b, first, k in HEAD_SLOTS:
      out[name] = logits[b, :, first:first + k]
    out["Age"] = out["Age"][:, 0]
    out["attention"] = levels.transpose(1, 0, 2)
    return out


class CosFaceClassifier(nn.Module):
  """Class centres [emb, num_classes]; CosFace logits s * (cos - m [y]).

  The kernel is the layer to shard over the `model` axis (millions of
  identities); normalisation is over its first (embedding) axis, so each
  device normalises its own columns.
  """
  num_classes: int
  init_std: float = 0.01

  @nn.compact
  def __call__(self, embedding, index=None):
    """Cosines to every centre, or to the centres `index` [K] only."""
    w = self.param("kernel", nn.initializers.normal(self.init_std),
                   (embedding.shape[-1], self.num_classes))
    if index is not None:
      w = jnp.take(w, index, axis=1)
    e = embedding * jax.lax.rsqrt(
        jnp.sum(embedding**2, -1, keepdims=True) + 1e-12)
    w = w * jax.lax.rsqrt(jnp.sum(w**2, 0, keepdims=True) + 1e-12)
    return jnp.clip(e @ w, -1.0, 1.0)                     # [B, classes]


def partial_fc_sample(rng: jax.Array, labels: jax.Array, mask: jax.Array,
                      num_classes: int, sample_rate: float
                      ) -> tuple[jax.Array, jax.Array]:
  """Partial FC: the centres one step trains, and labels into them.

  Every class labelled in the batch is kept, the rest of the
  ceil(sample_rate * classes) slots are random other classes (the
  reference's sample_rate 0.3). Returns (index [K], local labels [B]);
  K is static: max(ceil(rate * C), B), at most C.
  """
  b = labels.shape[0]
  k = min(num_classes, max(int(np.ceil(sample_rate * num_classes)), b))
  positive = jnp.zeros((num_classes,), jnp.float32).at[labels].max(
      (mask > 0).astype(jnp.float32))
  score = jax.random.uniform(rng, (num_classes,)) + 2.0 * positive
  _, index = jax.lax.top_k(score, k)
  local = jnp.argmax(index[None, :] == labels[:, None], axis=1)
  return index, local.astype(labels.dtype)


def cosface_loss(cos: jax.Array, labels: jax.Array, margin: float,
                 scale: float) -> jax.Array:
  """[B] CosFace cross-entropy (labels may be -1 for 'no identity')."""
  onehot = jax.nn.one_hot(labels, cos.shape[-1], dtype=cos.dtype)
  logits = scale * (cos - margin * onehot)
  return optax.softmax_cross_entropy(logits, onehot)


def age_loss(pred: jax.Array, target: jax.Array, lam: jax.Array,
             sigma: float = 3.0) -> jax.Array:
  """[B] the reference's AgeLoss: MSE moving to an epsilon-error loss.

  (1 - lam)/2 * d^2 + lam * (1 - exp(-d^2 / (2 sigma^2))), lam = step /
  total steps.
  """
  d2 = jnp.square(pred - target)
  return (1.0 - lam) / 2.0 * d2 + lam * (1.0 - jnp.exp(-d2 / (2 * sigma**2)))


def create(cfg) -> SwinFace:
  """SwinFace from `config.model` (variant plus optional overrides)."""
  variant = cfg.swin.variant
  if variant not in swin.VARIANTS:
    raise ValueError(f"config key model.swin.variant: unknown {variant!r}; "
                     f"choose one of {sorted(swin.VARIANTS)}")
  backbone = dict(swin.VARIANTS[variant])
  for key in ("img_size", "patch_size", "embed_dim", "window"):
    if cfg.swin.get(key, 0):
      backbone[key] = int(cfg.swin[key])
  for key in ("depths", "num_heads"):
    if cfg.swin.get(key, ()):
      backbone[key] = tuple(int(v) for v in cfg.swin[key])
  backbone["drop_path_rate"] = float(cfg.swin.drop_path_rate)
  backbone["remat"] = bool(cfg.swin.get("remat", False))
  if len(backbone["depths"]) != len(backbone["num_heads"]):
    raise ValueError("config keys model.swin.depths / num_heads: lengths "
                     "differ")
  return SwinFace(backbone=backbone, embedding_dim=cfg.embedding_dim,
                  fam_dim=cfg.fam_dim, tss_dim=cfg.tss_dim,
                  dropout=cfg.dropout)


class RecognitionNet(nn.Module):
  """SwinFace's backbone + recognition subnet alone: images -> embedding.

  Its variables are exactly SwinFace's 'swin' and 'recognition' subtrees,
  so a trained SwinFace's weights apply to it unchanged (e.g. as a kinship
  backbone). Returns the un-normalised [B, embedding_dim] embedding.
  """
  backbone: dict
  embedding_dim: int = 512

  @nn.compact
  def __call__(self, images, train: bool = False):
    _, tokens = swin.SwinBackbone(**self.backbone, name="swin")(images, train)
    return Recognition(self.embedding_dim, name="recognition")(tokens, train)


def create_recognition(cfg, dtype=jnp.float32) -> RecognitionNet:
  """RecognitionNet from a config section with `swin` and `embedding_dim`.

  The same keys (and errors) as `create`: model.swin.variant plus its
  overrides; `dtype` is the Swin activation dtype.
  """
  # `create` holds the variant/override logic; the analysis sizes are
  # irrelevant here.
  full = create(_RecognitionKeys(cfg.swin, int(cfg.embedding_dim)))
  return RecognitionNet(backbone=dict(full.backbone, dtype=dtype),
                        embedding_dim=full.embedding_dim)


class _RecognitionKeys:
  """The config keys `create` reads, with placeholder analysis sizes."""

  def __init__(self, swin_cfg, embedding_dim: int):
    self.swin = swin_cfg
    self.embedding_dim = embedding_dim
    self.fam_dim = self.tss_dim = 1
    self.dropout = 0.0
