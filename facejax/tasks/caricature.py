"""Photo <-> caricature translation: MUNIT + SAGAN + SN + TTUR + hinge +
a frozen SphereFace (or SwinFace) identity loss (the seed's SATNet),
state-task form.

One jitted `train_step(state, batch, frozen)` does, as the reference's
trainer (shared/reference/caricature.md sections 1 and 3), with domain
'photo' (P) and 'cari' (C) and fresh style codes s ~ N(0, I):
  D step: x_p2c = G_C(c_P, s_C), x_c2p = G_P(c_C, s_P) (no gradient to G);
    L_D = w_gan * sum_scales [hinge_D(D_C(x_c), D_C(x_p2c)) +
    hinge_D(D_P(x_p), D_P(x_c2p))];
  G step (new style codes, the updated D):
    L_G = w_gan * (adv(D_C(x_p2c)) + adv(D_P(x_c2p)))
        + w_x * (|G_P(E_P(x_p)) - x_p| + |G_C(E_C(x_c)) - x_c|)
        + w_s * (|s^_C - s_C| + |s^_P - s_P|) + w_c * (|c^_P - c_P| + ...)
        + w_cyc * (|G_P(c^_P, s'_P) - x_p| + |G_C(c^_C, s'_C) - x_c|)
        + w_id * (relu(thd - cos(f(x_p), f(x_p2c))) +
                  relu(thd - cos(f(x_c), f(x_c2p))))
  with (c^, s^) the re-encodings of the translations, f the frozen
  identity network's embedding (cosine per example; the reference's
  batch of 1). L1 terms are means; hinge: D = mean relu(1 - D(real)) +
  mean relu(1 + D(fake)), G = -mean D(fake); 'lsgan' is MUNIT's.
TTUR: separate optax optimizers (config.optim_g / optim_d: the reference's
lr 1e-4 / 4e-4, Adam betas (0, 0.9), weight decay 1e-4).

The identity network (config.identity, frozen): source 'workdir' = a
`sphereface` run (configs/sphereface.py; its fc5 feature), 'swinface' = a
configs/swinface.py run (its Swin backbone + recognition subnet, i.e.
swinface.RecognitionNet with the run's 'swin' and 'recognition' variables;
inputs resized to the run's image size), 'weights' = sphereface_pytorch
weights, 'random' (a randomly initialised SphereFace, for tests and
benchmarks only) or 'none'; loaded by facejax.tasks.frozen.load_identity.
It serves the identity loss, the identity cosine and verification, and
FID-small when eval.fid_features='identity'.

Evaluation: within-domain reconstruction L1, identity cosine per
direction, and the translator's own discriminators' accuracy at telling
translated from real images. facejax.evaluators.caricature.report
(launch.evaluate) writes the table: FID-small, the identity cosine, cross-domain
verification (TAR at FAR 0.1% / 1%, ROC AUC) of translated vs real
target-domain images, and a probe discriminator's held-out cross-entropy
(facejax.evaluators.probe), with the untranslated baselines.
"""

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from facejax.evaluators import image_grid
from facejax import optim
from facejax.data import caricature as data_lib
from facejax.data import pipeline
from facejax.models import layers
from facejax.models import caricature as model_lib
from facejax.tasks import base as task_base
from facejax.tasks import frozen as frozen_lib
from facejax.train import state as state_lib
from facejax.train import steps as steps_lib

SPECTRAL = model_lib.SPECTRAL
DOMAINS = data_lib.DOMAINS
DIRECTIONS = data_lib.DIRECTIONS
GAN_LOSSES = ("hinge", "lsgan")
_EVAL_SEED = 2**30


# Both domains' networks stacked on a leading axis of 2 (photo, cari), with
# their spectral-norm vectors in gen_stats / disc_stats.
GanState = state_lib.GanState


# ---------------------------------------------------------------------------
# Losses and metrics.
# ---------------------------------------------------------------------------


def hinge_d(real: list, fake: list) -> jax.Array:
  """Sum over scales of mean relu(1 - D(real)) + mean relu(1 + D(fake))."""
  return sum(sum(steps_lib.hinge_d(r, f)) for r, f in zip(real, fake))


def hinge_g(fake: list) -> jax.Array:
  """Sum over scales of -mean D(fake)."""
  return sum(steps_lib.hinge_g(f) for f in fake)


def lsgan_d(real: list, fake: list) -> jax.Array:
  """Sum over scales of mean (D(real) - 1)^2 + mean D(fake)^2."""
  return sum(sum(steps_lib.lsgan_d(r, f)) for r, f in zip(real, fake))


def lsgan_g(fake: list) -> jax.Array:
  """Sum over scales of mean (D(fake) - 1)^2."""
  return sum(steps_lib.lsgan_g(f) for f in fake)


def identity_loss(emb_x: jax.Array, emb_y: jax.Array,
                  threshold: float) -> jax.Array:
  """[B] relu(threshold - cos(emb_x, emb_y)) (the seed's hinge)."""
  return jax.nn.relu(threshold - layers.cosine(emb_x, emb_y))


# ---------------------------------------------------------------------------
# The task.
# ---------------------------------------------------------------------------


class Task(task_base.Task):
  """MUNIT/SATNet photo <-> caricature translator."""

  progress_keys = ("d_loss", "g_loss", "g_id", "g_recon_x")
  finite_keys = ("d_loss", "g_loss")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    m, lw = config.model, config.loss
    if lw.gan not in GAN_LOSSES:
      raise ValueError(f"config key loss.gan: unknown {lw.gan!r}; choose "
                       f"one of {GAN_LOSSES}")
    if config.identity.source not in frozen_lib.IDENTITY_SOURCES:
      raise ValueError(f"config key identity.source: unknown "
                       f"{config.identity.source!r}; choose one of "
                       f"{frozen_lib.IDENTITY_SOURCES}")
    model_lib.check_geometry(config.data.image_size, m.n_downsample,
                         m.n_style_downsample, m.d_layers, m.d_scales)
    self.gen = model_lib.Generator(
        dim=m.dim, style_dim=m.style_dim, n_downsample=m.n_downsample,
        n_style_downsample=m.n_style_downsample, n_res=m.n_res,
        mlp_dim=m.mlp_dim, attention=m.attention,
        attention_sn=m.attention_sn, gamma_init=m.gamma_init,
        conv_impl=m.conv_impl)
    self.disc = model_lib.MsDiscriminator(
        dim=m.d_dim, n_layer=m.d_layers, num_scales=m.d_scales,
        attention=m.d_attention, gamma_init=m.gamma_init,
        conv_impl=m.conv_impl)
    self.tx_g, self.schedule_g = optim.create_optimizer(
        config.optim_g, config.total_steps, None)
    self.tx_d, self.schedule_d = optim.create_optimizer(
        config.optim_d, config.total_steps, None)
    # (variables, [-1, 1] images) -> embeddings, set by load_frozen().
    self._embed_fn = None
    self.identity_name = "none"
    self.swin_input_size = None  # SwinFace's image size (source swinface)
    self.best_metric = (("id_cos", "max")
                        if config.identity.source != "none"
                        else ("recon_x", "min"))
    self._jit = {}

  # --- identity / shapes -------------------------------------------------
  def meta(self) -> dict[str, Any]:
    m = self.config.model
    return {"task": "caricature", "image_size": self.config.data.image_size,
            "g": [m.dim, m.style_dim, m.n_downsample, m.n_res, m.mlp_dim,
                  bool(m.attention)],
            "d": [m.d_dim, m.d_layers, m.d_scales, bool(m.d_attention)]}

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    s = self.config.data.image_size
    image = np.zeros((batch_size, s, s, 3), np.float32)
    return {"photo": image, "cari": image.copy(),
            "photo_id": np.zeros((batch_size,), np.int32),
            "cari_id": np.zeros((batch_size,), np.int32),
            "mask": np.ones((batch_size,), np.float32)}

  def describe(self, state) -> str:
    return (f"SATNet/MUNIT: G {state_lib.count_params(state.gen):,} + D "
            f"{state_lib.count_params(state.disc):,} params (2 domains); "
            f"identity {self.config.identity.source}")

  def learning_rate(self, step: int) -> float:
    return float(self.schedule_g(step))

  # --- state -------------------------------------------------------------
  def init_state(self, rng: jax.Array) -> GanState:
    """Both domains' networks stacked on a leading axis of 2 (photo, cari).

    Stacked so both domains' networks go through the same code paths
    (index 0 photo, 1 caricature).
    """
    s = self.config.data.image_size
    x = jnp.zeros((1, s, s, 3), jnp.float32)
    keys = jax.random.split(rng, 4)
    gv = jax.vmap(lambda r: self.gen.init(r, x))(keys[:2])
    dv = jax.vmap(lambda r: self.disc.init(r, x))(keys[2:])
    stats = lambda v: {SPECTRAL: v[SPECTRAL]} if SPECTRAL in v else {}
    return GanState(step=jnp.zeros((), jnp.int32), gen=gv["params"],
                    gen_stats=stats(gv), disc=dv["params"],
                    disc_stats=stats(dv),
                    gen_opt=self.tx_g.init(gv["params"]),
                    disc_opt=self.tx_d.init(dv["params"]))

  def has_import(self) -> bool:
    return False

  def import_pretrained(self, state: GanState) -> GanState:
    return state

  # --- frozen identity network -------------------------------------------
  @classmethod
  def inference_config(cls, config, from_weights: bool,
                       frozen_networks: bool) -> None:
    """Translating never reads the identity network: without
    `frozen_networks` its run need not be on this machine."""
    del from_weights
    if not frozen_networks:
      config.identity.source = "none"
      config.loss.identity_w = 0.0
      config.eval.fid_features = "random"

  def load_frozen(self):
    """The frozen identity network's variables (frozen_lib.load_identity);
    sets how to embed with them, its name and input size."""
    net, frozen = frozen_lib.load_identity(self.config)
    self._embed_fn, self.identity_name = net.embed, net.name
    self.swin_input_size = net.input_size
    return frozen

  def embed(self, frozen, images):
    """[B, D] identity embeddings of [-1, 1] images (frozen network)."""
    if self._embed_fn is None:
      self.load_frozen()
    return self._embed_fn(jax.lax.stop_gradient(frozen.variables), images)

  # --- networks ----------------------------------------------------------
  # Every function takes both domains stacked: params [2, ...] and images
  # [2, B, H, W, 3] (index 0 photo, 1 caricature).

  def _apply(self, module, method, params, stats, *args, update=False):
    """module.apply per domain, outputs stacked; (out, new stats or None).

    A Python loop over the two domains. Measured on 2 CPU cores (smoke
    step): jax.vmap turns each conv into a grouped conv over the two
    kernels (10x slower steps) and jax.lax.map runs a while loop (5x
    slower steps), neither compiling faster.
    """
    outs, news = [], []
    for i in range(2):
      # pylint: disable-next=cell-var-from-loop
      pick = lambda t: jax.tree.map(lambda a: a[i], t)
      v = {"params": pick(params), **pick(stats)}
      a = [pick(x) for x in args]
      if update and stats:
        out, new = module.apply(v, *a, True, method=method,
                                mutable=[SPECTRAL])
        news.append(dict(new))
      else:
        out = module.apply(v, *a, method=method)
      outs.append(out)
    stack = lambda *xs: jnp.stack(xs)
    return (jax.tree.map(stack, *outs),
            jax.tree.map(stack, *news) if news else None)

  def encode(self, gen, stats, x2, update=False):
    """-> ((content, style) stacked, new stats or None)."""
    return self._apply(self.gen, "encode", gen, stats, x2, update=update)

  def decode(self, gen, stats, c2, s2, update=False):
    return self._apply(self.gen, "decode", gen, stats, c2, s2,
                       update=update)

  def discriminate(self, disc, stats, x2, update=False):
    """-> (list over scales of [2, B, h, w, 1], new stats or None)."""
    return self._apply(self.disc, "__call__", disc, stats, x2,
                       update=update)

  def translate(self, gen, gen_stats, images, direction: str, styles):
    """images of the source domain -> the target domain with `styles`."""
    src, dst = (DOMAINS.index(d) for d in DIRECTIONS[direction])
    pick = lambda t, i: jax.tree.map(lambda a: a[i], t)
    v_src = {"params": pick(gen, src), **pick(gen_stats, src)}
    v_dst = {"params": pick(gen, dst), **pick(gen_stats, dst)}
    c, _ = self.gen.apply(v_src, images, method="encode")
    return self.gen.apply(v_dst, c, styles, method="decode")

  def _losses(self):
    return ((hinge_d, hinge_g) if self.config.loss.gan == "hinge"
            else (lsgan_d, lsgan_g))

  # --- train / eval ------------------------------------------------------
  def _embed2(self, frozen, x2):
    """Identity features of stacked images [2, B, ...] -> [2, B, D]."""
    flat = x2.reshape((-1,) + x2.shape[2:])
    return self.embed(frozen, flat).reshape(x2.shape[:2] + (-1,))

  def train_step(self, state: GanState, batch: dict, frozen):
    cfg, lw = self.config, self.config.loss
    d_fn, g_fn = self._losses()
    rng = jax.random.fold_in(jax.random.key(cfg.seed), state.step)
    r_d, r_g = jax.random.split(rng)
    x2 = jnp.stack([batch["photo"], batch["cari"]])  # [2, B, H, W, 3]
    b, sd = x2.shape[1], cfg.model.style_dim
    swap = lambda t: t[::-1]  # domain d's content -> the other domain

    # D step: translations with fresh styles, no gradient to G. fake2[d]
    # is in domain d (translated from the other domain).
    (c2, _), _ = self.encode(state.gen, state.gen_stats, x2)
    fake2, _ = self.decode(state.gen, state.gen_stats, swap(c2),
                           jax.random.normal(r_d, (2, b, sd)))
    fake2 = jax.lax.stop_gradient(fake2)

    def d_loss_fn(disc):
      # Real and translated images in one call per domain (one power
      # iteration per step, as torch's spectral_norm in training).
      both, st = self.discriminate(disc, state.disc_stats,
                                   jnp.concatenate([x2, fake2], axis=1),
                                   update=True)
      new_stats = st if st is not None else state.disc_stats
      real = [o[:, :b] for o in both]
      fake = [o[:, b:] for o in both]
      parts = [d_fn([r[i] for r in real], [f[i] for f in fake])
               for i in range(2)]
      return lw.gan_w * (parts[0] + parts[1]), (
          {"d_photo": parts[0], "d_cari": parts[1]}, new_stats)

    disc, disc_opt, d_metrics, disc_stats = steps_lib.gan_update(
        d_loss_fn, state.disc, state.disc_opt, self.tx_d, "d")

    # G step with the updated D and new style codes.
    def g_loss_fn(gen):
      stats = state.gen_stats
      (c2, s2), st_enc = self.encode(gen, stats, x2, update=True)
      rand2 = jax.random.normal(r_g, (2, b, sd))
      # One decoder call per domain: its own content with its own style
      # (reconstruction) and the other domain's with a random style.
      out2, st_dec = self.decode(
          gen, stats, jnp.concatenate([c2, swap(c2)], axis=1),
          jnp.concatenate([s2, rand2], axis=1), update=True)
      recon2, trans2 = out2[:, :b], out2[:, b:]
      new_stats = stats
      if st_enc is not None:
        # Each call iterated its own attention blocks' u, v: take the
        # encoder's from encode and the decoder's from decode.
        new_stats = {SPECTRAL: {
            k: (st_dec if k.startswith("dec") else st_enc)[SPECTRAL][k]
            for k in st_enc[SPECTRAL]}}
      (re_c2, re_s2), _ = self.encode(gen, stats, trans2)
      terms = {
          "recon_x": 2 * jnp.mean(jnp.abs(recon2 - x2)),
          "recon_s": 2 * jnp.mean(jnp.abs(re_s2 - rand2)),
          # re_c2[d] re-encodes a translation *from* the other domain.
          "recon_c": 2 * jnp.mean(jnp.abs(swap(re_c2) - c2)),
      }
      if lw.recon_cyc_w:
        back2, _ = self.decode(gen, stats, swap(re_c2), s2)
        terms["recon_cyc"] = 2 * jnp.mean(jnp.abs(back2 - x2))
      else:
        terms["recon_cyc"] = jnp.zeros(())
      out, _ = self.discriminate(disc, disc_stats, trans2)
      terms["adv"] = sum(g_fn([o[i] for o in out]) for i in range(2))
      if isinstance(frozen, frozen_lib.Identity):
        emb = self._embed2(frozen, jnp.concatenate([x2, trans2], axis=1))
        e_x, e_t = emb[:, :b], swap(emb[:, b:])
        terms["id"] = 2 * jnp.mean(identity_loss(e_x, e_t,
                                                 lw.identity_thd))
        terms["id_cos"] = jnp.mean(layers.cosine(e_x, e_t))
      else:
        terms["id"] = jnp.zeros(())
        terms["id_cos"] = jnp.zeros(())
      loss = (lw.gan_w * terms["adv"] + lw.recon_x_w * terms["recon_x"]
              + lw.recon_s_w * terms["recon_s"]
              + lw.recon_c_w * terms["recon_c"]
              + lw.recon_cyc_w * terms["recon_cyc"]
              + lw.identity_w * terms["id"])
      return loss, ({f"g_{k}": v for k, v in terms.items()}, new_stats)

    gen, gen_opt, g_metrics, gen_stats = steps_lib.gan_update(
        g_loss_fn, state.gen, state.gen_opt, self.tx_g, "g")
    new_state = state.replace(step=state.step + 1, gen=gen,
                              gen_stats=gen_stats, disc=disc,
                              disc_stats=disc_stats, gen_opt=gen_opt,
                              disc_opt=disc_opt)
    return new_state, {**d_metrics, **g_metrics}

  def eval_styles(self, b: int):
    """[b, style_dim] style codes, the same at every evaluation."""
    rng = jax.random.fold_in(jax.random.key(self.config.seed), _EVAL_SEED)
    return jax.random.normal(rng, (b, self.config.model.style_dim))

  def eval_step(self, state: GanState, batch: dict, frozen):
    """Sums: reconstruction, identity cosine, D accuracy (real vs fake)."""
    w = batch["mask"]
    x2 = jnp.stack([batch["photo"], batch["cari"]])
    b = x2.shape[1]
    (c2, s2), _ = self.encode(state.gen, state.gen_stats, x2)
    recon2, _ = self.decode(state.gen, state.gen_stats, c2, s2)
    styles = jnp.broadcast_to(self.eval_styles(b), (2,) + s2.shape[1:])
    fake2, _ = self.decode(state.gen, state.gen_stats, c2[::-1], styles)
    sums = {"count": w.sum(),
            "recon_x": (jnp.abs(recon2 - x2).mean((0, 2, 3, 4)) * w).sum()}
    real, _ = self.discriminate(state.disc, state.disc_stats, x2)
    fake, _ = self.discriminate(state.disc, state.disc_stats, fake2)
    # Per domain and example: mean logit over scales and patches.
    real_s = sum(o.mean((2, 3, 4)) for o in real) / len(real)  # [2, B]
    fake_s = sum(o.mean((2, 3, 4)) for o in fake) / len(fake)
    if isinstance(frozen, frozen_lib.Identity):
      cos = layers.cosine(self._embed2(frozen, x2),
                   self._embed2(frozen, fake2)[::-1])  # [2, B] by source
    for name, (src, dst) in DIRECTIONS.items():
      i, j = DOMAINS.index(src), DOMAINS.index(dst)
      acc = ((real_s[j] > 0).astype(jnp.float32)
             + (fake_s[j] < 0).astype(jnp.float32)) / 2
      sums[f"d_acc_{name}"] = (acc * w).sum()
      sums[f"d_margin_{name}"] = ((real_s[j] - fake_s[j]) * w).sum()
      if isinstance(frozen, frozen_lib.Identity):
        sums[f"id_cos_{name}"] = (cos[i] * w).sum()
    return sums

  def summarize(self, sums) -> dict[str, float]:
    n = max(float(sums["count"]), 1.0)
    out = {k: float(v) / n for k, v in sums.items() if k != "count"}
    out["count"] = float(sums["count"])
    if "id_cos_photo2cari" in out:
      out["id_cos"] = 0.5 * (out["id_cos_photo2cari"]
                             + out["id_cos_cari2photo"])
    return out

  # --- data --------------------------------------------------------------
  def data_root(self) -> str:
    return data_lib.data_root(self.config.data)

  def domains(self, split: str):
    """(photo, caricature) DomainSources of 'train' | 'valid' | 'test'
    (disjoint subjects)."""
    cfg = ml_collections.ConfigDict(self.config.data.to_dict())
    cfg.root = self.data_root()
    return data_lib.open_domains(cfg, split)

  def source(self, split: str):
    return data_lib.DomainPairSource(*self.domains(split), seed=self.config.seed)

  def balance(self, src):
    return src

  def face_preprocess(self, train: bool) -> data_lib.DomainFacePreprocess:
    return data_lib.face_preprocess(self.config.data, train, self.config.seed)

  def preprocess(self, train: bool) -> data_lib.DomainPairPreprocess:
    return data_lib.DomainPairPreprocess(self.face_preprocess(train))

  def train_dataset(self, start_step: int = 0, train_src=None):
    d = self.config.data
    return pipeline.train_dataset(self.source("train"),
                                  self.preprocess(True), d.batch_size,
                                  self.config.seed, d.num_workers,
                                  start_step=start_step)

  def baseline(self, train_src, eval_src) -> dict[str, float]:
    del train_src, eval_src
    return {}

  # --- samples -----------------------------------------------------------
  def _jitted(self, name, fn):
    if name not in self._jit:
      self._jit[name] = jax.jit(fn, static_argnums=(3,))
    return self._jit[name]

  def style_codes(self, count: int, seed: int = 0) -> np.ndarray:
    """`count` random style codes [count, style_dim] drawn with `seed`."""
    return np.asarray(jax.random.normal(
        jax.random.key(seed), (count, self.config.model.style_dim)))

  def style_grid(self, gen, gen_stats, images: np.ndarray, direction: str,
                 num_styles: int, seed: int = 0, row_labels=None):
    """[input, K translations] per row, as a PIL image (titled columns)."""
    fn = self._jitted("translate", self.translate)
    styles = self.style_codes(num_styles, seed)
    rows = []
    for im in images:
      batch = np.repeat(np.asarray(im)[None], num_styles, 0)
      out = np.asarray(fn(gen, gen_stats, batch, direction, styles))
      rows.append([im, *out])
    titles = ["input"] + [f"s{k}" for k in range(num_styles)]
    return image_grid.make_signed_grid(rows, titles, row_labels)

  def on_eval(self, state, frozen, step: int, workdir: str) -> None:
    del frozen
    e = self.config.eval
    if jax.process_index() != 0 or not e.samples:
      return
    gen = jax.device_get(state.gen)
    stats = jax.device_get(state.gen_stats)
    pre = self.face_preprocess(False)
    photo, cari = self.domains("valid")
    out = os.path.join(workdir, "samples")
    os.makedirs(out, exist_ok=True)
    for direction, src in (("photo2cari", photo), ("cari2photo", cari)):
      n = min(e.samples, len(src))
      images = [pre((i, src[i]))["image"] for i in range(n)]
      self.style_grid(gen, stats, images, direction, e.styles).save(
          os.path.join(out, f"{direction}_step_{step}.png"))
