"""PyTorch twins of facejax models, timed for `launch.benchmark --suite`.

timm's resnet34 (the age regressor's backbone with a 1-unit head) and
timm's Swin-T at the SwinFace geometry; and our own PyTorch modules for the
three GAN steps (StarGAN, the HRFAE age transformer, the SATNet caricature
translator; launch/torch_gan_twins.py), which time facejax's whole G + D
step. torch and timm are optional (requirements-parity.txt); without them
the suite notes the skip. timm is imported beside the torchvision
stand-in, as in the parity tests; the GAN twins need torch only.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import ml_collections
import numpy as np

from launch import torch_gan_twins

# The mode name of `time_in_fresh_process`'s timing.
DEFAULT_MALLOC_MODE = "eager, default malloc"


def available(name: str = "") -> str | None:
  """None if torch and timm import, else the reason they do not.

  A GAN twin (`is_gan(name)`) needs torch only.
  """
  try:
    import importlib  # pylint: disable=g-import-not-at-top
    importlib.import_module("torch")
    if is_gan(name):
      return None
    from launch import torchvision_stub  # pylint: disable=g-import-not-at-top
    torchvision_stub.install()
    importlib.import_module("timm")
  except ImportError as e:
    return (f"{e} (pip install -r requirements-parity.txt && "
            "pip install --no-deps timm==1.0.31)")
  return None


def _resnet34_regressor(torch):
  del torch
  import timm  # pylint: disable=g-import-not-at-top
  model = timm.create_model("resnet34", pretrained=False, num_classes=1)
  loss = lambda out, target: (out[:, 0] - target).abs().mean()
  return model, loss


def _swinface_backbone(torch):
  """timm's Swin-T at SwinFace's geometry (112 px, patch 2, window 7).

  Only the backbone, a 512-d embedding and a softmax over 1,000 identities:
  no analysis branches, so it does less work than facejax's SwinFace step.
  """
  import timm  # pylint: disable=g-import-not-at-top
  model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False,
                            img_size=112, patch_size=2, window_size=7,
                            num_classes=512)
  classifier = torch.nn.Linear(512, 1000, bias=False)
  model = torch.nn.Sequential(model, classifier)
  ce = torch.nn.CrossEntropyLoss()
  loss = lambda out, target: ce(out, target.long() % 1000)
  return model, loss


# name -> a supervised twin's builder (torch -> (model, loss)), or a GAN
# twin's class (torch_gan_twins: built from the config, `step(i)`).
TWINS: dict[str, Callable[..., Any]] = {
    "age_regressor/resnet34": _resnet34_regressor,
    "swinface/swin_t": _swinface_backbone,
    **torch_gan_twins.GAN_TWINS,
}


def is_gan(name: str) -> bool:
  """Whether `name` is a GAN twin (config-built, G + D step)."""
  return name in torch_gan_twins.GAN_TWINS


def twin_name(config) -> str:
  model = config.model.get("name", "")
  if f"{model}/G+D" in torch_gan_twins.GAN_TWINS:
    return f"{model}/G+D"  # the whole G + D step, at any widths
  backbone = config.model.get("backbone", "")
  if config.model.get("name", "") == "swinface":
    backbone = config.model.get("swin", {}).get("variant", backbone)
  return f"{config.model.get('name', config.task)}/{backbone}"


def work_note(config) -> str:
  """Why the twin's step is not the same work as facejax's ('' if it is)."""
  if config.model.get("name", "") == "swinface" and config.get("stage") == 2:
    return ("the twin lacks the 11 analysis branches: compare the "
            "swinface_recognition row for the same work")
  return ""


def time_train_step(name: str, batch_size: int, image_size: int,
                    steps: int = 20, warmup: int = 3,
                    compile_mode: bool = False,
                    config: ml_collections.ConfigDict | None = None
                    ) -> dict[str, Any]:
  """Median time of the twin's eager (or torch.compile'd) Adam step.

  A GAN twin is built from `config` (required) and times facejax's global
  steps warmup .. warmup + steps - 1 (the same mix of D-only and D + G
  steps); eager only.
  """
  if is_gan(name):
    if compile_mode:
      raise NotImplementedError("GAN twins run eager only (the gradient "
                                "penalties' double backward)")
    if config is None:
      raise ValueError(f"the GAN twin {name} needs the facejax config")
    return torch_gan_twins.time_twin(name, config, batch_size, image_size,
                                     steps, warmup)
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model, loss_fn = TWINS[name](torch)
  model.train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.normal(size=(batch_size, 3, image_size,
                                        image_size)).astype(np.float32))
  y = torch.from_numpy(rng.uniform(0, 100, batch_size).astype(np.float32))

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss

  fn = step
  t0 = time.perf_counter()
  if compile_mode:
    fn = torch.compile(step)
  for _ in range(warmup):
    fn()
  first_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  times = np.asarray(times)
  return {"mode": "torch.compile" if compile_mode else "eager",
          "threads": torch.get_num_threads(), "warmup_s": first_s,
          "step_s_median": float(np.median(times)),
          "step_s_p10": float(np.percentile(times, 10)),
          "step_s_p90": float(np.percentile(times, 90))}


def time_in_fresh_process(name: str, batch_size: int, image_size: int,
                          steps: int = 20, warmup: int = 3,
                          config: ml_collections.ConfigDict | None = None
                          ) -> dict[str, Any]:
  """`time_train_step` (eager) in a new Python process: glibc's default
  malloc, as PyTorch users run it, instead of facejax's kept heap. A GAN
  twin's config travels as a JSON file.
  """
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, FACEJAX_KEEP_HEAP="0")
  env["PYTHONPATH"] = os.pathsep.join(
      [repo] + [p for p in [env.get("PYTHONPATH")] if p])
  with tempfile.TemporaryDirectory() as tmp:
    args = [name, str(batch_size), str(image_size), str(steps), str(warmup)]
    if config is not None:
      args.append(os.path.join(tmp, "config.json"))
      with open(args[-1], "w") as f:
        f.write(config.to_json_best_effort())
    proc = subprocess.run(
        [sys.executable, "-m", "launch.torch_twins", *args], env=env,
        cwd=repo, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"twin process exited {proc.returncode}: {last}")
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  out["mode"] = DEFAULT_MALLOC_MODE
  return out


if __name__ == "__main__":
  # python -m launch.torch_twins NAME BATCH SIZE STEPS [WARMUP [CONFIG]]:
  # one JSON line (CONFIG: a JSON file of a GAN twin's facejax config).
  _name, _batch, _size, _steps = sys.argv[1:5]
  _warmup = int(sys.argv[5]) if len(sys.argv) > 5 else 3
  _config = None
  if len(sys.argv) > 6:
    with open(sys.argv[6]) as _f:
      _config = ml_collections.ConfigDict(json.load(_f))
  _missing = available(_name)
  if _missing:
    sys.exit(_missing)
  print(json.dumps(time_train_step(_name, int(_batch), int(_size),
                                   int(_steps), _warmup, config=_config)))
