"""Flags and start-up shared by the launch scripts."""

import sys

from absl import flags
from absl import logging
import jax

from facejax import mesh as mesh_lib

from facejax import runtime

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
  mesh_lib.maybe_initialize_distributed(
      _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
      auto=_DISTRIBUTED.value)
  runtime.configure_runtime(_CACHE.value)
  logging.info("JAX %s on %s: %d device(s), process %d/%d", jax.__version__,
               jax.default_backend(), jax.device_count(),
               jax.process_index(), jax.process_count())


def warn(message: str) -> None:
  """A problem that does not stop the command, on stderr."""
  print(message, file=sys.stderr, flush=True)


def fail(message: str, code: int = 1):
  """Exits with a readable message instead of a traceback."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def _one_line(message: str) -> str:
  """A flag error without the traceback ml_collections embeds in it: its
  first line and the exception it reports."""
  lines = [l.strip() for l in message.splitlines() if l.strip()]
  if "Failed loading config file" in message:
    tried = [l for l in lines if l.endswith(".py")]
    reason = [l for l in lines if l.startswith("[Errno")]
    return (f"config file {', '.join(tried) or '?'} could not be loaded"
            + (f" ({reason[-1]})" if reason else ""))
  if any(l.startswith("Traceback (most recent call last)") for l in lines):
    return f"{lines[0]} {lines[-1]}"
  return message


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with one-line errors for bad config overrides.

  ml_collections reports an unknown `--config.key` as a traceback from
  inside flag parsing; pass this as `app.run(main, flags_parser=...)`.
  """
  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS:
      # ml_collections defers a missing config file's error to the first
      # use of the config: make it happen here.
      getattr(flags.FLAGS["config"].value, "keys", None)
    if not flags.FLAGS["verbosity"].present:
      # Quiet by default: library INFO lines (orbax, absl, jax) would bury
      # facejax's own output, which is printed; --verbosity=0 shows them.
      logging.set_verbosity(logging.WARNING)
    return rest
  except flags.Error as e:
    fail(f"{_one_line(str(e))}\nSee --helpfull for the flags.", code=2)
  except OSError as e:  # a --config file that is not there
    fail(f"{_one_line(str(e))}", code=2)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = (str(e).strip("'\"").replace("\\n", " ")
               .replace('\\"', '"').replace("\\'", "'"))
    override = [a for a in argv[1:] if a.startswith("--config.")]
    fail(f"bad config override {override}: unknown key or wrong type "
         f"({message})", code=2)


class FaceFlags:
  """The photo commands' face flags: --detector, --align, --margin,
  --min_face_size, --max_faces, --batch_size, --out. Call once, at import."""

  def __init__(self, default_align: str = "", rows: bool = True):
    from facejax.data import faces  # pylint: disable=g-import-not-at-top
    from facejax.data.faces import align  # pylint: disable=g-import-not-at-top
    self.detector = flags.DEFINE_enum(
        "detector", "mtcnn", list(faces.DETECTORS),
        "Face detector: mtcnn (boxes and 5 landmarks), haar (OpenCV, boxes "
        "only) or none (each photo is one aligned face).")
    self.align = flags.DEFINE_enum(
        "align", default_align or None, list(align.TEMPLATES),
        "Face crop; default: the one the model was trained on (its "
        "config's data.align).")
    self.margin = flags.DEFINE_float(
        "margin", 0.4, "--align=box: margin added on each side of the face "
        "box, as a fraction of its side (DEX: 0.4).")
    self.min_face_size = flags.DEFINE_float(
        "min_face_size", 20.0, "Smallest face MTCNN looks for, in pixels "
        "(at least 12).")
    self.max_faces = flags.DEFINE_integer(
        "max_faces", 0, "Faces kept per photo, most confident first (0: "
        "all).")
    self.batch_size = flags.DEFINE_integer(
        "batch_size", 16, "Photos detected, and faces scored, per batch.")
    self.out = flags.DEFINE_string(
        "out", "", "Write one row per face to this .csv or .jsonl file."
    ) if rows else None

  def crops(self, paths, model_align: str, size: int):
    """A photos.FaceCrops over `paths` with these flags' choices."""
    from facejax.data import faces  # pylint: disable=g-import-not-at-top
    from facejax.data.faces import photos  # pylint: disable=g-import-not-at-top
    if self.margin.value < 0:
      raise ValueError(f"--margin={self.margin.value} must be >= 0")
    if self.max_faces.value < 0:
      raise ValueError(f"--max_faces={self.max_faces.value} must be >= 0 "
                       "(0: every face)")
    if self.batch_size.value < 1:
      raise ValueError(f"--batch_size={self.batch_size.value} must be >= 1")
    detector = faces.make_detector(self.detector.value,
                                   self.min_face_size.value)
    template = self.align.value or model_align
    if self.detector.value == "none" and not self.align.present:
      template = "none"   # The whole photo is the face, as given.
    return photos.FaceCrops(
        paths, detector, template, size, margin=self.margin.value,
        batch_size=self.batch_size.value, max_faces=self.max_faces.value,
        progress=self.out is None or bool(self.out.value))


def report_photos(crops, rows_written: int, out: str) -> None:
  """The closing lines of a photo command; exit 1 if a file failed."""
  if out:
    print(f"{rows_written} row(s) written to {out}", flush=True)
  if crops.no_face:
    print(f"{len(crops.no_face)} photo(s) with no face found (reported as "
          "rows, not scored)", file=sys.stderr)
  if crops.failed:
    print(f"{len(crops.failed)} of {len(crops.paths)} file(s) could not be "
          f"read: {', '.join(crops.failed[:5])}"
          + (" ..." if len(crops.failed) > 5 else ""), file=sys.stderr)
    sys.exit(1)
