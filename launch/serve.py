r"""Serves the given models as a JSON API and a page to try them on photos.

  pip install -r requirements-serve.txt
  python -m launch.serve --port=8080 --workdir=runs/age_regressor \
      --workdir=runs/swinface_s2 --weights=stargan=200000-G.ckpt

Then open http://127.0.0.1:8080/ (drop photos on the page) or call the
API: POST /v1/analyze, /v1/age, /v1/age_edit, /v1/edit, /v1/caricature,
/v1/kinship with {"images": [<base64 image>, ...]}; GET /v1/models says
what is loaded, GET /openapi.json is the schema. `--workdir` takes a training
workdir (its model is read from config.json; NAME=RUN checks it), and
`--weights NAME=FILE` an official checkpoint of swinface, dex,
age_transformer or stargan. Requests arriving together are batched
(--batch_window_ms, --max_batch). Binds 127.0.0.1 unless --host says
otherwise.
"""

import sys

from absl import app
from absl import flags

from launch import common

_PORT = flags.DEFINE_integer("port", 8080, "TCP port.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to bind "
                            "(0.0.0.0: every interface).")
_WORKDIRS = flags.DEFINE_multi_string(
    "workdir", [], "A training workdir to serve, RUN or NAME=RUN "
    "(repeat for several models).")
_WEIGHTS = flags.DEFINE_multi_string(
    "weights", [], "NAME=FILE: official weights of swinface, dex, "
    "age_transformer or stargan.")
_DETECTOR = flags.DEFINE_enum("detector", "mtcnn", ["mtcnn", "haar", "none"],
                              "Face detector (none: each photo is a face).")
_MIN_FACE = flags.DEFINE_float("min_face_size", 20.0, "Smallest face "
                               "looked for, in pixels.")
_MAX_BATCH = flags.DEFINE_integer("max_batch", 8, "Items per model call.")
_WINDOW = flags.DEFINE_float("batch_window_ms", 5.0, "How long a request "
                             "waits for others to share its batch.")
_MAX_UPLOAD = flags.DEFINE_float("max_upload_mb", 20.0, "Largest request "
                                 "body, in MiB.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 16, "Images per request.")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", 40_000_000, "Pixels per "
                                   "decoded photo.")
_MAX_FACES = flags.DEFINE_integer("max_faces", 8, "Faces answered per image.")
_WARM_UP = flags.DEFINE_bool("warm_up", True, "Compile every batch size "
                             "before taking requests.")


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}; models go in --workdir "
                "or --weights")
  try:
    import uvicorn  # pylint: disable=g-import-not-at-top
    from facejax.serve import app as app_lib  # pylint: disable=g-import-not-at-top
    from facejax.serve import models  # pylint: disable=g-import-not-at-top
    from facejax.serve import photos  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    common.fail(f"{e.name} is not installed: pip install -r "
                "requirements-serve.txt")
  if not _WORKDIRS.value and not _WEIGHTS.value:
    common.fail("no model to serve: give --workdir=RUN (a training workdir "
                "of swinface, age_regressor, dex, age_transformer, stargan, "
                "caricature or kinship) and/or --weights=NAME=FILE (official "
                "weights of swinface, dex, age_transformer or stargan); "
                "repeat the flag for several models")
  common.start_jax()
  try:
    served = models.load_all(_WORKDIRS.value, _WEIGHTS.value,
                             _MAX_BATCH.value, _WARM_UP.value,
                             lambda line: print(line, flush=True))
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  limits = photos.Limits(max_images=_MAX_IMAGES.value,
                         max_pixels=_MAX_PIXELS.value,
                         max_faces=_MAX_FACES.value)
  application = app_lib.create_app(
      served, limits, _DETECTOR.value, _MIN_FACE.value, _WINDOW.value,
      _MAX_UPLOAD.value, _MAX_BATCH.value)
  for endpoint, m in served.items():
    print(f"/v1/{endpoint}: {m.name} (step {m.step}) from {m.source}")
  print(f"serving on http://{_HOST.value}:{_PORT.value}/ (API schema: "
        f"/openapi.json; Ctrl-C stops)", flush=True)
  uvicorn.run(application, host=_HOST.value, port=_PORT.value,
              log_level="warning")
  sys.exit(0)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
