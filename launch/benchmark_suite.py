"""Benchmark tooling behind launch.benchmark: step timing, the suite.

Times a config's real train step (the one launch.train compiles) and its
input pipeline, and runs the suite of every model at its stated size beside
its PyTorch twin where one exists (launch/torch_twins.py). Benchmark
tooling lives in launch/, never in facejax/.
"""

import os
import time
import traceback
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from facejax import config_lib
from facejax import mesh as mesh_lib
from facejax import runtime
from facejax.train import loop
from facejax import tasks
from launch import torch_gan_twins
from launch import torch_twins

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (name, config file, global batch, image size, config overrides): the
# sizes the issues state.
SUITE = (
    ("age_regressor", "configs/age_regressor.py", 32, 112, {}),
    ("dex", "configs/dex.py", 8, 224, {}),
    # A random VGG-16 DEX as the age loss costs the same as the trained one.
    ("age_transformer", "configs/age_transformer.py", 8, 256,
     {"age_loss.random_init": "vgg16"}),
    ("stargan", "configs/stargan.py", 16, 128, {}),
    # Stage 1 (backbone + recognition + identity softmax) does the same work
    # as the timm twin; stage 2 adds the 11 analysis branches. 1,000
    # identities as in the twin, not as many as the synthetic data has.
    ("swinface_recognition", "configs/swinface.py:stage=1", 32, 112,
     {"model.num_identities": 1000}),
    ("swinface", "configs/swinface.py", 32, 112,
     {"model.num_identities": 1000}),
    ("kinship", "configs/kinship.py", 64, 64, {}),
    # A random identity network costs the same as a trained one.
    ("caricature", "configs/caricature.py", 8, 128,
     {"identity.source": "random"}),
)


def matmul_peak_gflops(n: int = 2048, reps: int = 10) -> float:
  """Achieved GFLOP/s of a jitted n x n f32 matmul (best of reps)."""
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(reps))
  return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def benchmark(config, steps: int, warmup: int, peak: float | None,
              loader_batches: int = 0) -> dict:
  """Times `tasks.setup(config).train_step` on a synthetic batch.

  Args:
    config: the model's config, at the batch and size to time.
    steps: timed steps after warm-up.
    warmup: untimed steps after compile.
    peak: the reference matmul GFLOP/s, or None.
    loader_batches: also time this many batches of the input pipeline.

  Returns:
    The row: compile time, step-time percentiles, images/s, FLOPs, memory.
  """
  setup = tasks.setup(config)
  state = setup.init_state(import_weights=False)
  rng = np.random.default_rng(0)
  batch = setup.task.dummy_batch(setup.local_batch)
  # Noise in every image of the batch (also kinship's image_a/b, HRFAE's
  # image_b, the caricature's photo/cari): all-zero images gave the
  # caricature step NaN gradients (the std of a constant map) and so
  # NaN losses after its first step.
  is_image = lambda v: v.ndim >= 4 and np.issubdtype(v.dtype, np.floating)
  batch = {k: rng.normal(size=v.shape).astype(v.dtype) if is_image(v)
           else (rng.uniform(0, 100, v.shape).astype(v.dtype)
                 if k == "age" else v) for k, v in batch.items()}
  batch = mesh_lib.shard_batch(batch, setup.mesh)

  # One executable per kind of step (a GAN's D-only and D+G steps), each
  # with its own FLOP count and buffers.
  kinds, compile_s, flops, peak_bytes = {}, 0.0, {}, None
  for step in range(warmup + steps):
    jitted = setup.train_step_at(step)
    if jitted in kinds:
      continue
    t0 = time.perf_counter()
    tuned_before = sum(r.seconds for r in setup.autotune_reports)
    compiled = kinds[jitted] = setup.compiled(jitted, state, batch)
    # Time spent timing convolution forms (autotune) is reported apart.
    compile_s += time.perf_counter() - t0 - (
        sum(r.seconds for r in setup.autotune_reports) - tuned_before)
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older JAX returned one dict per device
      cost = cost[0] if cost else {}
    flops[jitted] = float(cost.get("flops", float("nan")))
    mem = compiled.memory_analysis()
    if mem is not None:
      used = sum(getattr(mem, k, 0) or 0 for k in (
          "temp_size_in_bytes", "argument_size_in_bytes",
          "output_size_in_bytes")) - (getattr(mem, "alias_size_in_bytes", 0)
                                       or 0)
      peak_bytes = max(peak_bytes or 0, used)

  def run_step(step, state):
    jitted = setup.train_step_at(step)
    return kinds[jitted](state, batch, setup.frozen), jitted

  logging.info("%s: compiled in %.1f s; %d warm-up + %d timed steps",
               config.model.name, compile_s, warmup, steps)
  for i in range(warmup):
    (state, _), _ = run_step(i, state)
  jax.block_until_ready(state)  # (--warmup=0 runs no step here)
  times, step_flops = [], []
  for i in range(steps):
    t0 = time.perf_counter()
    (state, metrics), jitted = run_step(warmup + i, state)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
    step_flops.append(flops[jitted])
    # A progress line: GAN rows take minutes per step on a 2-core CPU.
    logging.info("%s: step %d/%d %.3f s", config.model.name, i + 1, steps,
                 times[-1])
  times = np.asarray(times)
  # A measured peak where the backend keeps one (GPU/TPU); on CPU the
  # compiler's buffer-assignment estimate above stands in.
  stats = jax.local_devices()[0].memory_stats() or {}
  measured = "peak_bytes_in_use" in stats
  if measured:
    peak_bytes = stats["peak_bytes_in_use"]
  median, mean = float(np.median(times)), float(np.mean(times))
  # With several kinds of step the median is the commonest kind's time;
  # throughput is per step of the mix, i.e. from the means.
  typical = median if len(kinds) == 1 else mean
  flops = float(np.mean(step_flops))
  gb = config.data.batch_size
  result = {
      "config": config.model.name, "backbone": config.model.get(
          "backbone", ""), "batch_size": gb,
      "image_size": config.data.image_size,
      "devices": int(setup.mesh.devices.size),
      "device_kind": jax.devices()[0].device_kind,
      "compile_s": compile_s, "step_s_median": median,
      "step_s_p10": float(np.percentile(times, 10)),
      "step_s_p90": float(np.percentile(times, 90)),
      "step_s_mean": mean, "step_kinds": len(kinds),
      "images_per_s": gb / typical,
      "gflop_per_step": flops / 1e9,
      # cost_analysis counts the per-device program: scale by devices.
      "achieved_gflops": flops * setup.mesh.devices.size / typical / 1e9,
      "peak_memory_mb": (peak_bytes / 2**20) if peak_bytes else None,
      "peak_memory_source": "measured" if measured else "XLA estimate",
      "loss_finite": all(bool(np.isfinite(float(metrics[k])))
                         for k in setup.task.finite_keys),
      # The host CPU and its instruction sets: speeds and ratios depend
      # on them (printed under every table).
      "cpu": runtime.cpu_description(),
      # The convolution forms: timed on this machine, or the fixed rules.
      "conv_forms": setup.autotune_summary() or (
          "convolution forms: none to time (no convolution asked)"
          if setup.autotune else
          "convolution forms: the fixed rules (autotune off)"),
      "autotune_s": sum(r.seconds for r in setup.autotune_reports),
  }
  result.update(loader_throughput(setup, loader_batches))
  if peak:
    result["matmul_peak_gflops"] = peak
    result["fraction_of_peak"] = result["achieved_gflops"] / peak
  return result


def loader_throughput(setup, batches: int) -> dict:
  """Images/s of this process's training input pipeline alone.

  The step is fed if this is well above the step's images/s; the first
  batch (worker start-up, file listing) is not timed.
  """
  if batches <= 0:
    return {}
  try:
    it = loop.train_iterator(setup)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
      next(it)
    seconds = time.perf_counter() - t0
  except Exception as e:  # pylint: disable=broad-except
    # No data on disk for this config: the step timing still stands.
    first = (str(e).splitlines() or [""])[0]
    return {"loader_note": f"not measured: {type(e).__name__}: {first}"}
  return {"loader_images_per_s": batches * setup.local_batch / seconds,
          "loader_workers": setup.config.data.num_workers}


def markdown(rows: list[dict]) -> str:
  """The rows as a Markdown table, the host CPU line(s) under it."""
  head = ("| model | batch | size | devices | compile s | step s (p10-p90) "
          "| img/s | loader img/s | GFLOP/step | GFLOP/s | % peak "
          "| peak MB |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")
  lines = [head]
  for r in rows:
    frac = r.get("fraction_of_peak")
    mem = r["peak_memory_mb"]
    name = r.get("suite_name") or f"{r['config']} {r['backbone']}".strip()
    # Several kinds of step (GANs): the mean is the per-step cost.
    mixed = (f"; mean {r['step_s_mean']:.3f}" if r.get("step_kinds", 1) > 1
             else "")
    lines.append(
        f"| {name} | {r['batch_size']} | "
        f"{r['image_size']} | {r['devices']} | {r['compile_s']:.1f} | "
        f"{r['step_s_median']:.3f} ({r['step_s_p10']:.3f}-"
        f"{r['step_s_p90']:.3f}){mixed} | {r['images_per_s']:.1f} | "
        f"{r.get('loader_images_per_s', float('nan')):.0f} | "
        f"{r['gflop_per_step']:.1f} | {r['achieved_gflops']:.1f} | "
        f"{'' if frac is None else f'{100 * frac:.0f}%'} | "
        f"{'' if mem is None else f'{mem:.0f}'} |")
  cpus = []
  for r in rows:
    line = runtime.cpu_summary(r["cpu"]) if r.get("cpu") else ""
    if line and line not in cpus:
      cpus.append(line)
  lines += [""] + cpus if cpus else []
  forms = [f"{r.get('suite_name') or r['config']}: {r['conv_forms']}"
           for r in rows if r.get("conv_forms")]
  lines += [""] + forms if forms else []
  return "\n".join(lines)


def _twin_kwargs(name: str, warmup: int, config) -> dict:
  """A GAN twin runs facejax's warm-up and its config; the others their
  own defaults."""
  return ({"warmup": warmup, "config": config}
          if torch_twins.is_gan(name) else {})


def _fresh_twin_first(config, batch: int, size: int, steps: int,
                      warmup: int, default_malloc: bool):
  """The twin's fresh-process timing (default malloc), taken before
  facejax's row: this process keeps its heap (section 8 of
  docs/performance.md), and the caricature row's 19.6 GB plus the fresh
  twin's 6.9 GB overran a 24 GiB machine when the twin came after it.
  None where there is no such timing; the exception if it failed."""
  name = torch_twins.twin_name(config)
  if (not default_malloc or not runtime.host_heap_kept()
      or name not in torch_twins.TWINS or torch_twins.work_note(config)
      or torch_twins.available(name)):
    return None
  try:
    return torch_twins.time_in_fresh_process(
        name, batch, size, steps, **_twin_kwargs(name, warmup, config))
  except Exception as e:  # pylint: disable=broad-except
    return e


def _twin_rows(config, row: dict, steps: int, warmup: int,
               torch_compile: bool, default_malloc: bool,
               fresh=None) -> list[dict]:
  """The PyTorch twin's timings on the same batch and size, if any.

  A GAN twin runs facejax's warm-up and timed global steps (the same mix
  of D-only and D + G steps); with several kinds of step the ratio is of
  the means (the per-step cost), as facejax's images/s. `fresh` is the
  fresh-process timing `_fresh_twin_first` took before facejax's row.
  """
  name = torch_twins.twin_name(config)
  if name not in torch_twins.TWINS:
    return [{"twin": None, "note": "no PyTorch twin (launch/torch_twins.py)"}]
  if torch_twins.work_note(config):  # a different job: not re-timed
    return [{"twin": name, "note": torch_twins.work_note(config)}]
  missing = torch_twins.available(name)
  if missing:
    return [{"twin": name, "note": f"skipped: {missing}"}]
  gan = torch_twins.is_gan(name)
  out = []
  modes = ["eager"] + (["torch.compile"] if torch_compile else [])
  if gan and torch_compile:
    modes.remove("torch.compile")
    out.append({"twin": name, "note": "torch.compile not timed: the GAN "
                "twins run eager only"})
  if default_malloc and runtime.host_heap_kept():
    modes.insert(0, torch_twins.DEFAULT_MALLOC_MODE)
  args = (name, row["batch_size"], row["image_size"], steps)
  kw = _twin_kwargs(name, warmup, config)
  # Both sides' parameter counts, printed beside the ratio (GAN twins are
  # our own modules: equal counts are the check that they match).
  fj_params = torch_gan_twins.facejax_param_counts(config) if gan else None
  mean = gan and row.get("step_kinds", 1) > 1
  for mode in modes:
    try:
      if mode == torch_twins.DEFAULT_MALLOC_MODE:
        t = (fresh if fresh is not None
             else torch_twins.time_in_fresh_process(*args, **kw))
        if isinstance(t, Exception):
          raise t
      else:
        t = torch_twins.time_train_step(
            *args, compile_mode=mode == "torch.compile", **kw)
    except Exception as e:  # torch.compile needs a working C++ toolchain
      first = (str(e).splitlines() or [""])[0]
      out.append({"twin": name, "note": f"{mode} failed: "
                  f"{type(e).__name__}: {first}"})
      continue
    t["twin"] = name
    if fj_params:
      t["facejax_params"] = fj_params
    key = "step_s_mean" if mean else "step_s_median"
    t["ratio_of"] = key.removeprefix("step_s_")
    t["facejax_speedup"] = t[key] / row[key]
    out.append(t)
  return out


def check(config) -> dict:
  """Builds `config`'s task and frozen nets and traces its train step."""
  setup = tasks.setup(config)
  batch = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=setup.batch_sharding),
      setup.task.dummy_batch(setup.local_batch))
  for jitted in setup.train_steps.values():
    jitted.trace(setup.abstract_state, batch, setup.frozen)
  mb = lambda tree: sum(x.size * x.dtype.itemsize
                       for x in jax.tree.leaves(tree)) / 2**20
  return {"state_mb": mb(setup.abstract_state), "frozen_mb": mb(setup.frozen)}


def run_suite(peak: float | None, *, only: Sequence[str] = (),
              batch_size: int = 0, image_size: int = 0,
              check_only: bool = False, steps: int = 20, warmup: int = 2,
              loader_batches: int = 0, torch_compile: bool = True,
              default_malloc: bool = True
              ) -> tuple[list[dict], str, list[str]]:
  """Benchmarks every landed model of SUITE.

  Args:
    peak: the reference matmul GFLOP/s, or None.
    only: these entries only (empty: all).
    batch_size: global batch for every row (0: the row's).
    image_size: image side for every row (0: the row's).
    check_only: only build each row and trace its step (`check`).
    steps: timed steps after warm-up.
    warmup: untimed steps after compile.
    loader_batches: also time this many batches of the input pipeline.
    torch_compile: also time the twin under torch.compile.
    default_malloc: also time the eager twin in a fresh process with
      glibc's default malloc.

  Returns:
    the rows, the Markdown text and the names of the rows that failed.
  """
  rows, twin_lines, failed = [], [], []
  for name, path, batch, size, overrides in SUITE:
    if only and name not in only:
      continue
    path = os.path.join(_REPO, path)  # the suite runs from any directory
    if not os.path.exists(path.split(":")[0]):
      twin_lines.append(f"- {name}: not benchmarked ({path} not found)")
      continue
    config = config_lib.load_config(path, overrides)
    batch, size = batch_size or batch, image_size or size
    with config.unlocked():
      config.data.batch_size = config.data.eval_batch_size = batch
      config.data.image_size = size
    print(f"== {name}: batch {batch}, {size} px", flush=True)
    try:
      if check_only:
        row = check(config)
        print(f"- {name}: traced; train state {row['state_mb']:.0f} MB, "
              f"frozen nets {row['frozen_mb']:.0f} MB", flush=True)
        continue
      fresh = _fresh_twin_first(config, batch, size, steps, warmup,
                                default_malloc)
      row = benchmark(config, steps, warmup, peak, loader_batches)
    except Exception:  # one model failing must not hide the others
      failed.append(name)
      twin_lines.append(f"- {name}: FAILED\n```\n"
                        f"{traceback.format_exc(limit=3)}```")
      print(twin_lines[-1], flush=True)
      continue
    row["suite_name"] = name
    row["torch"] = _twin_rows(config, row, steps, warmup, torch_compile,
                              default_malloc, fresh)
    rows.append(row)
    print(markdown([row]), flush=True)
    for t in row["torch"]:
      if "step_s_median" in t:
        of = t.get("ratio_of", "median")
        # GANs with several kinds of step compare the means (the mix).
        means = (f"; means {t['step_s_mean']:.3f} vs "
                 f"{row['step_s_mean']:.3f}" if of == "mean" else "")
        params = ""
        if t.get("params"):
          fmt = lambda p: ", ".join(f"{k} {v:,}" for k, v in p.items())
          params = (f"; params {fmt(t['params'])}, facejax "
                    f"{fmt(t.get('facejax_params') or {})}")
        twin_lines.append(
            f"- {name}: PyTorch {t['mode']} ({t['twin']}, {t['threads']} "
            f"threads{params}) {t['step_s_median']:.3f} s/step "
            f"({t['step_s_p10']:.3f}-{t['step_s_p90']:.3f}); facejax "
            f"{row['step_s_median']:.3f} s/step{means} = "
            f"**{t['facejax_speedup']:.2f}x** PyTorch")
      else:
        twin_lines.append(f"- {name}: {t['note']}")
      # Also now: a long suite that is stopped keeps what it measured.
      print(twin_lines[-1], flush=True)
  if not rows:  # no table (--check, or every row failed): the CPU still
    twin_lines.insert(0, runtime.cpu_summary())
  text = markdown(rows) + "\n\nPyTorch side by side (same batch and "
  text += "size, Adam step):\n" + "\n".join(twin_lines)
  return rows, text, failed
