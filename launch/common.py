"""Flags and start-up shared by the launch scripts."""

import sys

from absl import flags
from absl import logging
import jax

from facejax import parallel

_COORDINATOR = flags.DEFINE_string(
    "coordinator", "", "host:port of process 0 for multi-process runs "
    "(jax.distributed); leave empty on one host.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1,
                                      "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index.")
_CACHE = flags.DEFINE_string(
    "compilation_cache", "", "Directory for JAX's persistent compilation "
    "cache (reruns and resumes skip recompiling).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() with cluster "
    "auto-detection (Cloud TPU, SLURM, Kubernetes).")


def start_jax() -> None:
  """jax.distributed (when asked) and a one-line device summary."""
  parallel.maybe_initialize_distributed(
      _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
      auto=_DISTRIBUTED.value)
  parallel.configure_runtime(_CACHE.value)
  logging.info("JAX %s on %s: %d device(s), process %d/%d", jax.__version__,
               jax.default_backend(), jax.device_count(),
               jax.process_index(), jax.process_count())


def fail(message: str, code: int = 1):
  """Exits with a readable message instead of a traceback."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors for bad config overrides.

  ml_collections reports an unknown `--config.key` as a traceback from
  inside flag parsing; pass this as `app.run(main, flags_parser=...)`.
  """
  try:
    rest = flags.FLAGS(argv)
    if not flags.FLAGS["verbosity"].present:
      # Quiet by default: library INFO lines (orbax, absl, jax) would bury
      # facejax's own output, which is printed; --verbosity=0 shows them.
      logging.set_verbosity(logging.WARNING)
    return rest
  except flags.Error as e:
    fail(f"{e}\nSee --helpfull for the flags.", code=2)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = (str(e).strip("'\"").replace("\\n", " ")
               .replace('\\"', '"').replace("\\'", "'"))
    override = [a for a in argv[1:] if a.startswith("--config.")]
    fail(f"bad config override {override}: unknown key or wrong type "
         f"({message})", code=2)
