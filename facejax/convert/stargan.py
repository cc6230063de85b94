"""Official StarGAN PyTorch checkpoints (`*-G.ckpt`, `*-D.ckpt`) -> params.

The official solver saves raw state dicts (names in the reference doc):

  G: main.0 conv (64, 3+c, 7, 7); main.1 InstanceNorm; main.3/4, main.6/7
     down-sampling conv + norm; main.{9..8+R}.main.{0,1,3,4} residual
     blocks (conv, norm, conv, norm); main.{9+R}/{10+R}, main.{12+R}/{13+R}
     ConvTranspose (in, out, 4, 4) + norm; main.{15+R} conv (3, 64, 7, 7).
  D: main.{0,2,..}.{weight,bias} convs; conv1.weight (1, C, 3, 3) realism
     head; conv2.weight (c_dim, C, k, k) classification head.

Instance-norm running buffers (running_mean/var, num_batches_tracked) are
dropped: the reference never uses them (it never calls `.eval()`).
Conv kernels OIHW -> HWIO; transposed-conv weights (in, out, k, k) are
flipped spatially -> [k, k, in, out] (see `stargan.ConvTranspose`).
Every expected tensor must be present with the expected shape; anything
else left over is an error too (a different architecture).
"""

import os
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from facejax.convert import torch_pickle
from facejax.data.formats import rafd

_BUFFERS = (".running_mean", ".running_var", ".num_batches_tracked")


def _conv(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO


def _conv_transpose(w: np.ndarray) -> np.ndarray:
  return np.transpose(w[:, :, ::-1, ::-1], (2, 3, 0, 1))  # IOHW -> HWIO


def generator_names(repeat_num: int) -> dict[str, tuple[str, str]]:
  """{flax path: (torch key, kind)} of the generator."""
  names = {"conv0/kernel": ("main.0.weight", "conv")}

  def norm(path, idx):
    names[f"{path}/scale"] = (f"{idx}.weight", "vec")
    names[f"{path}/bias"] = (f"{idx}.bias", "vec")

  norm("in0", "main.1")
  names["down0/kernel"] = ("main.3.weight", "conv")
  norm("down0_norm", "main.4")
  names["down1/kernel"] = ("main.6.weight", "conv")
  norm("down1_norm", "main.7")
  for i in range(repeat_num):
    t = f"main.{9 + i}.main"
    names[f"res{i}/conv1/kernel"] = (f"{t}.0.weight", "conv")
    norm(f"res{i}/norm1", f"{t}.1")
    names[f"res{i}/conv2/kernel"] = (f"{t}.3.weight", "conv")
    norm(f"res{i}/norm2", f"{t}.4")
  base = 9 + repeat_num
  names["up0/conv/kernel"] = (f"main.{base}.weight", "convt")
  norm("up0_norm", f"main.{base + 1}")
  names["up1/conv/kernel"] = (f"main.{base + 3}.weight", "convt")
  norm("up1_norm", f"main.{base + 4}")
  names["conv_out/kernel"] = (f"main.{base + 6}.weight", "conv")
  return names


def discriminator_names(repeat_num: int) -> dict[str, tuple[str, str]]:
  """{flax path: (torch key, kind)} of the discriminator."""
  names = {}
  for i in range(repeat_num):
    names[f"conv{i}/kernel"] = (f"main.{2 * i}.weight", "conv")
    names[f"conv{i}/bias"] = (f"main.{2 * i}.bias", "vec")
  names["src/kernel"] = ("conv1.weight", "conv")
  names["cls/kernel"] = ("conv2.weight", "conv")
  return names


_CONVERT = {"conv": _conv, "convt": _conv_transpose, "vec": lambda w: w}


def _map(state_dict: Mapping[str, np.ndarray], params: Any,
         names: dict[str, tuple[str, str]], what: str) -> Any:
  source = getattr(state_dict, "source", None) or what
  flat = traverse_util.flatten_dict(params, sep="/")
  if set(flat) != set(names):
    raise ValueError(f"{what}: facejax params do not match the StarGAN "
                     f"layout (model config differs?): "
                     f"{sorted(set(flat) ^ set(names))[:8]}")
  problems, out = [], {}
  for path, (key, kind) in names.items():
    if key not in state_dict:
      problems.append(f"missing {key}")
      continue
    value = _CONVERT[kind](np.asarray(state_dict[key], np.float32))
    want = tuple(np.shape(flat[path]))
    if value.shape != want:
      problems.append(f"{key}: shape {np.shape(state_dict[key])} does not "
                      f"give {want} for {path}")
      continue
    out[path] = np.ascontiguousarray(value)
  used = {key for key, _ in names.values()}
  extra = sorted(k for k in state_dict if k not in used
                 and not k.endswith(_BUFFERS))
  problems += [f"unexpected {k}" for k in extra[:8]]
  if problems:
    raise ValueError(f"{source}: not a StarGAN {what} checkpoint matching "
                     f"the config (model.g_conv_dim/g_repeat_num/"
                     f"d_conv_dim/d_repeat_num, labels):\n  "
                     + "\n  ".join(problems))
  return traverse_util.unflatten_dict(out, sep="/")


def generator_from_torch(state_dict: Mapping[str, np.ndarray], params: Any,
                         repeat_num: int) -> Any:
  """G params (same tree as `params`) from a `*-G.ckpt` state dict."""
  return _map(state_dict, params, generator_names(repeat_num), "generator")


def discriminator_from_torch(state_dict: Mapping[str, np.ndarray],
                             params: Any, repeat_num: int) -> Any:
  """D params (same tree as `params`) from a `*-D.ckpt` state dict."""
  return _map(state_dict, params, discriminator_names(repeat_num),
              "discriminator")


def checkpoint_paths(init_from: str) -> tuple[str, str | None]:
  """`.../200000-G.ckpt` or the prefix `.../200000` -> (G path, D path).

  The D file is optional (a released G alone can be used for
  translation); it is None when absent.
  """
  prefix = init_from
  for suffix in ("-G.ckpt", "-D.ckpt"):
    if prefix.endswith(suffix):
      prefix = prefix[:-len(suffix)]
  g_path, d_path = prefix + "-G.ckpt", prefix + "-D.ckpt"
  if not os.path.isfile(g_path):
    raise FileNotFoundError(f"{g_path}: no StarGAN generator checkpoint "
                            f"(config key model.init_from={init_from!r})")
  return g_path, d_path if os.path.isfile(d_path) else None


def load(init_from: str, gen_params: Any, disc_params: Any,
         g_repeat_num: int, d_repeat_num: int) -> tuple[Any, Any]:
  """(G params, D params) from official checkpoint files on disk."""
  g_path, d_path = checkpoint_paths(init_from)
  gen = generator_from_torch(torch_pickle.read_state_dict(g_path),
                             gen_params, g_repeat_num)
  disc = disc_params
  if d_path is not None:
    disc = discriminator_from_torch(torch_pickle.read_state_dict(d_path),
                                    disc_params, d_repeat_num)
  return gen, disc


# The released models' label blocks, by the generator's label channels.
CELEBA_RELEASE = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")


def release_config(weights: str, config):
  """`config` (configs/stargan.py's, changed in place and returned) shaped
  like an official generator file: its label blocks and the generator's
  width and depth, read from the file."""
  g_path, _ = checkpoint_paths(weights)
  sd = torch_pickle.read_state_dict(g_path)
  if "main.0.weight" not in sd:
    raise ValueError(f"{g_path}: no main.0.weight; not a StarGAN generator")
  conv_dim, in_channels = sd["main.0.weight"].shape[:2]
  labels = in_channels - 3
  repeat = len({k.split(".")[1] for k in sd
                if k.startswith("main.") and ".main." in k})
  celeba, rafd_set = (dict(s) for s in config.data.sets)
  celeba.update(attributes=CELEBA_RELEASE, crop_size=0)
  rafd_set.update(classes=rafd.EXPRESSIONS, crop_size=0)
  by_labels = {5: [celeba], 8: [rafd_set], 5 + 8 + 2: [celeba, rafd_set]}
  if labels not in by_labels:
    raise ValueError(
        f"{g_path}: the generator takes {labels} label channels; the "
        f"releases take 5 (CelebA), 8 (RaFD) or 15 (both): give --config "
        f"with the data.sets it was trained on")
  with config.unlocked():
    config.data.sets = by_labels[labels]
    config.model.g_conv_dim = int(conv_dim)
    config.model.g_repeat_num = repeat
  return config
