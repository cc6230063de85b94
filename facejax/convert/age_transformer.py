"""Official HRFAE PyTorch checkpoint -> facejax variables.

The release (InterDigitalInc/HRFAE, logs/001/checkpoint) is one torch.save
dict with `enc_state_dict`, `dec_state_dict`, `mlp_style_state_dict`,
`dis_state_dict` (plus optimizer/scheduler states, ignored); `save_model`
writes `enc.pth.tar`, `dec.pth.tar`, `mlp_style.pth.tar`, `dis.pth.tar`
instead. Both are accepted (a file, or a folder holding the four files;
`dis` is optional). Names and shapes: shared/reference/hrfae.md section 10.

Conversions:
  SN conv  weight_orig (O,I,k,k) -> kernel (k,k,I,O); bias -> bias;
           weight_u (O,) -> spectral u; weight_v (I*k*k,) in PyTorch's
           (I, kh, kw) order -> spectral v in facejax's (kh, kw, I) order
           (facejax.models.spectral_norm). Without weight_v, v comes from
           one power-iteration half-step v = normalize(W^T u).
  plain    weight (O,I,k,k) -> kernel; bias.
  norm     InstanceNorm/BatchNorm weight -> scale, bias -> bias;
           BatchNorm running_mean/var -> batch_stats mean/var.
  ModNet   fc_mix.weight (128, 101) -> mod/kernel (101, 128).
The legacy (non-zip) format of a PyTorch 1.1 file needs torch installed
(facejax.convert.torch_pickle reads zip files without it).

  variables = load_hrfae("logs/001/checkpoint", template)
  # template/result: {'gen': {'params', 'spectral'},
  #                   'disc': {'params', 'spectral', 'batch_stats'}}
"""

import os
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from facejax.convert import torch_pickle

PARTS = ("enc", "dec", "mlp_style", "dis")


def _flatten(tree, prefix=()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def read_checkpoint(path: str) -> dict[str, dict[str, np.ndarray]]:
  """{'enc': {torch key: array}, 'dec': ..., 'mlp_style': ..., 'dis': ...}.

  Args:
    path: the training checkpoint file, or a folder with enc.pth.tar,
      dec.pth.tar, mlp_style.pth.tar and (optional) dis.pth.tar.
  """
  if os.path.isdir(path):
    parts = {}
    for part in PARTS:
      f = os.path.join(path, f"{part}.pth.tar")
      if os.path.isfile(f):
        parts[part] = dict(torch_pickle.read_state_dict(f))
      elif part != "dis":
        raise ValueError(f"{path}: {part}.pth.tar not found (an HRFAE "
                         f"model folder holds enc, dec, mlp_style .pth.tar)")
    return parts
  if not os.path.isfile(path):
    raise ValueError(f"{path}: HRFAE checkpoint not found")
  flat = torch_pickle.read_state_dict(path)
  return split_checkpoint(flat, path)


def split_checkpoint(flat: Mapping[str, np.ndarray], where: str = "<dict>"
                     ) -> dict[str, dict[str, np.ndarray]]:
  """Flat `<part>_state_dict.<key>` names -> per-part state dicts."""
  parts: dict[str, dict[str, np.ndarray]] = {}
  for key, value in flat.items():
    head, _, rest = key.partition(".")
    if head.endswith("_state_dict") and head[:-len("_state_dict")] in PARTS:
      parts.setdefault(head[:-len("_state_dict")], {})[rest] = np.asarray(
          value)
  missing = [p for p in PARTS[:3] if p not in parts]
  if missing:
    heads = sorted({k.partition(".")[0] for k in flat})[:10]
    raise ValueError(f"{where}: not an HRFAE checkpoint: no "
                     f"{', '.join(p + '_state_dict' for p in missing)} "
                     f"(found {heads})")
  return parts


class _Mapper:
  """Fills a flat facejax tree from one part's torch state dict."""

  def __init__(self, sd: Mapping[str, np.ndarray], part: str, where: str):
    self.sd, self.part, self.where = sd, part, where
    self.used: set[str] = set()
    self.out: dict[tuple[str, ...], np.ndarray] = {}

  def take(self, key: str, shape: tuple[int, ...] | None = None
           ) -> np.ndarray:
    if key not in self.sd:
      raise ValueError(f"{self.where}: {self.part} state dict has no "
                       f"{key!r}")
    self.used.add(key)
    value = np.asarray(self.sd[key], np.float32)
    if shape is not None and value.shape != tuple(shape):
      raise ValueError(f"{self.where}: {self.part}.{key} has shape "
                       f"{value.shape}, the model expects {tuple(shape)} "
                       f"(check model.gen_width / disc_width)")
    return value

  def put(self, path: tuple[str, ...], value: np.ndarray, template):
    want = tuple(np.shape(template[path]))
    if value.shape != want:
      raise ValueError(f"{self.where}: {self.part} -> {'/'.join(path)}: "
                       f"shape {value.shape}, expected {want}")
    self.out[path] = value

  def conv(self, torch_prefix: str, path: tuple[str, ...], template,
           spectral: bool = True):
    """One conv (SN or plain) at `path` (the facejax module path)."""
    kernel_shape = np.shape(template[("params",) + path + ("kernel",)])
    k, _, cin, cout = kernel_shape
    if spectral:
      w = self.take(f"{torch_prefix}.weight_orig", (cout, cin, k, k))
      u = self.take(f"{torch_prefix}.weight_u", (cout,))
      v_key = f"{torch_prefix}.weight_v"
      if v_key in self.sd:
        v = self.take(v_key, (cin * k * k,))
        v = v.reshape(cin, k, k).transpose(1, 2, 0).reshape(-1)
      else:  # v = normalize(W^T u), W = weight_orig as (O, kh*kw*I)
        w_mat = w.transpose(0, 2, 3, 1).reshape(cout, -1)
        v = w_mat.T @ u
        v = v / max(float(np.linalg.norm(v)), 1e-12)
      self.put(("spectral",) + path + ("u",), u, template)
      self.put(("spectral",) + path + ("v",), v.astype(np.float32),
               template)
    else:
      w = self.take(f"{torch_prefix}.weight", (cout, cin, k, k))
    self.put(("params",) + path + ("kernel",), w.transpose(2, 3, 1, 0),
             template)
    self.put(("params",) + path + ("bias",),
             self.take(f"{torch_prefix}.bias", (cout,)), template)

  def norm(self, torch_prefix: str, path: tuple[str, ...], template,
           running: bool = False):
    self.put(("params",) + path + ("scale",),
             self.take(f"{torch_prefix}.weight"), template)
    self.put(("params",) + path + ("bias",),
             self.take(f"{torch_prefix}.bias"), template)
    if running:
      self.put(("batch_stats",) + path + ("mean",),
               self.take(f"{torch_prefix}.running_mean"), template)
      self.put(("batch_stats",) + path + ("var",),
               self.take(f"{torch_prefix}.running_var"), template)
      self.used.add(f"{torch_prefix}.num_batches_tracked")

  def block(self, torch_prefix: str, path: tuple[str, ...], template,
            norm: str = "in"):
    """A ConvBlock: `<prefix>.conv` (+ `<prefix>.norm`)."""
    self.conv(f"{torch_prefix}.conv", path + ("conv",), template)
    if norm != "none":
      self.norm(f"{torch_prefix}.norm", path + ("norm",), template,
                running=norm == "batch")

  def check_all_used(self):
    unused = sorted(set(self.sd) - self.used)
    if unused:
      raise ValueError(f"{self.where}: {self.part} keys not used by the "
                       f"model (architecture mismatch?): {unused[:8]}")


def _gen(parts, template, where: str) -> dict:
  tpl = _flatten(template)
  enc = _Mapper(parts["enc"], "enc", where)
  enc.block("conv_1", ("enc", "conv_1"), tpl)
  enc.block("conv_2", ("enc", "conv_2"), tpl)
  enc.block("conv_3", ("enc", "conv_3"), tpl)
  n_res = len([k for k in template["params"]["enc"]
               if k.startswith("res_block_")])
  for i in range(n_res):
    for j in range(2):
      enc.block(f"res_block.{i}.block.{j}",
                ("enc", f"res_block_{i}", f"block_{j}"), tpl)
  enc.check_all_used()
  dec = _Mapper(parts["dec"], "dec", where)
  dec.block("conv_1.1", ("dec", "conv_1"), tpl)
  dec.block("conv_2.1", ("dec", "conv_2"), tpl)
  dec.conv("conv_3.1", ("dec", "conv_3"), tpl, spectral=False)
  dec.check_all_used()
  mod = _Mapper(parts["mlp_style"], "mlp_style", where)
  kernel = tpl[("params", "mod", "kernel")]
  w = mod.take("fc_mix.weight", (np.shape(kernel)[1], np.shape(kernel)[0]))
  mod.put(("params", "mod", "kernel"), w.T, tpl)
  mod.check_all_used()
  flat = {**enc.out, **dec.out, **mod.out}
  missing = sorted("/".join(k) for k in set(tpl) - set(flat))
  if missing:
    raise ValueError(f"{where}: generator variables not filled: "
                     f"{missing[:8]}")
  return traverse_util.unflatten_dict(flat)


def _disc(sd, template, where: str) -> dict:
  tpl = _flatten(template)
  dis = _Mapper(sd, "dis", where)
  for i in range(6):
    norm = "batch" if 1 <= i <= 4 else "none"
    dis.block(f"conv.{i}", (f"conv_{i}",), tpl, norm=norm)
  dis.check_all_used()
  missing = sorted("/".join(k) for k in set(tpl) - set(dis.out))
  if missing:
    raise ValueError(f"{where}: discriminator variables not filled: "
                     f"{missing[:8]}")
  return traverse_util.unflatten_dict(dis.out)


def convert(parts: Mapping[str, Mapping[str, np.ndarray]], template: dict,
            where: str = "<state dict>") -> dict:
  """Per-part torch state dicts -> facejax variables shaped like template.

  Args:
    parts: {'enc', 'dec', 'mlp_style'[, 'dis']: {torch key: array}}.
    template: {'gen': {'params', 'spectral'}, 'disc': {'params',
      'spectral', 'batch_stats'}} (arrays or ShapeDtypeStructs).
    where: file name for error messages.

  Returns:
    {'gen': ..., 'disc': ...} of numpy arrays; 'disc' only if the
    checkpoint has the discriminator.
  """
  out = {"gen": _gen(parts, template["gen"], where)}
  if "dis" in parts:
    out["disc"] = _disc(parts["dis"], template["disc"], where)
  return out


def load_hrfae(path: str, template: dict) -> dict:
  """Reads the official checkpoint at `path` and converts it (see convert)."""
  return convert(read_checkpoint(path), template, path)
