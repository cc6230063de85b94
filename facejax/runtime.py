"""Process-wide runtime settings: XLA:CPU flags, the host heap, and the
per-executable compiler options a task asks for.

The entry points and the training loop call `configure_runtime` once before
JAX starts a backend; models and tasks only ask it which computation form
suits the CPU (`cpu_conv_impl`, `cpu_tap_sum_conv`, `penalty_conv_impl`).
"""

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import re
import sys
from typing import Any, Sequence

from absl import logging
import jax

from facejax import autotune

# XLA:CPU flags facejax applies before the CPU backend starts. This jaxlib
# hands convolutions to YNNPACK by default; its kernels, and their gradients
# above all, are 2-3x slower on this 2-core AVX2 CPU than XLA's Eigen
# convolutions (measured, docs/performance.md section 4). Dots and
# reductions stay on YNNPACK, dots each on its own: as part of YNNPACK's
# dot fusions a bf16 x bf16 -> f32 dot is first converted to f32 (2048^2:
# 52.7 ms), on its own it runs on the CPU's bf16 instructions (10.3 ms on
# a 2-core Intel Xeon with AMX; f32 41 ms either way; section 17). A flag
# the user already put in XLA_FLAGS wins.
CPU_XLA_FLAGS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}
_cpu_flags_active = False
# XLA flags facejax added to XLA_FLAGS itself (not the user's).
_flags_added: set[str] = set()


def cpu_native_conv_is_fast() -> bool:
  """True when CPU convolutions run on XLA's Eigen path (CPU_XLA_FLAGS).

  `facejax.models.layers.Conv(impl='auto')` then uses the native
  convolution on CPU; otherwise it falls back to im2col matmuls.
  """
  return _cpu_flags_active


# Largest output side at which im2col still beats XLA:CPU's Eigen
# convolution: 2 px is 5-60x faster, 3 px 1.1-1.5x, 4 px 0.8x (docs/performance.md section 10).
_CPU_IM2COL_MAX_OUT_SIDE = 3


# Input elements (B x H x W x C) above which the tap-sum form pays (timed
# on a 2-core AMD EPYC with AVX-512): the smoke configs' StarGAN output
# conv (16 x 38 x 38 x 8 = 184,832) ran 43.9 -> 47.8 ms a step and compiled
# 4.4 s longer with it; the suite's (8.9-17.8 million) gain 2-4x. Nothing
# between was measured.
_TAP_SUM_MIN_INPUT = 2_000_000


def _elements(shape: Sequence) -> int:
  """Product of a shape's known sizes: an exported program's symbolic
  (polymorphic) batch counts as 1, so the choice follows one example."""
  n = 1
  for d in shape:
    n *= d if isinstance(d, int) else 1
  return n


def cpu_tap_sum_conv(in_shape: Sequence[int], kernel_size: Sequence[int],
                     strides: Sequence[int], features: int) -> bool:
  """Whether a conv is one of the large-kernel, few-output ones.

  XLA:CPU runs a 7x7 or 9x9 convolution to 3 channels (the generators'
  image outputs) at 19-21 GFLOP/s (2-core AMD EPYC, AVX-512, as every
  figure here); `layers.tap_sum_conv` does it as one
  matmul and shifted sums: forward + backward 0.83 -> 0.43 s (HRFAE's
  9x9 32 -> 3 at 8 x 256 px), 0.53 -> 0.18 s (StarGAN's 7x7 64 -> 3 at
  16 x 128 px); docs/performance.md section 13. With many outputs it is
  slower (7x7 8 -> 64: 0.51 -> 1.29 s).

  Args:
    in_shape: the (padded or unpadded) input [B, H, W, C]; a symbolic
      batch counts as 1.
    kernel_size: (kh, kw).
    strides: (sh, sw).
    features: output channels.
  """
  return (features <= 4 and tuple(strides) == (1, 1) and
          kernel_size[0] * kernel_size[1] >= 49 and
          _elements(in_shape) > _TAP_SUM_MIN_INPUT)


def cpu_conv_impl(in_shape: Sequence[int], kernel_size: Sequence[int],
                  strides: Sequence[int],
                  padding: Sequence[tuple[int, int]],
                  features: int, forms: dict | None = None,
                  dtype: Any = "float32") -> str:
  """The faster convolution form on the CPU backend for one layer's shape.

  The fixed rule below, or, with autotuning on (`facejax.autotune`) and
  the layer's `forms` given, the form timed fastest at this shape on this
  machine.

  Args:
    in_shape: input [B, H, W, C].
    kernel_size: (kh, kw).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)).
    features: output channels.
    forms: the layer's candidate forms, name -> fn(x, kernel, strides,
      padding); None: the fixed rule only.
    dtype: the computation's dtype (part of the timed shape).

  Returns:
    "im2col", "tap_sum" or "xla".
  """
  rule = _conv_rule(in_shape, kernel_size, strides, padding, features)
  if forms is None:
    return rule
  return tuned_conv_form(in_shape, kernel_size, strides, padding, features,
                         rule, forms, dtype)


def tuned_conv_form(in_shape, kernel_size, strides, padding, features,
                    rule: str, forms: dict, dtype: Any = "float32",
                    order: int = 1) -> str:
  """`rule`, or with autotuning on the form of `forms` timed fastest at
  this shape on this machine (`facejax.autotune.conv_form`); order 2 for
  a penalised discriminator's convolution (`penalty_conv_impl`)."""
  return autotune.conv_form(
      autotune.conv_shape(in_shape, kernel_size, strides, padding, features,
                          dtype, order), rule, forms)


# The prefix `penalty_conv_impl` puts before a penalised discriminator's
# conv_impl when autotuning is on: each of its convolutions then picks its
# form by timing the penalty's second derivative, with the choice after
# the prefix as its fixed rule.
SECOND_ORDER = "penalty:"


def split_second_order(impl: str) -> tuple[bool, str]:
  """(whether `impl` carries SECOND_ORDER, the impl without it)."""
  if impl.startswith(SECOND_ORDER):
    return True, impl[len(SECOND_ORDER):]
  return False, impl


def _conv_rule(in_shape, kernel_size, strides, padding, features) -> str:
  """The fixed rule of `cpu_conv_impl` (timed on two 2-core machines)."""
  if not cpu_native_conv_is_fast():
    return "im2col"  # YNNPACK convolutions: im2col wins everywhere.
  out_hw = [(n + lo + hi - k) // s + 1 for n, k, s, (lo, hi)
            in zip(in_shape[1:3], kernel_size, strides, padding)]
  if min(out_hw) <= _CPU_IM2COL_MAX_OUT_SIDE:
    return "im2col"
  if cpu_tap_sum_conv(in_shape, kernel_size, strides, features):
    return "tap_sum"
  # A strided 1x1 projection is one strided slice and a matmul: 1.1-1.3x.
  if tuple(kernel_size) == (1, 1) and tuple(strides) != (1, 1):
    return "im2col"
  return "xla"


# Below this much work (batch x H x W x D's first width; timed on a 2-core
# AMD EPYC with AVX-512) im2col's penalty step is no faster and compiles
# 5-13 s longer: the smoke configs (16 x 32 x 32 x 8 = 131,072) measured
# 44 vs 44 ms (StarGAN) and 150 vs 154 ms (HRFAE) a step; at 262,144
# (width 16) R1's gradient is 4x faster. A D that normalises between its
# convolutions (HRFAE's BatchNorm) takes im2col at every size: XLA's own
# emitter ran its second order's kernel gradients, and on a 2-core Intel
# Xeon with AMX its smoke step took 110-152 ms against im2col's 72-87 ms
# (one device), compiling in 24-51 s against 27-28 s; StarGAN's, without
# norms, took 32.8 against 35.0 ms (docs/performance.md section 18).
_PENALTY_IM2COL_MIN_WORK = 200_000


def penalty_conv_impl(impl: str, image_shape: Sequence[int],
                      first_width: int, normalised: bool = False) -> str:
  """The convolution form for a discriminator differentiated twice.

  A gradient penalty (StarGAN's WGAN-GP, HRFAE's R1) differentiates D's
  input gradient again with respect to D's parameters. XLA:CPU runs the
  convolutions of that second-order gradient at 11-22 GFLOP/s (2-core
  AMD EPYC with AVX-512, as every figure here), against
  130 for the same network's first-order gradient; written as patches @
  kernel, every derivative is slices, pads and matmuls and runs 5-10x
  faster (StarGAN's D at 16x128: 6.93 -> 0.68 s; HRFAE's D at 8x256:
  8.62 -> 0.97 s; docs/performance.md section 13). D's first-order passes
  keep `impl`.

  Args:
    impl: the config's `model.conv_impl`.
    image_shape: the penalised images' shape [B, H, W, C].
    first_width: the output channels of D's first convolution.
    normalised: D normalises between its convolutions (im2col at every
      size; _PENALTY_IM2COL_MIN_WORK).

  Returns:
    "im2col" for 'auto' on the CPU backend for a normalised D or above the
    smoke configs' size, otherwise `impl`. With autotuning on, that choice
    behind SECOND_ORDER: each convolution of D is then timed in both forms
    through the penalty's second derivative, the choice as its rule.
  """
  if impl != "auto" or jax.default_backend() != "cpu":
    return impl
  large = (_elements(image_shape[:3]) * first_width
           > _PENALTY_IM2COL_MIN_WORK)
  rule = "im2col" if normalised or large else impl
  return SECOND_ORDER + rule if autotune.enabled() else rule


def apply_cpu_xla_flags() -> bool:
  """Adds CPU_XLA_FLAGS to XLA_FLAGS if JAX's backends have not started.

  The flags only change how XLA:CPU compiles, so they are harmless on
  GPU/TPU hosts. Returns whether they are in effect.
  """
  global _cpu_flags_active
  # pylint: disable-next=g-import-not-at-top
  from jax._src import xla_bridge
  current = os.environ.get("XLA_FLAGS", "")
  user_set = [k for k in CPU_XLA_FLAGS if f"--{k}=" in current]
  if xla_bridge.backends_are_initialized():
    # XLA reads XLA_FLAGS once, when the first backend starts.
    if not _cpu_flags_active and not user_set:
      logging.warning("JAX backends started before configure_runtime: "
                      "XLA:CPU flags %s not applied", CPU_XLA_FLAGS)
    return _cpu_flags_active
  extra = " ".join(f"--{k}={v}" for k, v in CPU_XLA_FLAGS.items()
                   if k not in user_set)
  if extra:
    os.environ["XLA_FLAGS"] = f"{current} {extra}".strip()
    _flags_added.update(k for k in CPU_XLA_FLAGS if k not in user_set)
  # The user's own value of a flag may keep YNNPACK convolutions.
  _cpu_flags_active = not user_set or all(
      "CONVOLUTION" not in (current.split(f"--{k}=")[1].split() or [""])[0]
      for k in user_set)
  return _cpu_flags_active


def step_compiler_options(wanted: dict[str, str]) -> dict[str, str] | None:
  """The compiler options of a task's steps (None: the defaults).

  `wanted` is the task's `xla_cpu_options()`; they apply to its train and
  eval steps only on the CPU backend, and never over a flag the user put
  in XLA_FLAGS.
  """
  if not wanted or jax.default_backend() != "cpu":
    return None
  current = os.environ.get("XLA_FLAGS", "")
  options = {k: v for k, v in wanted.items()
             if k in _flags_added or f"--{k}=" not in current}
  return options or None


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = (
    -1, -3, -4, -8)
_DEFAULT_MMAP_MAX = 65536  # glibc's own default for M_MMAP_MAX
# With room reserved for a step's buffers, blocks at least this large that
# find no free space in the heap are mmapped instead of growing it
# (glibc's largest dynamic mmap threshold on 64-bit hosts).
_RESERVED_HEAP_MMAP_THRESHOLD = 32 << 20
_heap_kept = False  # keep_host_heap took effect in this process
_heap_reserved = 0  # bytes reserve_host_heap has made room for
_largest_reserved_block = 0  # its largest single buffer
_MALLOC_ENV = ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_",
               "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
               "LD_PRELOAD")


def _accelerator_plugin_installed() -> bool:
  """Whether JAX could start a GPU/TPU backend in this environment."""
  if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
    return False
  if importlib.metadata.entry_points(group="jax_plugins"):
    return True
  names = ("jax_plugins", "libtpu", "jax_cuda12_plugin", "jax_rocm_plugin")
  return any(importlib.util.find_spec(n) is not None for n in names)


def _libc():
  """glibc through ctypes, with the allocator calls typed for 64-bit sizes."""
  libc = ctypes.CDLL("libc.so.6")
  libc.malloc.restype = ctypes.c_void_p
  libc.malloc.argtypes = [ctypes.c_size_t]
  libc.free.argtypes = [ctypes.c_void_p]
  return libc


def keep_host_heap_applies() -> bool:
  """Whether `keep_host_heap` should act here (see its docstring)."""
  if os.environ.get("FACEJAX_KEEP_HEAP", "1") == "0":
    return False
  if any(os.environ.get(k) for k in _MALLOC_ENV):
    return False
  if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
    return False
  return not _accelerator_plugin_installed()


def keep_host_heap() -> bool:
  """Makes glibc keep freed memory for reuse (CPU-only hosts); True if set.

  XLA:CPU allocates each step's temporary buffer (gigabytes for a Swin-T
  batch of 32) and its matmuls' packing buffers afresh, on pool threads.
  glibc serves those from mmap (or per-thread arenas it unmaps again), so
  every step page-faults all of it back in: 1.7 M faults per SwinFace step
  (docs/performance.md section 8). One arena, no mmap and no trimming keep
  the pages mapped: 14.4 -> 10.4 s per step, CPU time 26.6 -> 19.0 s.

  The price is that the process keeps its peak heap until it exits, which a
  training process does anyway. Skipped when the user configures malloc
  (GLIBC_TUNABLES, MALLOC_*, LD_PRELOAD), with FACEJAX_KEEP_HEAP=0, off
  glibc, and on hosts with an accelerator plugin, whose many host threads
  would contend for one arena. Call it before JAX starts its threads.
  """
  if not keep_host_heap_applies():
    return False
  try:
    mallopt = _libc().mallopt
  except (OSError, AttributeError):
    return False
  global _heap_kept
  # -1 as M_TRIM_THRESHOLD is SIZE_MAX: never return the heap top.
  _heap_kept = all([mallopt(_M_ARENA_MAX, 1) == 1,
                    mallopt(_M_MMAP_MAX, 0) == 1,
                    mallopt(_M_TRIM_THRESHOLD, -1) == 1])
  return _heap_kept


def host_heap_kept() -> bool:
  """Whether `keep_host_heap` is in effect in this process."""
  return _heap_kept


def available_memory_bytes() -> int | None:
  """Memory this process could still take: the kernel's MemAvailable, or
  less under a cgroup (v2) limit; None where neither can be read."""
  found = []
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          found.append(int(line.split()[1]) * 1024)
  except (OSError, ValueError, IndexError):
    pass
  try:
    with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
      limit = f.read().strip()
    with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
      current = int(f.read().strip())
    if limit != "max":
      found.append(max(int(limit) - current, 0))
  except (OSError, ValueError):
    pass
  return min(found) if found else None


def reserve_host_heap(nbytes: int, count: int = 1) -> bool:
  """Makes room in the kept heap for `count` buffers of `nbytes` each (one
  step's temporaries on each local device); bounds the rest.

  The kept heap alone grows without a bound the program sets: XLA:CPU frees
  a step's temporary buffer just after the step's outputs are ready, so a
  step dispatched before then allocates its buffer while the last one still
  lives, and small blocks land in the freed space between steps. SwinFace
  stage 1 at 32 x 112 px (6.9 GB of temporaries) grew to three buffers,
  21.5 GB resident, in `launch.benchmark`, and `launch.train` was killed
  for memory on a 24 GiB host (docs/performance.md section 21).

  This grows the heap once by their size (address space only; the step's
  first run faults the pages in, and they stay) and from then on has glibc
  mmap any block of 32 MB or more that finds no free space in the heap,
  instead of growing the heap by it. A step's buffer then reuses the
  reserved space whenever the previous one has been freed, and an
  overlapping one is mapped and unmapped on its own (faulted in, like
  default malloc). The training loop calls it with each executable's
  temporaries and, for buffers that large, runs one step at a time
  (`wait_for_each_step`); a larger later call grows the room, a smaller one
  does nothing. A no-op unless `keep_host_heap` is in effect.

  A kept room and an overlapping mapped buffer can both be resident for a
  moment, so the room is kept only where twice its size fits in 90 % of
  the memory still available. Otherwise large blocks are all mapped, as
  with default malloc (the caricature step at 8 x 128, 13.5 GB of
  temporaries, on a 24 GiB host). True if the room is there.
  """
  global _heap_reserved, _largest_reserved_block
  if not _heap_kept or nbytes <= 0 or count <= 0:
    return False
  _largest_reserved_block = max(_largest_reserved_block, nbytes)
  nbytes *= count
  if nbytes <= _heap_reserved:
    return True
  libc = _libc()
  # What compiling and initialising left free in the heap would otherwise
  # stay resident beside the room: hand its pages back (the addresses stay
  # the heap's, to be faulted in again if used).
  libc.malloc_trim(0)
  # Some slack: small blocks are carved from the room's low end until the
  # step first runs.
  room = nbytes + nbytes // 16 + (64 << 20)
  available = available_memory_bytes()
  fits = available is None or 2 * room <= 0.9 * available
  block = None
  if fits:
    # With mmap off, the block comes from the heap's top and its free goes
    # back there (the top is never trimmed). Nothing touches its pages.
    libc.mallopt(_M_MMAP_MAX, 0)
    block = libc.malloc(room)
    if block:
      libc.free(block)
  libc.mallopt(_M_MMAP_THRESHOLD, _RESERVED_HEAP_MMAP_THRESHOLD)
  libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
  if not block:
    _largest_reserved_block = 0  # nothing to wait for: blocks are mapped
    logging.info("host heap: no room kept for %.2f GB of step buffers (%s);"
                 " blocks of 32 MB or more are mapped per step", nbytes / 1e9,
                 "malloc refused it" if fits else
                 f"twice that is over 90 % of the {available / 1e9:.2f} GB "
                 "available")
    return False
  _heap_reserved = max(_heap_reserved, nbytes)
  logging.info("host heap: room for a %.2f GB step buffer; larger blocks "
               "that find no room are mmapped", nbytes / 1e9)
  return True


def temp_bytes(compiled) -> int:
  """An executable's temporary buffers per device (XLA's memory analysis;
  0 where the backend gives none)."""
  mem = compiled.memory_analysis()
  return int(getattr(mem, "temp_size_in_bytes", 0) or 0) if mem else 0


def wait_for_each_step() -> bool:
  """Whether a loop should let each step finish before dispatching the next.

  True once `reserve_host_heap` holds room for temporaries large enough
  (32 MB or more) that a step dispatched while the last one runs would
  have its buffers mmapped and faulted in afresh beside the last one's. A
  SwinFace stage-1 run (32 x 112, launch.train, 2-core Intel Xeon, family
  6 model 207) took
  6.05 s a step that way, 5.40 s waiting (docs/performance.md section 21).
  """
  return _largest_reserved_block >= _RESERVED_HEAP_MMAP_THRESHOLD


def configure_runtime(compilation_cache_dir: str = "") -> None:
  """Process-wide JAX settings facejax relies on.

  Call it before anything starts a JAX backend (jax.devices(), arrays):
  it first adds the XLA:CPU flags of CPU_XLA_FLAGS to XLA_FLAGS.

  On CPU, non-partitionable threefry compiles parameter initialisation
  about 4x faster (measured: tiny ResNet init 36 s -> 9 s on 2 cores); its
  values do not depend on the sharding either, so 1 and 8 devices
  initialise identically. Accelerators keep the partitionable default,
  which never materialises a full random tensor per device.

  On a CPU-only Linux host it also keeps freed heap memory mapped
  (`keep_host_heap`): XLA:CPU's per-step buffers otherwise page-fault back
  in on every step.
  """
  apply_cpu_xla_flags()
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if not xla_bridge.backends_are_initialized() and keep_host_heap():
    logging.info("glibc heap kept for reuse (one arena, no mmap, no trim); "
                 "FACEJAX_KEEP_HEAP=0 turns this off")
  if jax.default_backend() == "cpu":
    jax.config.update("jax_threefry_partitionable", False)
  if compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", compilation_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


# Instruction sets that decide which CPU kernels are fast (as /proc/cpuinfo
# and lscpu spell them), in the order they are reported.
CPU_FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f",
                         "avx512bw", "avx512vl", "avx512_vnni",
                         "avx512_bf16", "avx512_fp16", "amx_tile",
                         "amx_bf16", "amx_int8", "asimd", "bf16", "sve",
                         "sve2")


# Environment variables that hold a library below the CPU's instruction
# sets (how docs/performance.md section 15 approximated an AVX2-only
# machine): library -> variables, the first one set wins.
ISA_CAP_VARIABLES = (("ATen", ("ATEN_CPU_CAPABILITY",)),
                     ("oneDNN", ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")))


def isa_caps() -> dict[str, str]:
  """Library -> instruction-set cap in effect for this process and its
  children: XLA:CPU's `--xla_cpu_max_isa` in XLA_FLAGS, and PyTorch's and
  oneDNN's variables. Empty when nothing is capped."""
  caps = {}
  xla = re.findall(r"--xla_cpu_max_isa=(\S+)", os.environ.get("XLA_FLAGS", ""))
  if xla:
    caps["XLA"] = xla[-1]  # XLA reads the last one
  for lib, variables in ISA_CAP_VARIABLES:
    value = next((os.environ[v] for v in variables if os.environ.get(v)), "")
    if value:
      caps[lib] = value
  return caps


def cpu_description() -> dict:
  """The host CPU: model name, logical cores and its relevant instruction
  sets (`CPU_FLAGS_OF_INTEREST` present), and any caps on them
  (`isa_caps`).

  Read from /proc/cpuinfo on Linux (x86 'flags', Arm 'Features'); elsewhere
  `platform.processor()` and no flags. Benchmarks print it beside their
  tables: kernel choices and speed ratios depend on the instruction set.
  """
  model, flags = "", set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and not model:
          model = value.strip()
        elif key in ("flags", "features") and not flags:
          flags = set(value.split())
  except OSError:
    pass
  model = model or platform.processor() or platform.machine() or "unknown"
  return {"model": model, "cores": os.cpu_count() or 0,
          "machine": platform.machine(),
          "flags": [f for f in CPU_FLAGS_OF_INTEREST if f in flags],
          "flags_source": "/proc/cpuinfo" if flags else "unavailable",
          "isa_caps": isa_caps()}


def cpu_summary(desc: dict | None = None) -> str:
  """One line of `cpu_description()`: model, cores, instruction sets, and
  the caps on them set in the environment, if any."""
  d = desc or cpu_description()
  sets = " ".join(d["flags"]) if d["flags"] else "instruction sets unknown"
  line = f"CPU: {d['model']}, {d['cores']} cores ({d['machine']}): {sets}"
  caps = d.get("isa_caps") or {}
  if caps:  # the table's speeds are not the CPU's own: say so beside them
    line += "; capped by the environment: " + ", ".join(
        f"{lib} {isa}" for lib, isa in caps.items())
  return line
