"""Convolution forms chosen by timing them on the machine at hand.

On CPU a convolution can be computed several ways (facejax.models.layers):
XLA's own convolution ("xla"), patches @ kernel ("im2col", and with bf16
operands "im2col_bf16") and one matmul plus shifted sums ("tap_sum", and
on the 2x2 space-to-depth map "tap_sum_s2d"; stride 1 only). Which is
fastest depends on
the layer's shape and on the processor: the fixed rules of
`runtime.cpu_conv_impl` were timed on two 2-core machines, one AVX2-only
and one with AVX-512, and do not hold everywhere.

With autotuning on (`config.runtime.autotune`, the default), the first
compile of a train or eval step on a machine times every form of each of
its convolution shapes, forward and backward, and keeps the fastest. The
decisions are written to a JSON file keyed by the CPU model, its
instruction sets, the jax/jaxlib versions and XLA_FLAGS, beside JAX's
compilation cache, so later runs on the same machine read them instead of
timing. With it off, or for a shape not yet timed, the fixed rules apply.

How a step gets its forms (`facejax.train.loop.Setup.compiled`):
  1. the step is traced while `recording()`: every convolution asks
     `conv_form`, which answers from the table (or the fixed rule) and
     notes the shape;
  2. `settle()` times the shapes the table lacks, and in a multi-process
     run takes process 0's decisions, so every process compiles the same
     program;
  3. if a decision differs from what the trace used, the step is traced
     again.

On a CPU with bf16 dot instructions (AVX512_BF16, AMX) a fourth form is
timed too, unless `config.runtime.cpu_bf16` is False: im2col with bf16
operands and f32 sums (`layers.im2col_bf16_conv`). It replaces the best
f32 form only where it is more than 20 % and 0.5 ms faster.

FACEJAX_AUTOTUNE=0 turns it off for a whole process tree (the test suite
does, so that its measured learning margins keep the fixed rules).
"""

import collections
import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

# A form: (x [B,H,W,C], kernel [kh,kw,C,O], strides, padding) -> y.
ConvForm = Callable[..., jax.Array]

# A decision is kept unless another form is this much faster: timing noise
# on a shared machine must not flip forms from run to run.
_MARGIN = 0.05
# A bf16-operand form (name ending BF16_SUFFIX) has to be this much faster
# than the best f32 form, and save this many ms a forward + backward: bf16
# rounding is only worth a real saving. (At the smoke configs' shapes, a
# few hundredths of a ms, timing noise chose bf16 for different layers in
# two runs on a 2-core Intel Xeon with AMX.)
_BF16_MARGIN = 0.2
_BF16_MIN_SAVING_MS = 0.5
BF16_SUFFIX = "_bf16"
# Timing one form of one shape: at least 2 and at most 5 timed calls, and
# no more once this many seconds are spent.
_MIN_REPS, _MAX_REPS, _BUDGET_S = 2, 5, 0.5
# A form whose largest buffer would exceed this is not tried (im2col of a
# big early layer): timing it could exhaust the host's memory.
_MAX_BUFFER_BYTES = 1 << 30
_ENV_SWITCH = "FACEJAX_AUTOTUNE"
_FILE_VERSION = 2


class ConvShape(NamedTuple):
  """One convolution as a step computes it (global shapes)."""
  in_shape: tuple[int, ...]           # [B, H, W, C]
  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  padding: tuple[tuple[int, int], ...]
  features: int
  dtype: str
  # 2: inside a gradient penalty's discriminator, whose input gradient is
  # differentiated again (timed through that second derivative).
  order: int = 1

  def key(self) -> str:
    b, h, w, c = self.in_shape
    (pt, pb), (pl, pr) = self.padding
    return (f"{b}x{h}x{w}x{c} k{self.kernel_size[0]}x{self.kernel_size[1]} "
            f"s{self.strides[0]}x{self.strides[1]} "
            f"p{pt},{pb},{pl},{pr} o{self.features} {self.dtype}"
            + (" d2" if self.order == 2 else ""))


def decision_key(shape: ConvShape, forms: dict[str, ConvForm]) -> str:
  """The table's key: the shape and the forms it was timed among (a
  spectral-norm convolution offers fewer forms than `layers.Conv` at the
  same shape)."""
  return f"{shape.key()} [{','.join(sorted(forms))}]"


@dataclasses.dataclass
class _Asked:
  shape: ConvShape
  forms: dict[str, ConvForm]
  used: str


@dataclasses.dataclass
class Report:
  """What `settle` did for one compile (the start-up line prints it)."""
  forms: dict[str, str]      # shape key -> form, for every shape asked
  timed: int = 0             # shapes timed now
  seconds: float = 0.0       # spent timing
  path: str = ""             # the decisions file

  def summary(self) -> str:
    counts = collections.Counter(self.forms.values())
    forms = ", ".join(f"{n} {f}" for f, n in sorted(counts.items()))
    timed = (f"{self.timed} timed now in {self.seconds:.1f} s"
             if self.timed else "all from the cache")
    bf16 = (f"; {BF16_SUFFIX[1:]}: bf16 operands, f32 sums"
            if any(f.endswith(BF16_SUFFIX) for f in counts) else "")
    return (f"convolution forms measured on this CPU: {forms} "
            f"({len(self.forms)} shapes, {timed}{bf16}; "
            f"{self.path or 'memory'})")


_enabled = False
_bf16 = False
_table: dict[str, dict[str, Any]] = {}   # shape key -> {"form", "ms"}
_loaded_path = ""
_asked: dict[str, _Asked] | None = None


def env_allows() -> bool:
  """False when FACEJAX_AUTOTUNE=0 (or 'false', 'off') is set."""
  return os.environ.get(_ENV_SWITCH, "1").strip().lower() not in (
      "0", "false", "off", "no")


def enable(on: bool, bf16: bool = True) -> bool:
  """Turns autotuning on or off for this process (on only on the CPU
  backend and where FACEJAX_AUTOTUNE allows); returns whether it is on.
  `bf16`: also time the bf16-operand form where the CPU has bf16 dot
  instructions (`bf16_offered`)."""
  global _enabled, _bf16
  _enabled = bool(on) and env_allows() and jax.default_backend() == "cpu"
  _bf16 = _enabled and bool(bf16) and cpu_has_bf16_dots()
  if _enabled:
    _load()
  return _enabled


def enabled() -> bool:
  return _enabled


# CPU flags (/proc/cpuinfo) of instructions that multiply bf16 pairs into
# f32 sums: x86's AVX512_BF16 and AMX-BF16, Arm's BF16 extension.
BF16_DOT_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_has_bf16_dots() -> bool:
  """Whether this CPU has bf16 dot instructions. Without them XLA:CPU
  emulates bf16 and the form always loses, so it is not timed at all."""
  # pylint: disable-next=g-import-not-at-top
  from facejax import runtime
  flags = set(runtime.cpu_description()["flags"])
  return any(f in flags for f in BF16_DOT_FLAGS)


def bf16_offered() -> bool:
  """Whether convolutions offer their bf16-operand, f32-accumulating form
  (`layers.im2col_bf16_conv`): autotuning is on, the config allows it
  (`runtime.cpu_bf16`) and the CPU has bf16 dot instructions."""
  return _enabled and _bf16


def conv_form(shape: ConvShape, rule: str,
              forms: dict[str, ConvForm]) -> str:
  """The form for `shape`: the measured one, else `rule` (the fixed
  rule's choice). While recording, the shape is noted for `settle`."""
  if not _enabled or len(forms) < 2:
    return rule  # (one form offered: nothing to choose, nothing to time)
  key = decision_key(shape, forms)
  entry = _table.get(key)
  form = entry["form"] if entry and entry["form"] in forms else rule
  if _asked is not None and key not in _asked:
    _asked[key] = _Asked(shape, dict(forms), form)
  return form


class recording:  # pylint: disable=invalid-name
  """Context in which `conv_form` notes every shape it is asked about."""

  def __enter__(self):
    global _asked
    self._outer = _asked
    _asked = {}
    return self

  def __exit__(self, *exc):
    global _asked
    self.asked, _asked = _asked, self._outer
    return False


def settle(rec: recording) -> tuple[bool, Report | None]:
  """Decides every shape `rec` saw; (whether the trace must be redone,
  what was decided). Times the shapes the table lacks (process 0 only in
  a multi-process run; the others take its decisions)."""
  if not _enabled or not rec.asked:
    return False, None
  report = Report(forms={}, path=_loaded_path)
  missing = [(k, a) for k, a in rec.asked.items() if k not in _table]
  if missing and jax.process_index() == 0:
    # Tens of seconds on a GAN's first compile: say what is going on.
    print(f"timing the CPU forms of {len(missing)} convolution shape(s) on "
          "this machine (once; cached)...", flush=True)
    t0 = time.perf_counter()
    for k, a in missing:
      _table[k] = _measure(a.shape, a.forms, a.used)
    report.timed, report.seconds = len(missing), time.perf_counter() - t0
    _save()
  decided = {k: (_table[k]["form"] if k in _table else a.used)
             for k, a in rec.asked.items()}
  if jax.process_count() > 1:
    decided = _agree(decided)
    for k, f in decided.items():
      _table.setdefault(k, {"form": f, "ms": {}})["form"] = f
  report.forms = decided
  retrace = any(decided[k] != a.used for k, a in rec.asked.items())
  return retrace, report


def _agree(decided: dict[str, str]) -> dict[str, str]:
  """Process 0's decisions, through JAX's distributed key-value store
  (not a collective: timing may take longer than gloo waits for one)."""
  # pylint: disable-next=g-import-not-at-top
  from jax._src import distributed
  client = distributed.global_state.client
  global _agreements
  _agreements += 1
  key = f"facejax_autotune_{_agreements}"
  if jax.process_index() == 0:
    client.key_value_set(key, json.dumps(decided, sort_keys=True))
    return decided
  return json.loads(client.blocking_key_value_get(key, 3_600_000))


_agreements = 0


def _buffer_bytes(shape: ConvShape, form: str) -> int:
  b, h, w, c = shape.in_shape
  kh, kw = shape.kernel_size
  itemsize = jnp.dtype(shape.dtype).itemsize
  if form.endswith(BF16_SUFFIX):
    itemsize = 2
  if form.startswith("im2col"):
    return b * h * w * kh * kw * c * itemsize
  if form == "tap_sum":
    return b * h * w * kh * kw * shape.features * itemsize
  if form == "tap_sum_s2d":  # a quarter of the pixels, 4x the outputs
    return (b * h * w * ((kh + 2) // 2) * ((kw + 2) // 2) * shape.features
            * itemsize)
  return b * h * w * max(c, shape.features) * itemsize


def _time_form(fn: ConvForm, shape: ConvShape,
               give_up_s: float = float("inf")) -> float:
  """Seconds of one forward + backward of `fn` at `shape` (order 2: the
  gradient of a penalty on its input gradient); the fastest of a few calls
  after a warm-up. A form whose warm-up call already took over
  `give_up_s` is not timed further (that call's time is returned)."""
  kh, kw = shape.kernel_size
  dtype = jnp.dtype(shape.dtype)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape.in_shape), dtype)
  k = jnp.asarray(rng.normal(size=(kh, kw, shape.in_shape[-1],
                                   shape.features)) * 0.1, dtype)
  conv = lambda x, k: fn(x, k, shape.strides, shape.padding)

  def fwd_bwd(x, k):
    y, vjp = jax.vjp(conv, x, k)
    return (y,) + vjp(y)

  def penalty_grad(x, k):
    # As in R1 / WGAN-GP: the input gradient of D's output, squared,
    # differentiated with respect to the kernel and the input.
    def penalty(x, k):
      y, vjp = jax.vjp(lambda x: conv(x, k), x)
      return jnp.sum(jnp.square(vjp(jnp.tanh(y))[0]))
    return jax.grad(penalty, argnums=(0, 1))(x, k)

  step = penalty_grad if shape.order == 2 else fwd_bwd
  run = jax.jit(step).lower(x, k).compile()
  t = time.perf_counter()
  jax.block_until_ready(run(x, k))
  warm_up = time.perf_counter() - t
  if warm_up > give_up_s:
    return warm_up
  best, spent, reps = float("inf"), 0.0, 0
  while reps < _MIN_REPS or (reps < _MAX_REPS and spent < _BUDGET_S):
    t = time.perf_counter()
    jax.block_until_ready(run(x, k))
    dt = time.perf_counter() - t
    best, spent, reps = min(best, dt), spent + dt, reps + 1
  return best


def _measure(shape: ConvShape, forms: dict[str, ConvForm],
             rule: str) -> dict[str, Any]:
  """{"form": the fastest, "ms": {form: ms}}; the rule's form is kept
  unless another is more than _MARGIN faster."""
  ms = {}
  # The rule's form first: a form 3x slower than the best so far (e.g.
  # XLA's form of a penalty's second derivative, 12 s a call against
  # im2col's 0.18 s for StarGAN's 4x4 1024 -> 2048 on a 2-core AMD EPYC
  # with AVX-512) is not timed again (StarGAN's 21 shapes there: 136 ->
  # 75 s). Not below 50 ms, where a first call's own overhead (fresh
  # buffers) could decide it.
  for name in sorted(forms, key=lambda n: n != rule):
    fn = forms[name]
    if _buffer_bytes(shape, name) > _MAX_BUFFER_BYTES:
      continue
    give_up = (max(3e-3 * min(ms.values()), 0.05) if ms
               else float("inf"))
    try:
      ms[name] = round(_time_form(fn, shape, give_up) * 1e3, 4)
    except Exception as e:  # pylint: disable=broad-except
      # A form XLA cannot compile at this shape is simply not chosen.
      logging.warning("autotune: form %s at %s failed: %s", name,
                      shape.key(), e)
  f32 = {n: t for n, t in ms.items() if not n.endswith(BF16_SUFFIX)}
  if not f32:
    return {"form": rule, "ms": ms}
  best = min(f32, key=f32.get)
  if rule in f32 and f32[best] > f32[rule] * (1 - _MARGIN):
    best = rule
  bf16 = {n: t for n, t in ms.items() if n not in f32}
  if bf16:
    fastest = min(bf16, key=bf16.get)
    if (bf16[fastest] < f32[best] * (1 - _BF16_MARGIN) and
        f32[best] - bf16[fastest] > _BF16_MIN_SAVING_MS):
      best = fastest
  return {"form": best, "ms": ms}


def machine() -> dict[str, Any]:
  """What the decisions depend on: CPU, instruction sets, versions, flags."""
  # pylint: disable-next=g-import-not-at-top
  from facejax import runtime
  import jaxlib  # pylint: disable=g-import-not-at-top
  cpu = runtime.cpu_description()
  out = {"cpu": cpu["model"], "cores": cpu["cores"],
         "machine": cpu["machine"], "flags": cpu["flags"],
         "jax": jax.__version__, "jaxlib": jaxlib.__version__,
         "xla_flags": os.environ.get("XLA_FLAGS", "").strip()}
  if jax.config.read("jax_disable_most_optimizations"):
    # Forms timed in XLA's fast-compile (debug) mode rank as unoptimised
    # code does: a file of their own, never read by optimised runs. (Only
    # when set, so the default's file name does not change.)
    out["disable_most_optimizations"] = True
  return out


def cache_dir(jax_dir: str | None = None) -> str:
  """Where decision files live: facejax_autotune/ inside JAX's compilation
  cache directory (`jax_dir`, default: JAX's setting) when that is a
  local one, else ~/.cache/facejax/autotune (a gs:// cache is shared by
  machines of other kinds, and these decisions belong to one)."""
  if jax_dir is None:
    jax_dir = jax.config.jax_compilation_cache_dir
  if jax_dir and "://" not in jax_dir:
    return os.path.join(jax_dir, "facejax_autotune")
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache")
  return os.path.join(base, "facejax", "autotune")


def decisions_path() -> str:
  """This machine's decisions file (the name hashes `machine()`)."""
  m = machine()
  digest = hashlib.sha256(json.dumps(m, sort_keys=True).encode())
  return os.path.join(cache_dir(), f"{digest.hexdigest()[:16]}.json")


def _load() -> None:
  """Reads this machine's decisions file once per path; an unreadable
  one is named in a warning and timed afresh (then overwritten)."""
  global _loaded_path
  path = decisions_path()
  if path == _loaded_path:
    return
  _loaded_path = path
  _table.clear()
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      data = json.load(f)
    entries = data["entries"]
    if data.get("version") != _FILE_VERSION or not all(
        isinstance(v, dict) and isinstance(v.get("form"), str)
        for v in entries.values()):
      raise ValueError(f"not a version-{_FILE_VERSION} decisions file")
    _table.update(entries)
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    logging.warning("autotune: ignoring %s (%s: %s); its shapes are timed "
                    "again", path, type(e).__name__, e)


def _save() -> None:
  """Writes the table atomically; a read-only cache only warns."""
  path = _loaded_path or decisions_path()
  try:
    # Another process on this machine (a second run, a test worker) may
    # have added shapes since this one read the file: keep them.
    with open(path) as f:
      for k, v in json.load(f).get("entries", {}).items():
        _table.setdefault(k, v)
  except (OSError, ValueError, AttributeError):
    pass
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
      json.dump({"version": _FILE_VERSION, "machine": machine(),
                 "entries": _table}, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
  except OSError as e:
    logging.warning("autotune: could not write %s (%s); decisions are kept "
                    "for this process only", path, e)


def decisions() -> dict[str, dict[str, Any]]:
  """A copy of this process's table: shape key -> {"form", "ms"}."""
  return json.loads(json.dumps(_table))


def forget() -> None:
  """Empties the in-memory table (tests; the file is left alone)."""
  global _loaded_path
  _table.clear()
  _loaded_path = ""


def conv_shape(in_shape: Sequence[Any], kernel_size: Sequence[int],
               strides: Sequence[int], padding: Sequence[Sequence[int]],
               features: int, dtype: Any, order: int = 1) -> ConvShape:
  """A ConvShape from a layer's arguments (a symbolic batch counts as 1,
  as in the fixed rules)."""
  shape = tuple(d if isinstance(d, int) else 1 for d in in_shape)
  return ConvShape(shape, tuple(kernel_size), tuple(strides),
                   tuple(tuple(p) for p in padding), int(features),
                   jnp.dtype(dtype).name, order)
