r"""Benchmarks a config's real train step (the one launch.train compiles).

  python -m launch.benchmark --config=configs/age_regressor.py \
      --batch_size=32 --image_size=112 --steps=20 --workdir=runs/bench

Every model at its stated size, beside its PyTorch twin where one exists
(torch + timm installed; see launch/torch_twins.py; the tooling is in
launch/benchmark_suite.py):

  python -m launch.benchmark --suite [--only=age_regressor,stargan]

Reports the host CPU (model, instruction sets) under every table and in
the JSON, compile time, median/spread of step time after warm-up, images/s,
FLOPs per step from XLA's cost analysis, achieved GFLOP/s (and as a
fraction of a large f32 matmul measured in the same run), and peak memory
where the backend reports it. Writes benchmark.md and benchmark.jsonl.
Simulate N CPU devices: XLA_FLAGS=--xla_force_host_platform_device_count=N.
"""

import json
import os

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from facejax import runtime
from launch import benchmark_suite as suite_lib
from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/benchmark", "Output dir.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Global batch (0: config).")
_SIZE = flags.DEFINE_integer("image_size", 0, "Image side (0: config).")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps after warm-up.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compile.")
_DEVICES = flags.DEFINE_integer("devices", 0, "Use the first N devices "
                                "(0: all) on a pure data-parallel mesh.")
_PEAK = flags.DEFINE_bool("measure_peak", True, "Time a large f32 matmul "
                          "as the machine's reference peak.")
_SUITE = flags.DEFINE_bool("suite", False, "Benchmark every model in SUITE "
                           "(and its PyTorch twin where one exists).")
_ONLY = flags.DEFINE_list("only", [], "With --suite: these entries only.")
_LOADER = flags.DEFINE_integer(
    "loader_batches", 10, "Also time this many batches of the config's "
    "real input pipeline (decode + augment) for data-loader images/s; 0: "
    "skip.")
_TWIN_DEFAULT_MALLOC = flags.DEFINE_bool(
    "twin_default_malloc", True, "With --suite: also time the eager twin in "
    "a fresh process with glibc's default malloc, as PyTorch users run it "
    "(the same-process twins share facejax's kept heap).")
_CHECK = flags.DEFINE_bool(
    "check", False, "With --suite: only build each row (task, frozen "
    "networks, state shapes) and trace its train step at the stated size; "
    "no compile, no timing. A quick proof that every row runs.")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", True, "With --suite: "
                                   "also time the twin under torch.compile.")
# With the host heap kept (facejax.runtime.keep_host_heap), a process's
# first ten or so steps now and then grow the heap by a temporary buffer.
# Medians of fewer timed steps than this read high: on a 2-core Intel
# Xeon with AMX (family 6, model 207), SwinFace stage 1 at 32 x 112 took
# 4.880 s a step over 3 steps after 1, and 4.070 s over 10 after 3
# (docs/performance.md section 19).
_SETTLED_STEPS = 8


def main(argv):
  del argv
  if _STEPS.value < 1 or _WARMUP.value < 0:
    common.fail(f"--steps={_STEPS.value} must be >= 1 and --warmup="
                f"{_WARMUP.value} >= 0", code=2)
  names = [entry[0] for entry in suite_lib.SUITE]
  unknown = [n for n in _ONLY.value if n not in names]
  if unknown:
    common.fail(f"--only: unknown suite entries {unknown}; the suite has "
                f"{', '.join(names)}", code=2)
  common.start_jax()
  if (_STEPS.value < _SETTLED_STEPS and runtime.host_heap_kept()
      and jax.process_index() == 0):
    print(f"note: --steps={_STEPS.value}: the kept host heap still grows "
          f"in a process's first steps; a median of fewer than "
          f"{_SETTLED_STEPS} timed steps can read high (docs/performance.md "
          "section 19)", flush=True)
  if _SUITE.value:
    # Which machine: the tables end with this line too.
    print(runtime.cpu_summary(), flush=True)
    peak = suite_lib.matmul_peak_gflops() if _PEAK.value else None
    rows, text, failed = suite_lib.run_suite(
        peak, only=_ONLY.value, batch_size=_BATCH.value,
        image_size=_SIZE.value, check_only=_CHECK.value, steps=_STEPS.value,
        warmup=_WARMUP.value, loader_batches=_LOADER.value,
        torch_compile=_TORCH_COMPILE.value,
        default_malloc=_TWIN_DEFAULT_MALLOC.value)
    if peak:
      text += f"\n\nreference: jitted 2048^2 f32 matmul {peak:.0f} GFLOP/s"
    if jax.process_index() == 0:
      os.makedirs(_WORKDIR.value, exist_ok=True)
      with open(os.path.join(_WORKDIR.value, "suite.json"), "w") as f:
        json.dump(rows, f, indent=2)
      with open(os.path.join(_WORKDIR.value, "suite.md"), "w") as f:
        f.write(text + "\n")
      print("\n" + text)
    if failed:
      common.fail(f"suite rows failed: {', '.join(failed)}")
    return
  if _CONFIG.value is None:
    common.fail("give --config=configs/X.py or --suite", code=2)
  config = _CONFIG.value
  with config.unlocked():
    if _BATCH.value:
      config.data.batch_size = config.data.eval_batch_size = _BATCH.value
    if _SIZE.value:
      config.data.image_size = _SIZE.value
    if _DEVICES.value:
      config.mesh = (("data", _DEVICES.value), ("fsdp", 1), ("model", 1))
  peak = suite_lib.matmul_peak_gflops() if _PEAK.value else None
  row = suite_lib.benchmark(config, _STEPS.value, _WARMUP.value, peak,
                            _LOADER.value)
  table = suite_lib.markdown([row])
  if jax.process_index() == 0:
    os.makedirs(_WORKDIR.value, exist_ok=True)
    with open(os.path.join(_WORKDIR.value, "benchmark.jsonl"), "a") as f:
      f.write(json.dumps(row) + "\n")
    with open(os.path.join(_WORKDIR.value, "benchmark.md"), "a") as f:
      f.write(table + "\n")
    print(table)
    if peak:
      print(f"\nreference: jitted 2048^2 f32 matmul {peak:.0f} GFLOP/s")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
