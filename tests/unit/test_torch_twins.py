"""PyTorch twins of the GAN steps (launch/torch_gan_twins.py) and the CPU
line of the benchmark tables.

Each twin at a tiny geometry (smoke widths, 32 px, batch 2-4): the same
parameter counts as facejax's G and D, and finite losses from its steps.
torch is the optional parity extra (CI installs it); without it these
skip.
"""

import math

import pytest

from facejax import config_lib
from facejax import runtime

# (twin name, config, overrides, batch): the smoke widths at 32 px.
CASES = (
    # n_critic 2: step 0 is D only, step 1 is D + G.
    ("stargan/G+D", "configs/stargan.py:smoke", {}, 4),
    ("hrfae/G+D", "configs/age_transformer.py:smoke",
     {"age_loss.random_init": "tiny"}, 2),
    ("satnet/G+D", "configs/caricature.py:smoke",
     {"identity.source": "random"}, 2),
)


def _config(path, overrides, batch):
  config = config_lib.load_config(path, overrides)
  with config.unlocked():
    config.data.batch_size = config.data.eval_batch_size = batch
    config.data.image_size = 32
  return config


@pytest.mark.parametrize("name,path,overrides,batch", CASES,
                         ids=[c[0].split("/")[0] for c in CASES])
def test_gan_twin_matches_facejax_parameters_and_steps(name, path,
                                                       overrides, batch):
  torch = pytest.importorskip("torch")
  from launch import torch_gan_twins  # pylint: disable=g-import-not-at-top
  from launch import torch_twins  # pylint: disable=g-import-not-at-top
  config = _config(path, overrides, batch)
  # The suite finds the twin from the config alone.
  assert torch_twins.twin_name(config) == name
  assert name in torch_twins.TWINS and torch_twins.is_gan(name)
  assert torch_twins.available(name) is None
  torch.manual_seed(0)
  twin = torch_gan_twins.GAN_TWINS[name](config, batch, 32)
  ours = torch_gan_twins.twin_param_counts(twin)
  theirs = torch_gan_twins.facejax_param_counts(config)
  print(f"{name}: twin {ours}, facejax {theirs}")
  assert ours == theirs
  losses = {}
  for i in range(2):
    losses.update(twin.step(i))
  assert set(losses) == {"d_loss", "g_loss"}, losses
  assert all(math.isfinite(v) for v in losses.values()), losses


def test_gan_twin_times_the_facejax_mix_in_a_fresh_process():
  """The suite's default-malloc path: the config travels as JSON."""
  pytest.importorskip("torch")
  from launch import torch_twins  # pylint: disable=g-import-not-at-top
  config = _config("configs/stargan.py:smoke", {}, 2)
  out = torch_twins.time_in_fresh_process("stargan/G+D", 2, 32, steps=2,
                                          warmup=0, config=config)
  assert out["mode"] == torch_twins.DEFAULT_MALLOC_MODE
  assert out["step_s_median"] > 0 and out["losses_finite"]
  # Steps 0 (D only) and 1 (D + G, n_critic 2): the G step costs more.
  assert out["step_s_p90"] >= out["step_s_p10"]
  with pytest.raises(NotImplementedError):
    torch_twins.time_train_step("stargan/G+D", 2, 32, compile_mode=True,
                                config=config)


def test_cpu_description_names_the_model_and_instruction_sets():
  desc = runtime.cpu_description()
  assert desc["model"] and desc["cores"] >= 1
  assert set(desc["flags"]) <= set(runtime.CPU_FLAGS_OF_INTEREST)
  line = runtime.cpu_summary(desc)
  assert line.startswith("CPU: ") and desc["model"] in line
  # No /proc/cpuinfo (macOS, Windows): a model name and no flags.
  fake = dict(desc, flags=[], flags_source="unavailable")
  assert "instruction sets unknown" in runtime.cpu_summary(fake)


def test_cpu_summary_names_instruction_set_caps(monkeypatch):
  for _, variables in runtime.ISA_CAP_VARIABLES:
    for var in variables:
      monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
  assert runtime.isa_caps() == {}
  assert "capped" not in runtime.cpu_summary()
  # How docs/performance.md section 15 approximated an AVX2-only machine.
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX512 "
                     "--xla_cpu_max_isa=AVX2")
  monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
  monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")
  assert runtime.isa_caps() == {"XLA": "AVX2", "ATen": "avx2",
                                "oneDNN": "AVX2"}
  line = runtime.cpu_summary()
  assert line.endswith("; capped by the environment: XLA AVX2, ATen avx2, "
                       "oneDNN AVX2"), line
