"""PyTorch twins of facejax's three GAN train steps, for the suite.

Written from the reference layer tables (shared/reference/stargan.md,
hrfae.md, caricature.md) and facejax's own modules, not from the official
code. Each twin builds the same networks at the config's widths (the
tests check that the parameter counts equal facejax's), the same losses
and the same optimizers, and `step(i)` does what facejax's jitted step
does at global step i:

* StarGAN: the D update (WGAN-GP critic terms, masked domain
  classification, gradient penalty through a double backward) every step;
  every `loss.n_critic`-th step also the G update (adversarial,
  classification of the translation, L1 cycle reconstruction) against the
  new D. Adam (b1, b2) as configured.
* HRFAE (age transformer): the D update (LSGAN + R1 on real images,
  another double backward) and the G update (one encoding, two decodings,
  L1 reconstruction, cross-entropy of a frozen age estimator, LSGAN) every
  step. The frozen estimator is a randomly initialised DEX of facejax's
  `age_loss.random_init` variant: the suite row's 'vgg16' is VGG-16 (13
  convs, fc6/fc7 4096, 101 ages) at 224 px, as facejax's row. Adam with
  torch's L2 weight decay (facejax too adds the decay to the gradient
  before Adam).
* Caricature (SATNet = MUNIT + SAGAN + spectral norm): two generators and
  two multi-scale discriminators (photo, caricature); the D update (hinge
  or LSGAN over the scales) and the G update (adversarial, image / style /
  content / cycle L1, identity hinge on a frozen SphereFace-20 fc5
  embedding at 112 x 96, randomly initialised as facejax's row:
  `identity.source='random'`). TTUR Adam as configured.

Networks not being updated get no weight gradients (requires_grad off),
as facejax differentiates only the updated network. Spectral norm is
torch.nn.utils.spectral_norm (one power iteration per training forward,
as facejax's training step). torch is imported only by launch/ tooling.
"""

import math
from typing import Any

import numpy as np


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def count(module) -> int:
  return sum(p.numel() for p in module.parameters())


def _frozen(module, frozen: bool):
  for p in module.parameters():
    p.requires_grad_(not frozen)


def _adam(params, cfg, lr_key="lr"):
  """torch Adam from a facejax optimizer config (L2 decay as torch's)."""
  torch = _torch()
  return torch.optim.Adam(params, lr=cfg[lr_key],
                          betas=(cfg.get("b1", 0.9), cfg.get("b2", 0.999)),
                          weight_decay=cfg.get("weight_decay", 0.0))


# ---------------------------------------------------------------------------
# StarGAN
# ---------------------------------------------------------------------------


def _stargan_nets(torch, c_in: int, c_dim: int, image_size: int, m):
  nn = torch.nn

  class ResBlock(nn.Module):

    def __init__(self, dim):
      super().__init__()
      self.body = nn.Sequential(
          nn.Conv2d(dim, dim, 3, 1, 1, bias=False),
          nn.InstanceNorm2d(dim, affine=True), nn.ReLU(),
          nn.Conv2d(dim, dim, 3, 1, 1, bias=False),
          nn.InstanceNorm2d(dim, affine=True))

    def forward(self, x):
      return x + self.body(x)

  class Generator(nn.Module):

    def __init__(self, dim, repeat):
      super().__init__()
      layers = [nn.Conv2d(3 + c_in, dim, 7, 1, 3, bias=False),
                nn.InstanceNorm2d(dim, affine=True), nn.ReLU()]
      for _ in range(2):
        layers += [nn.Conv2d(dim, 2 * dim, 4, 2, 1, bias=False),
                   nn.InstanceNorm2d(2 * dim, affine=True), nn.ReLU()]
        dim *= 2
      layers += [ResBlock(dim) for _ in range(repeat)]
      for _ in range(2):
        layers += [nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=False),
                   nn.InstanceNorm2d(dim // 2, affine=True), nn.ReLU()]
        dim //= 2
      layers += [nn.Conv2d(dim, 3, 7, 1, 3, bias=False), nn.Tanh()]
      self.main = nn.Sequential(*layers)

    def forward(self, x, c):
      c = c[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
      return self.main(torch.cat([x, c], dim=1))

  class Discriminator(nn.Module):

    def __init__(self, dim, repeat):
      super().__init__()
      layers, cin = [], 3
      for _ in range(repeat):
        layers += [nn.Conv2d(cin, dim, 4, 2, 1), nn.LeakyReLU(0.01)]
        cin, dim = dim, dim * 2
      self.main = nn.Sequential(*layers)
      k = image_size // 2**repeat
      self.src = nn.Conv2d(cin, 1, 3, 1, 1, bias=False)
      self.cls = nn.Conv2d(cin, c_dim, k, bias=False)

    def forward(self, x):
      h = self.main(x)
      return self.src(h), self.cls(h).flatten(1)

  return (Generator(m.g_conv_dim, m.g_repeat_num),
          Discriminator(m.d_conv_dim, m.d_repeat_num))


class StarGanTwin:
  """G + D of StarGAN with facejax's step schedule (see the module doc)."""

  def __init__(self, config, batch_size: int, image_size: int):
    torch = self.torch = _torch()
    from facejax.data import stargan as sets_lib  # pylint: disable=g-import-not-at-top
    self.cfg = config
    self.layout = layout = sets_lib.make_layout(config.data)
    self.gen, self.disc = _stargan_nets(torch, layout.label_dim,
                                        layout.cls_dim, image_size,
                                        config.model)
    o = config.optim
    self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=o.g_lr,
                                  betas=(o.b1, o.b2))
    self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=o.d_lr,
                                  betas=(o.b1, o.b2))
    rng = np.random.default_rng(0)
    # facejax's suite batch: noise images, the dummy batch's labels.
    self.x = torch.from_numpy(rng.normal(
        size=(batch_size, 3, image_size, image_size)).astype(np.float32))
    self.c_org = torch.from_numpy(sets_lib.dummy_batch(
        layout, image_size, batch_size)["label"])
    self.set_index = (self.c_org[:, layout.cls_dim:].argmax(1)
                      if layout.mask_dim else
                      torch.zeros(batch_size, dtype=torch.long))

  def nets(self):
    return {"G": self.gen, "D": self.disc}

  def _targets(self):
    """Random targets within each example's own block (mode 'random')."""
    torch, lay, b = self.torch, self.layout, self.x.shape[0]
    parts = []
    for k, block in enumerate(lay.blocks):
      if block.format == "celeba":
        part = torch.bernoulli(torch.full((b, block.size), 0.5))
        group = list(block.one_hot_group or ())
        if group:
          pick = torch.randint(0, len(group), (b,))
          part[:, group] = torch.nn.functional.one_hot(
              pick, len(group)).float()
      else:
        part = torch.nn.functional.one_hot(
            torch.randint(0, block.size, (b,)), block.size).float()
      parts.append(part * (self.set_index == k)[:, None])
    parts.append(self.c_org[:, lay.cls_dim:])
    return torch.cat(parts, dim=1)

  def _cls_loss(self, logits, labels):
    """[B] each example's own block: summed BCE (CelebA) or CE (RaFD)."""
    torch, f = self.torch, self.torch.nn.functional
    total = torch.zeros(logits.shape[0])
    for k, block in enumerate(self.layout.blocks):
      active = self.set_index == k
      lg = torch.where(active[:, None], logits[:, block.slice], 0.0)
      y = labels[:, block.slice]
      if block.format == "celeba":
        loss = f.binary_cross_entropy_with_logits(
            lg, y, reduction="none").sum(1)
      else:
        loss = -(f.log_softmax(lg, 1) * y).sum(1)
      total = total + torch.where(active, loss, 0.0)
    return total.mean()

  def step(self, i: int) -> dict[str, float]:
    torch, lam = self.torch, self.cfg.loss
    x, c_org = self.x, self.c_org
    c_trg = self._targets()
    # D update; G's translation is a constant here.
    _frozen(self.disc, False)
    with torch.no_grad():
      x_fake = self.gen(x, c_trg)
    src_real, cls_real = self.disc(x)
    src_fake, _ = self.disc(x_fake)
    alpha = torch.rand(x.shape[0], 1, 1, 1)
    x_hat = (alpha * x + (1 - alpha) * x_fake).requires_grad_(True)
    grad, = torch.autograd.grad(self.disc(x_hat)[0].sum(), x_hat,
                                create_graph=True)
    gp = ((grad.flatten(1).square().sum(1) + 1e-12).sqrt() - 1).square()
    d_loss = (-src_real.mean() + src_fake.mean()
              + lam.lambda_cls * self._cls_loss(cls_real, c_org)
              + lam.lambda_gp * gp.mean())
    self.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    self.opt_d.step()
    out = {"d_loss": d_loss.item()}
    if (i + 1) % lam.n_critic:
      return out
    # G update against the new D (no D weight gradients).
    _frozen(self.disc, True)
    x_fake = self.gen(x, c_trg)
    src, cls = self.disc(x_fake)
    x_rec = self.gen(x_fake, c_org)
    g_loss = (-src.mean() + lam.lambda_rec * (x - x_rec).abs().mean()
              + lam.lambda_cls * self._cls_loss(cls, c_trg))
    self.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    self.opt_g.step()
    out["g_loss"] = g_loss.item()
    return out


# ---------------------------------------------------------------------------
# HRFAE (age transformer)
# ---------------------------------------------------------------------------

_NUM_AGES = 101
_IMAGE_MEAN = (0.48501961, 0.45795686, 0.40760392)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _hrfae_nets(torch, m):
  nn, sn = torch.nn, torch.nn.utils.spectral_norm

  class Block(nn.Module):
    """Reflect pad k//2 -> SN conv -> IN / BN / none -> LeakyReLU(0.2)."""

    def __init__(self, cin, cout, k, s=1, norm="in", act=True):
      super().__init__()
      layers = [nn.ReflectionPad2d(k // 2), sn(nn.Conv2d(cin, cout, k, s))]
      if norm == "in":
        layers.append(nn.InstanceNorm2d(cout, affine=True))
      elif norm == "batch":
        layers.append(nn.BatchNorm2d(cout, momentum=0.1))
      if act:
        layers.append(nn.LeakyReLU(0.2))
      self.main = nn.Sequential(*layers)

    def forward(self, x):
      return self.main(x)

  class Res(nn.Module):

    def __init__(self, c):
      super().__init__()
      self.a, self.b = Block(c, c, 3), Block(c, c, 3)

    def forward(self, x):
      return x + self.b(self.a(x))

  class Generator(nn.Module):

    def __init__(self, w, n_res):
      super().__init__()
      self.conv_1 = Block(3, w, 9)
      self.conv_2 = Block(w, 2 * w, 3, 2)
      self.conv_3 = Block(2 * w, 4 * w, 3, 2)
      self.res = nn.Sequential(*[Res(4 * w) for _ in range(n_res)])
      self.mod = nn.Linear(_NUM_AGES, 4 * w, bias=False)
      self.up_1 = Block(8 * w, 2 * w, 3)
      self.up_2 = Block(4 * w, w, 3)
      self.out = nn.Sequential(nn.ReflectionPad2d(4), nn.Conv2d(w, 3, 9))

    def encode(self, x):
      skip_2 = self.conv_2(self.conv_1(x))
      skip_1 = self.conv_3(skip_2)
      return self.res(skip_1), skip_1, skip_2

    def decode(self, code, ages):
      content, skip_1, skip_2 = code
      idx = ages.round().clamp(0, _NUM_AGES - 1).long()
      vec = torch.sigmoid(self.mod(
          torch.nn.functional.one_hot(idx, _NUM_AGES).float()))
      up = lambda t: torch.nn.functional.interpolate(t, scale_factor=2,
                                                     mode="nearest")
      h = torch.cat([content * vec[:, :, None, None], skip_1], 1)
      h = torch.cat([self.up_1(up(h)), skip_2], 1)
      return self.out(self.up_2(up(h)))

  class Discriminator(nn.Module):

    def __init__(self, w):
      super().__init__()
      spec = ((3, w, 2, "none", True), (w, 2 * w, 2, "batch", True),
              (2 * w, 4 * w, 2, "batch", True),
              (4 * w, 8 * w, 2, "batch", True),
              (8 * w, 16 * w, 1, "batch", True),
              (16 * w, 1, 1, "none", False))
      self.main = nn.Sequential(*[Block(i, o, 4, s, n, a)
                                  for i, o, s, n, a in spec])

    def forward(self, x):
      return self.main(x)

  return (Generator(m.gen_width, m.num_res_blocks),
          Discriminator(m.disc_width))


def _random_dex(torch, variant: str):
  """A random DEX (VGG + fc6/fc7 + 101 ages), frozen, in eval mode.

  facejax's `age_loss.random_init` variant ('vgg16' at 224 px, 'tiny' at
  64 px); returns (network, input size).
  """
  from facejax.models import vgg  # pylint: disable=g-import-not-at-top
  convs, widths, fc = vgg.VARIANTS[variant]
  size = 224 if variant == "vgg16" else 64
  nn, layers, cin = torch.nn, [], 3
  for n, c in zip(convs, widths):
    for _ in range(n):
      layers += [nn.Conv2d(cin, c, 3, 1, 1), nn.ReLU()]
      cin = c
    layers.append(nn.MaxPool2d(2))
  side = size // 2**len(convs)
  net = nn.Sequential(*layers, nn.Flatten(),
                      nn.Linear(cin * side * side, fc), nn.ReLU(),
                      nn.Linear(fc, fc), nn.ReLU(),
                      nn.Linear(fc, _NUM_AGES)).eval()
  _frozen(net, True)
  return net, size


class HrfaeTwin:
  """HRFAE G + D and its frozen age estimator (see the module doc)."""

  def __init__(self, config, batch_size: int, image_size: int):
    torch = self.torch = _torch()
    self.cfg = config
    self.gen, self.disc = _hrfae_nets(torch, config.model)
    self.estimator, self.est_size = _random_dex(
        torch, config.age_loss.get("random_init", "") or "vgg16")
    self.opt_g = _adam(self.gen.parameters(), config.optim_g)
    self.opt_d = _adam(self.disc.parameters(), config.optim_d)
    rng = np.random.default_rng(0)
    mean = torch.tensor(_IMAGE_MEAN)[None, :, None, None]
    shape = (batch_size, 3, image_size, image_size)
    # [-1, 1] pipeline images -> the networks' mean-subtracted domain.
    self.x_a, self.x_b = [
        (torch.from_numpy(rng.normal(size=shape).astype(np.float32)) + 1)
        / 2 - mean for _ in range(2)]
    self.mean = mean
    self.ages = torch.from_numpy(
        rng.uniform(0, 100, batch_size).astype(np.float32)).round()
    self.w_recon = float(config.stages[0][2])

  def nets(self):
    return {"G": self.gen, "D": self.disc}

  def _targets(self):
    t = self.cfg.target
    return torch_randint(self.torch, t.age_min, t.age_max,
                         self.ages.shape[0])

  def _log_probs(self, x_mod):
    torch = self.torch
    x = (x_mod + self.mean).flip(1) * 255.0 - torch.tensor(
        _CAFFE_MEAN_BGR)[None, :, None, None]
    x = torch.nn.functional.interpolate(
        x, size=(self.est_size,) * 2, mode="bilinear", align_corners=False)
    return torch.log_softmax(self.estimator(x), dim=1)

  def step(self, i: int) -> dict[str, float]:
    del i
    torch, lw = self.torch, self.cfg.loss
    ages = self.ages - torch.bernoulli(torch.full_like(self.ages, 0.5))
    # D update: R1 on real images (double backward), LSGAN.
    _frozen(self.disc, False)
    with torch.no_grad():
      x_fake = self.gen.decode(self.gen.encode(self.x_a), self._targets())
    x_b = self.x_b.clone().requires_grad_(True)
    real = self.disc(x_b)
    grad, = torch.autograd.grad(real.mean(), x_b, create_graph=True)
    r1 = 0.5 * lw.r1_gamma * grad.square().flatten(1).sum(1).mean()
    fake = self.disc(x_fake)
    d_loss = (lw.w_dis * ((real - 1).square().mean() + fake.square().mean())
              + lw.w_gp * r1)
    self.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    self.opt_d.step()
    # G update: one encoding, two decodings, against the new D.
    _frozen(self.disc, True)
    t_g = self._targets()
    code = self.gen.encode(self.x_a)
    x_rec, x_mod = self.gen.decode(code, ages), self.gen.decode(code, t_g)
    logp = self._log_probs(x_mod)
    ce = -logp.gather(1, t_g.long()[:, None]).mean()
    adv = (self.disc(x_mod) - 1).square().mean()
    tv = ((x_mod[:, :, 1:] - x_mod[:, :, :-1]).abs().mean()
          + (x_mod[..., 1:] - x_mod[..., :-1]).abs().mean())
    g_loss = (self.w_recon * (x_rec - self.x_a).abs().mean()
              + lw.w_class * ce + lw.w_adver * adv + lw.w_tv * tv)
    self.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    self.opt_g.step()
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}


def torch_randint(torch, low: int, high: int, n: int):
  return torch.randint(low, high, (n,)).float()


# ---------------------------------------------------------------------------
# Caricature (SATNet: MUNIT + SAGAN + SN)
# ---------------------------------------------------------------------------


def _satnet_nets(torch, m):
  nn, f, sn = torch.nn, torch.nn.functional, torch.nn.utils.spectral_norm

  def in_norm(x):
    return f.instance_norm(x, eps=1e-5)

  class LayerNorm(nn.Module):
    """MUNIT's: per example over C, H, W (unbiased std), per-channel
    gamma, beta."""

    def __init__(self, c):
      super().__init__()
      self.gamma = nn.Parameter(torch.rand(c))
      self.beta = nn.Parameter(torch.zeros(c))

    def forward(self, x):
      flat = x.flatten(1)
      mean = flat.mean(1)[:, None, None, None]
      std = flat.std(1)[:, None, None, None]
      y = (x - mean) / (std + 1e-5)
      return y * self.gamma[None, :, None, None] + self.beta[
          None, :, None, None]

  class Block(nn.Module):
    """pad -> conv (SN optional) -> norm -> activation (Conv2dBlock)."""

    def __init__(self, cin, cout, k, s=1, p=0, norm="none", act="relu",
                 pad="reflect", spectral=False):
      super().__init__()
      self.pad = (nn.ReflectionPad2d(p) if pad == "reflect"
                  else nn.ZeroPad2d(p)) if p else nn.Identity()
      conv = nn.Conv2d(cin, cout, k, s)
      self.conv = sn(conv) if spectral else conv
      self.norm = LayerNorm(cout) if norm == "ln" else None
      self.norm_kind, self.act = norm, act

    def forward(self, x, ada=None):
      x = self.conv(self.pad(x))
      if self.norm_kind == "in":
        x = in_norm(x)
      elif self.norm_kind == "ln":
        x = self.norm(x)
      elif self.norm_kind == "adain":
        beta, gamma = ada
        x = in_norm(x) * gamma[:, :, None, None] + beta[:, :, None, None]
      if self.act == "relu":
        x = torch.relu(x)
      elif self.act == "lrelu":
        x = f.leaky_relu(x, 0.2)
      elif self.act == "tanh":
        x = torch.tanh(x)
      return x

  class Res(nn.Module):

    def __init__(self, c, norm):
      super().__init__()
      self.a = Block(c, c, 3, 1, 1, norm, "relu")
      self.b = Block(c, c, 3, 1, 1, norm, "none")

    def forward(self, x, ada=(None, None)):
      return x + self.b(self.a(x, ada[0]), ada[1])

  class Attention(nn.Module):
    """SAGAN: gamma * softmax(q k^T) v + x; q, k C/8, v C, SN convs."""

    def __init__(self, c, spectral):
      super().__init__()
      conv = lambda o: sn(nn.Conv2d(c, o, 1)) if spectral else nn.Conv2d(
          c, o, 1)
      self.q, self.k, self.v = conv(max(c // 8, 1)), conv(
          max(c // 8, 1)), conv(c)
      self.gamma = nn.Parameter(torch.full((), float(m.gamma_init)))

    def forward(self, x):
      b, c, h, w = x.shape
      q = self.q(x).flatten(2).transpose(1, 2)       # [B, HW, C/8]
      k = self.k(x).flatten(2)                       # [B, C/8, HW]
      v = self.v(x).flatten(2)                       # [B, C, HW]
      attn = torch.softmax(torch.bmm(q, k), dim=-1)  # [B, HW, HW]
      out = torch.bmm(v, attn.transpose(1, 2)).view(b, c, h, w)
      return self.gamma * out + x

  class Generator(nn.Module):

    def __init__(self):
      super().__init__()
      d = m.dim
      enc = [Block(3, d, 7, 1, 3, "in")]
      for i in range(m.n_downsample):
        enc.append(Block(d * 2**i, d * 2**(i + 1), 4, 2, 1, "in"))
      self.content = nn.ModuleList(enc)
      c = self.c = d * 2**m.n_downsample
      self.content_res = nn.ModuleList(Res(c, "in") for _ in range(m.n_res))
      sty, ch = [Block(3, d, 7, 1, 3)], d
      for i in range(m.n_style_downsample):
        nxt = d * 2**min(i + 1, 2)
        sty.append(Block(ch, nxt, 4, 2, 1))
        ch = nxt
      self.style = nn.ModuleList(sty)
      self.style_out = nn.Linear(ch, m.style_dim)
      if m.attention:
        self.content_attn = Attention(c, m.attention_sn)
        self.content_extra = Res(c, "in")
        self.dec_attn = Attention(c, m.attention_sn)
      n_ada = m.n_res + int(m.attention)
      self.dec_res = nn.ModuleList(Res(c, "adain") for _ in range(n_ada))
      self.num_adain = 2 * n_ada
      self.ups = nn.ModuleList(
          Block(c // 2**i, c // 2**(i + 1), 5, 1, 2, "ln")
          for i in range(m.n_downsample))
      self.out = Block(c // 2**m.n_downsample, 3, 7, 1, 3, "none", "tanh")
      self.mlp = nn.Sequential(
          nn.Linear(m.style_dim, m.mlp_dim), nn.ReLU(),
          nn.Linear(m.mlp_dim, m.mlp_dim), nn.ReLU(),
          nn.Linear(m.mlp_dim, 2 * c * self.num_adain))

    def encode(self, x):
      h = x
      for layer in self.content:
        h = layer(h)
      for block in self.content_res:
        h = block(h)
      if m.attention:
        h = self.content_extra(self.content_attn(h))
      s = x
      for layer in self.style:
        s = layer(s)
      return h, self.style_out(s.mean((2, 3)))

    def decode(self, content, style):
      c = content.shape[1]
      p = self.mlp(style).view(style.shape[0], self.num_adain, 2, c)
      ada = [(p[:, i, 0], p[:, i, 1]) for i in range(self.num_adain)]
      h = content
      for j in range(m.n_res):
        h = self.dec_res[j](h, (ada[2 * j], ada[2 * j + 1]))
      if m.attention:
        h = self.dec_attn(h)
        j = m.n_res
        h = self.dec_res[j](h, (ada[2 * j], ada[2 * j + 1]))
      for up in self.ups:
        h = up(f.interpolate(h, scale_factor=2, mode="nearest"))
      return self.out(h)

  class Scale(nn.Module):

    def __init__(self):
      super().__init__()
      d = m.d_dim
      layers = [Block(3, d, 4, 2, 1, "none", "lrelu", "zero")]
      for _ in range(m.d_layers - 1):
        layers.append(Block(d, 2 * d, 4, 2, 1, "none", "lrelu", "zero",
                            spectral=True))
        d *= 2
      if m.d_attention:
        layers.append(Attention(d, True))
      layers.append(Block(d, 1, 1, 1, 0, "none", "none"))
      self.main = nn.Sequential(*layers)

    def forward(self, x):
      return self.main(x)

  class MsDiscriminator(nn.Module):

    def __init__(self):
      super().__init__()
      self.scales = nn.ModuleList(Scale() for _ in range(m.d_scales))

    def forward(self, x):
      outs = []
      for i, scale in enumerate(self.scales):
        outs.append(scale(x))
        if i + 1 < len(self.scales):
          x = f.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
      return outs

  return Generator, MsDiscriminator


def _sphereface(torch, variant: str):
  """SphereFace trunk + fc5 (random, frozen) at 112 x 96 (or its size)."""
  from facejax.models import sphereface  # pylint: disable=g-import-not-at-top
  widths, units, dim = sphereface.VARIANTS[variant]
  nn = torch.nn

  class Unit(nn.Module):

    def __init__(self, c):
      super().__init__()
      self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.PReLU(c),
                                nn.Conv2d(c, c, 3, 1, 1), nn.PReLU(c))

    def forward(self, x):
      return x + self.body(x)

  class Trunk(nn.Module):

    def __init__(self, input_size):
      super().__init__()
      layers, cin = [], 3
      for w, n in zip(widths, units):
        layers += [nn.Conv2d(cin, w, 3, 2, 1), nn.PReLU(w)]
        layers += [Unit(w) for _ in range(n)]
        cin = w
      self.main = nn.Sequential(*layers)
      h, w_ = input_size
      for _ in widths:
        h, w_ = (h + 1) // 2, (w_ + 1) // 2
      self.fc5 = nn.Linear(cin * h * w_, dim)

    def forward(self, x):
      return self.fc5(self.main(x).flatten(1))

  return Trunk


class CaricatureTwin:
  """Photo and caricature G + multi-scale D, frozen identity network."""

  def __init__(self, config, batch_size: int, image_size: int):
    torch = self.torch = _torch()
    self.cfg = config
    generator, discriminator = _satnet_nets(torch, config.model)
    self.gens = torch.nn.ModuleList([generator(), generator()])
    self.discs = torch.nn.ModuleList([discriminator(), discriminator()])
    idc = config.identity
    self.id_size = tuple(int(s) for s in idc.input_size)
    self.identity = None
    if idc.source != "none" and config.loss.identity_w:
      self.identity = _sphereface(torch, idc.variant)(self.id_size).eval()
      _frozen(self.identity, True)
    self.opt_g = _adam(self.gens.parameters(), config.optim_g)
    self.opt_d = _adam(self.discs.parameters(), config.optim_d)
    rng = np.random.default_rng(0)
    shape = (batch_size, 3, image_size, image_size)
    self.x = [torch.from_numpy(rng.normal(size=shape).astype(np.float32))
              for _ in range(2)]

  def nets(self):
    return {"G": self.gens, "D": self.discs}

  def _embed(self, x):
    torch = self.torch
    x = torch.nn.functional.interpolate(x, size=self.id_size,
                                        mode="bilinear", align_corners=False)
    return self.identity(x.flip(1) * (127.5 / 128.0))

  def _gan(self):
    if self.cfg.loss.gan == "hinge":
      d = lambda r, f: (self.torch.relu(1 - r).mean()
                        + self.torch.relu(1 + f).mean())
      g = lambda f: -f.mean()
    else:
      d = lambda r, f: (r - 1).square().mean() + f.square().mean()
      g = lambda f: (f - 1).square().mean()
    return d, g

  def step(self, i: int) -> dict[str, float]:
    del i
    torch, lw, x, b = self.torch, self.cfg.loss, self.x, self.x[0].shape[0]
    sd = self.cfg.model.style_dim
    d_fn, g_fn = self._gan()
    # D update: translations with fresh styles (no gradient to G).
    _frozen(self.discs, False)
    with torch.no_grad():
      c = [g.encode(xi)[0] for g, xi in zip(self.gens, x)]
      fake = [self.gens[k].decode(c[1 - k], torch.randn(b, sd))
              for k in range(2)]
    d_loss = 0.0
    for k in range(2):
      outs = self.discs[k](torch.cat([x[k], fake[k]]))
      d_loss = d_loss + sum(d_fn(o[:b], o[b:]) for o in outs)
    d_loss = lw.gan_w * d_loss
    self.opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    self.opt_d.step()
    # G update with new styles against the new D.
    _frozen(self.discs, True)
    cs = [g.encode(xi) for g, xi in zip(self.gens, x)]
    rand = [torch.randn(b, sd) for _ in range(2)]
    recon, trans = [], []
    for k in range(2):
      out = self.gens[k].decode(torch.cat([cs[k][0], cs[1 - k][0]]),
                                torch.cat([cs[k][1], rand[k]]))
      recon.append(out[:b])
      trans.append(out[b:])
    re = [g.encode(t) for g, t in zip(self.gens, trans)]
    l1 = lambda a, t: (a - t).abs().mean()
    recon_x = sum(l1(recon[k], x[k]) for k in range(2))
    recon_s = sum(l1(re[k][1], rand[k]) for k in range(2))
    recon_c = sum(l1(re[1 - k][0], cs[k][0]) for k in range(2))
    g_loss = (lw.recon_x_w * recon_x + lw.recon_s_w * recon_s
              + lw.recon_c_w * recon_c)
    if lw.recon_cyc_w:
      back = [self.gens[k].decode(re[1 - k][0], cs[k][1]) for k in range(2)]
      g_loss = g_loss + lw.recon_cyc_w * sum(l1(back[k], x[k])
                                             for k in range(2))
    adv = sum(sum(g_fn(o) for o in self.discs[k](trans[k]))
              for k in range(2))
    g_loss = g_loss + lw.gan_w * adv
    if self.identity is not None:
      emb = [self._embed(torch.cat([x[k], trans[k]])) for k in range(2)]
      ident = 0.0
      for k in range(2):
        cos = torch.nn.functional.cosine_similarity(
            emb[k][:b], emb[1 - k][b:], dim=1)
        ident = ident + torch.relu(lw.identity_thd - cos).mean()
      g_loss = g_loss + lw.identity_w * ident
    self.opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    self.opt_g.step()
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}


# twin name (torch_twins.twin_name) -> its class.
GAN_TWINS = {
    "stargan/G+D": StarGanTwin,
    "hrfae/G+D": HrfaeTwin,
    "satnet/G+D": CaricatureTwin,
}


def facejax_param_counts(config) -> dict[str, int]:
  """facejax's G and D parameter counts for `config` (shapes only)."""
  import jax  # pylint: disable=g-import-not-at-top
  from facejax import tasks  # pylint: disable=g-import-not-at-top
  from facejax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  task = tasks.build(config)
  state = jax.eval_shape(task.init_state, jax.random.key(0))
  return {"G": state_lib.count_params(state.gen),
          "D": state_lib.count_params(state.disc)}


def twin_param_counts(twin) -> dict[str, int]:
  return {k: count(v) for k, v in twin.nets().items()}


def time_twin(name: str, config, batch_size: int, image_size: int,
              steps: int, warmup: int) -> dict[str, Any]:
  """Per-step times of the twin's steps warmup .. warmup + steps - 1.

  The same global step indices as facejax's timed steps, so a GAN with
  several kinds of step (StarGAN's D-only and D+G) times the same mix.
  """
  import time  # pylint: disable=g-import-not-at-top
  torch = _torch()
  torch.manual_seed(0)
  t0 = time.perf_counter()
  twin = GAN_TWINS[name](config, batch_size, image_size)
  losses = {}
  for i in range(warmup):
    losses = twin.step(i)
  first_s = time.perf_counter() - t0
  times = []
  for i in range(warmup, warmup + steps):
    t0 = time.perf_counter()
    losses = twin.step(i)
    times.append(time.perf_counter() - t0)
  times = np.asarray(times)
  return {"mode": "eager", "threads": torch.get_num_threads(),
          "warmup_s": first_s, "step_s_median": float(np.median(times)),
          "step_s_p10": float(np.percentile(times, 10)),
          "step_s_p90": float(np.percentile(times, 90)),
          "step_s_mean": float(np.mean(times)),
          "losses_finite": all(math.isfinite(v) for v in losses.values()),
          "params": twin_param_counts(twin)}
