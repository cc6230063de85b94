"""A minimal stand-in `torchvision` so that `import timm` works beside torch.

PyPI's torchvision wheels do not import beside the CPU torch 2.13 wheel used
for the parity tests (`operator torchvision::nms does not exist`), and timm
imports torchvision at import time. Model construction only needs
`torchvision.ops.misc.FrozenBatchNorm2d` and
`torchvision.transforms.InterpolationMode`; every other name timm imports
(datasets, transforms, `save_image`, ...) resolves to a placeholder class that
raises if it is ever instantiated or called.

`torchvision.models` is deliberately absent, so timm's optional FX feature
extraction sees an ImportError and disables itself.

Used by the parity tests and the PyTorch side of launch.benchmark --suite
(before `import timm`):

  from launch import torchvision_stub
  torchvision_stub.install()
  import timm
"""

import enum
import importlib
import importlib.util
import sys
import types

# Submodules timm imports (see `grep -r torchvision timm/`).
_SUBMODULES = (
    "ops",
    "ops.misc",
    "transforms",
    "transforms.functional",
    "datasets",
    "utils",
)


class InterpolationMode(enum.Enum):
  """Same members and values as torchvision.transforms.InterpolationMode."""
  NEAREST = "nearest"
  NEAREST_EXACT = "nearest-exact"
  BILINEAR = "bilinear"
  BICUBIC = "bicubic"
  BOX = "box"
  HAMMING = "hamming"
  LANCZOS = "lanczos"


def _placeholder(qualname: str) -> type:
  """A class that can be imported and subclassed but not used."""

  def _fail(self, *args, **kwargs):
    del self, args, kwargs
    raise RuntimeError(
        f"{qualname} comes from the torchvision stand-in in "
        "launch/torchvision_stub.py and is not implemented; install a real "
        "torchvision matching torch to use it.")

  name = qualname.rsplit(".", 1)[-1]
  return type(name, (), {"__init__": _fail, "__call__": _fail,
                         "__module__": qualname.rsplit(".", 1)[0]})


class _StubModule(types.ModuleType):
  """A module whose unknown public attributes are placeholder classes."""

  def __getattr__(self, name: str):
    if name.startswith("__"):
      raise AttributeError(name)
    value = _placeholder(f"{self.__name__}.{name}")
    setattr(self, name, value)
    return value


def _frozen_batch_norm_2d():
  """torchvision.ops.misc.FrozenBatchNorm2d, reimplemented on torch."""
  import torch  # pylint: disable=g-import-not-at-top

  class FrozenBatchNorm2d(torch.nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (buffers)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
      super().__init__()
      self.eps = eps
      self.register_buffer("weight", torch.ones(num_features))
      self.register_buffer("bias", torch.zeros(num_features))
      self.register_buffer("running_mean", torch.zeros(num_features))
      self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
      state_dict.pop(prefix + "num_batches_tracked", None)
      super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                    strict, missing_keys, unexpected_keys,
                                    error_msgs)

    def forward(self, x):
      w = self.weight.reshape(1, -1, 1, 1)
      b = self.bias.reshape(1, -1, 1, 1)
      rv = self.running_var.reshape(1, -1, 1, 1)
      rm = self.running_mean.reshape(1, -1, 1, 1)
      scale = w * (rv + self.eps).rsqrt()
      return x * scale + (b - rm * scale)

    def extra_repr(self):
      return f"{self.weight.shape[0]}, eps={self.eps}"

  FrozenBatchNorm2d.__module__ = "torchvision.ops.misc"
  return FrozenBatchNorm2d


def _real_torchvision_imports() -> bool:
  if importlib.util.find_spec("torchvision") is None:
    return False
  try:
    importlib.import_module("torchvision")
    return True
  except Exception:  # pylint: disable=broad-except
    # A wheel built for another torch fails inside its op registration;
    # drop the half-imported modules so the stand-in can take their place.
    for key in [k for k in sys.modules
                if k == "torchvision" or k.startswith("torchvision.")]:
      del sys.modules[key]
    return False


def install() -> bool:
  """Registers the stand-in unless a working torchvision is importable.

  Needs torch. Idempotent.

  Returns:
    True if the stand-in is (now) in sys.modules, False if the real
    torchvision is used.
  """
  existing = sys.modules.get("torchvision")
  if existing is not None:
    return bool(getattr(existing, "__facejax_stub__", False))
  if _real_torchvision_imports():
    return False

  root = _StubModule("torchvision")
  root.__path__ = []
  root.__version__ = "0.0.0+facejax.stub"
  root.__facejax_stub__ = True
  modules = {"torchvision": root}
  for sub in _SUBMODULES:
    name = f"torchvision.{sub}"
    mod = _StubModule(name)
    mod.__path__ = []
    modules[name] = mod
  modules["torchvision.ops.misc"].FrozenBatchNorm2d = _frozen_batch_norm_2d()
  modules["torchvision.transforms"].InterpolationMode = InterpolationMode
  modules["torchvision.transforms.functional"].InterpolationMode = (
      InterpolationMode)
  # Link parents to children, as the import system does.
  for name, mod in modules.items():
    if name != "torchvision":
      parent, child = name.rsplit(".", 1)
      setattr(modules[parent], child, mod)
  sys.modules.update(modules)
  return True
