"""What keeps a step fast: donation, no host syncs, one compile; remat."""

import json
import os
import resource
import subprocess
import sys
import numpy as np
from facejax import runtime
from helpers import ROOT


# A donated step with a 48 MB temporary buffer, timed in a fresh process
# the way the training loop meets it (wait for the last step, put the next
# batch on the device, dispatch); prints the temp size and per-step faults.
_HEAP_PROBE = """
import json, resource
import numpy as np
from facejax import runtime
runtime.configure_runtime()
import jax, jax.numpy as jnp
step = jax.jit(lambda x, b: jnp.tanh(x @ x) @ x * 1e-3 + jnp.sin(x @ x)
               + b.mean(), donate_argnums=0)
rng = np.random.default_rng(0)
x, b = jnp.ones((2048, 2048)), jnp.ones((256, 2048))
temp = step.lower(x, b).compile().memory_analysis().temp_size_in_bytes
# As the training loop does after compiling a step; whether the room was
# kept, and the memory it was weighed against, go into the test's message.
room = runtime.reserve_host_heap(temp) if RESERVE else None
available = runtime.available_memory_bytes()
faults = []
for _ in range(24):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  x.block_until_ready()
  x = step(x, jax.device_put(rng.random((256, 2048), np.float32)))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(dict(kept=runtime.host_heap_kept(), temp=temp,
                      faults=faults[8:], room=room, available=available)))
"""


def _run_probe(code, keep):
  env = dict(os.environ, PYTHONPATH=ROOT, FACEJAX_KEEP_HEAP=keep)
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _heap_probe(keep, reserve=False):
  return _run_probe(f"RESERVE = {reserve}\n" + _HEAP_PROBE, keep)


def test_host_heap_is_reused_between_steps():
  """A step's 48 MB temporary buffer is not page-faulted in again.

  Default glibc malloc unmaps it after every step (256 faults per MB,
  plus the matmuls' packing buffers); with `runtime.keep_host_heap` the
  steps reuse the pages. The kept heap still grows by a buffer now and then
  while frees from the pool threads interleave (a few of the first ten
  steps), so the test compares the median of steps 9-24, in fresh processes.
  """
  expected = runtime.keep_host_heap_applies()
  assert runtime.host_heap_kept() == expected
  kept, default = _heap_probe("1"), _heap_probe("0")
  reserved = _heap_probe("1", reserve=True)
  pages = kept["temp"] // resource.getpagesize()
  assert pages >= 2048  # the temp buffer is >= 8 MB
  print(f"temp {pages} pages; minor faults per step kept {kept['faults']}, "
        f"kept with room reserved {reserved['faults']}, "
        f"default {default['faults']}")
  assert not default["kept"] and kept["kept"] == expected
  if expected:  # glibc, not configured by the user
    # The measurement can see the faults: without the setting every step
    # faults its temp buffer in again.
    assert np.median(default["faults"]) >= pages // 2
    assert np.median(kept["faults"]) < pages // 4
    # The bounded heap the training loop sets up keeps the saving. (Once,
    # in a full suite run, every step faulted: the room's outcome and the
    # memory available say whether the room was refused or overrun.)
    assert np.median(reserved["faults"]) < pages // 4, (
        f"room kept: {reserved['room']}; available "
        f"{reserved['available']} bytes")


# Blocks of 200 MB from glibc, as XLA:CPU allocates a step's temporaries:
# one, freed, again (the next step), then one more while it lives (a step
# whose buffer is allocated before the last one is freed).
_RESERVE_PROBE = """
import ctypes, json, resource
from facejax import runtime
kept = runtime.keep_host_heap()
class Info(ctypes.Structure):
  _fields_ = [(n, ctypes.c_size_t) for n in (
      "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
      "fordblks keepcost").split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
n = 200 << 20
if RESERVE == "room":
  out = dict(reserved=runtime.reserve_host_heap(256 << 20))
elif RESERVE == "too big":  # twice the room would not fit in memory
  out = dict(reserved=runtime.reserve_host_heap(
      runtime.available_memory_bytes() // 2))
else:
  out = dict(reserved=False)
out["kept"] = kept
def faults_touching(block):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  ctypes.memset(block, 1, n)
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
a = libc.malloc(n)
out["first"] = faults_touching(a)
libc.free(a)
a = libc.malloc(n)
out["again"] = faults_touching(a)
heap, mapped = libc.mallinfo2().arena, libc.mallinfo2().hblkhd
b = libc.malloc(n)
out["overlap"] = faults_touching(b)
out["growth"] = libc.mallinfo2().arena - heap
out["mapped"] = libc.mallinfo2().hblkhd - mapped
libc.free(b)
out["mapped_after_free"] = libc.mallinfo2().hblkhd - mapped
libc.free(a)
print(json.dumps(out))
"""


def test_reserved_host_heap_maps_overlapping_blocks_instead_of_growing():
  """`runtime.reserve_host_heap` bounds the kept heap.

  The kept heap alone grows by a whole buffer whenever a step's buffer is
  allocated while the last one lives; SwinFace stage 1 grew to three
  6.9 GB buffers that way (docs/performance.md section 21). With room
  reserved, a block that finds no free space is mapped on its own and
  returned on free, while the reserved room is still reused without
  page faults.
  """
  if not runtime.keep_host_heap_applies():
    # Off glibc, or malloc configured by the user: nothing to bound.
    assert not runtime.host_heap_kept()
    return
  bounded = _run_probe("RESERVE = 'room'\n" + _RESERVE_PROBE, "1")
  unbounded = _run_probe("RESERVE = None\n" + _RESERVE_PROBE, "1")
  too_big = _run_probe("RESERVE = 'too big'\n" + _RESERVE_PROBE, "1")
  pages = (200 << 20) // resource.getpagesize()
  print(f"200 MB blocks ({pages} pages): reserved {bounded}, "
        f"kept alone {unbounded}, room too big for memory {too_big}")
  assert bounded["kept"] and unbounded["kept"] and too_big["kept"]
  assert bounded["reserved"] and not too_big["reserved"]
  for probe in (bounded, unbounded):
    assert probe["first"] >= pages // 2  # the first use faults pages in
    assert probe["again"] < pages // 10  # and the next one reuses them
  # Kept alone, the overlapping block grows the heap for good.
  assert unbounded["growth"] >= 200 << 20 and unbounded["mapped"] == 0
  # Reserved, it is mapped on its own and unmapped on free.
  for probe in (bounded, too_big):
    assert probe["growth"] < 32 << 20
    assert probe["mapped"] >= 200 << 20
    assert probe["mapped_after_free"] < 32 << 20
    assert probe["overlap"] >= pages // 2
  # Where twice the room would not fit, no room is kept: every large block
  # is mapped and faulted in afresh, as with default malloc.
  assert too_big["again"] >= pages // 2
