"""The face-analysis service: every loaded model behind one JSON API.

  app = create_app({"age": models.load("", workdir="runs/age_regressor")})
  uvicorn.run(app, host="127.0.0.1", port=8080)   # launch.serve does this

Images travel as base64 strings (or data: URLs) in JSON, one or many per
request. Each photo's faces are found by the detector and each face cropped
as its model was trained; detection and every model run through a
`Batcher`, so concurrent requests share batches. The page at / drives the
same API. Bad input is a 4xx with a message (`{"detail": ...}`); the
OpenAPI schema is at /openapi.json.
"""

import asyncio
import contextlib
import hashlib
import importlib.resources
import json
import time
from typing import Annotated, Literal, Optional

import fastapi
from fastapi import staticfiles
from fastapi.concurrency import run_in_threadpool
import jax
import pydantic

from facejax.data.faces import align
from facejax.serve import batcher as batcher_lib
from facejax.serve import models as models_lib
from facejax.serve import photos as photos_lib

# Detections remembered by the photo's hash (boxes and landmarks only).
_DETECTIONS_KEPT = 256

Image64 = Annotated[str, pydantic.Field(
    description="An image file (JPEG, PNG, ...) as base64, or a data: URL.")]


class ImagesRequest(pydantic.BaseModel):
  images: list[Image64] = pydantic.Field(
      min_length=1, description="One or more photos; every face in each "
      "is answered.")


class AnalyzeRequest(ImagesRequest):
  embedding: bool = pydantic.Field(
      False, description="Also return each face's L2-normalised "
      "recognition embedding.")


class AgeEditRequest(ImagesRequest):
  ages: list[Annotated[float, pydantic.Field(ge=0, le=100)]] = (
      pydantic.Field([20, 30, 40, 50, 60], min_length=1, max_length=12,
                     description="Target ages in years."))


class EditRequest(ImagesRequest):
  targets: Optional[list[str]] = pydantic.Field(
      None, min_length=1, description="Target names from GET /v1/models "
      "(e.g. 'CelebA:Blond_Hair'); default: every target.")


class CaricatureRequest(ImagesRequest):
  direction: Literal["photo2cari", "cari2photo"] = "photo2cari"
  styles: int = pydantic.Field(3, ge=1, le=8,
                               description="Random style codes per face.")
  seed: int = pydantic.Field(0, description="Seed of the style codes.")


class KinshipRequest(pydantic.BaseModel):
  images: Optional[list[Image64]] = pydantic.Field(
      None, description="Two photos: one pair.")
  pairs: Optional[list[tuple[Image64, Image64]]] = pydantic.Field(
      None, min_length=1, description="Several pairs of photos.")


class _BodyLimit:
  """Refuses request bodies over `limit` bytes with 413, counted as they
  arrive (a Content-Length that says more is refused before reading)."""

  def __init__(self, app, limit: int):
    self.app, self.limit = app, limit

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    headers = dict(scope.get("headers") or [])
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > self.limit:
      return await self._refuse(send)
    seen = 0

    async def counted():
      nonlocal seen
      message = await receive()
      if message["type"] == "http.request":
        seen += len(message.get("body", b""))
        if seen > self.limit:  # A body sent without Content-Length.
          raise fastapi.HTTPException(413, self.message())
      return message
    return await self.app(scope, counted, send)

  def message(self) -> str:
    return (f"request body is larger than the server's limit of "
            f"{self.limit:,} bytes (--max_upload_mb)")

  async def _refuse(self, send):
    body = json.dumps({"detail": self.message()}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Service:
  """The loaded models, the detector and their batchers."""

  def __init__(self, models: dict[str, models_lib.Model],
               limits: photos_lib.Limits, detector: str,
               min_face_size: float, window_s: float, max_batch: int):
    self.models = models
    self.limits = limits
    self.detector_name = detector
    self.detector = photos_lib.Detector(detector, min_face_size, limits)
    self.batchers = {
        endpoint: batcher_lib.Batcher(m.run, m.max_batch, window_s, endpoint)
        for endpoint, m in models.items()}
    self.detect = batcher_lib.Batcher(self.detector, max_batch, window_s,
                                      "detect")
    self.started = time.time()
    self._detections: dict[bytes, asyncio.Future] = {}

  def model(self, endpoint: str) -> models_lib.Model:
    if endpoint not in self.models:
      names = [n for n, e in models_lib.ENDPOINTS.items() if e == endpoint]
      weights = [n for n in names if n in models_lib.WEIGHTS]
      how = " or ".join([f"--workdir {names[0]}=RUN"]
                        + [f"--weights {n}=FILE" for n in weights])
      raise fastapi.HTTPException(
          404, f"no model serves /v1/{endpoint} on this server; start it "
          f"with {how}")
    return self.models[endpoint]

  async def photos(self, images: list[str], field: str = "images"):
    """Decoded photos and their faces: [(photo, [Face, ...]), ...]."""
    if len(images) > self.limits.max_images:
      raise photos_lib.BadInput(
          f"{len(images)} images in one request; the server takes at most "
          f"{self.limits.max_images} (--max_images)", 413)
    decoded = await run_in_threadpool(
        lambda: [photos_lib.decode(im, f"{field}[{i}]", self.limits)
                 for i, im in enumerate(images)])
    found = await asyncio.gather(*[self._faces(hashlib.sha256(
        im.encode()).digest(), photo) for im, photo in zip(images, decoded)])
    return list(zip(decoded, found))

  async def _faces(self, key: bytes, photo):
    """The faces of one photo, detected once for every request that sends
    the same bytes (the page sends each photo to every endpoint at once):
    later requests share the detection in progress or its result."""
    task = self._detections.get(key)
    if task is None:
      task = asyncio.ensure_future(self.detect.submit([photo]))
      self._detections[key] = task
      while len(self._detections) > _DETECTIONS_KEPT:
        self._detections.pop(next(iter(self._detections)))
    try:
      return (await asyncio.shield(task))[0]
    except Exception:
      self._detections.pop(key, None)  # A failure is not remembered.
      raise

  def crop(self, photo, face, model: models_lib.Model):
    """The face cropped as `model` was trained (facejax.data.faces.align);
    a whole photo taken as the face (--detector=none) is not grown."""
    margin = 0.0 if self.detector_name == "none" else 0.4
    return align.crop(photo, model.align, model.size, face.box,
                      face.landmarks, margin)

  async def faces_answered(self, endpoint: str, images: list[str],
                           items_of, answer_of) -> dict:
    """The common shape of the per-face endpoints.

    items_of(model, crop) -> the items one face sends to the model;
    answer_of(model, crop, results) -> what the face's JSON adds.
    """
    model = self.model(endpoint)
    found = await self.photos(images)
    per_face, items = [], []
    for photo, faces in found:
      for face in faces:
        c = self.crop(photo, face, model)
        face_items = items_of(model, c)
        per_face.append((face, c, len(face_items)))
        items += face_items
    results = await self.batchers[endpoint].submit(items) if items else []
    out, k, f = [], 0, 0
    for photo, faces in found:
      answers = []
      for _ in faces:
        face, c, n = per_face[f]
        answers.append({**photos_lib.face_json(face),
                        **answer_of(model, c, results[k:k + n])})
        k += n
        f += 1
      entry = {"width": int(photo.shape[1]), "height": int(photo.shape[0]),
               "faces": answers}
      if not faces:
        entry["message"] = "no face found"
      out.append(entry)
    return {"model": model.name, "results": out}

  def info(self) -> dict:
    return {
        "models": {e: {"name": m.name, **m.info(),
                       "batches": self.batchers[e].stats.as_dict()}
                   for e, m in self.models.items()},
        "detector": {"name": self.detector_name,
                     "batches": self.detect.stats.as_dict()},
        "limits": {"max_images": self.limits.max_images,
                   "max_pixels": self.limits.max_pixels,
                   "max_faces": self.limits.max_faces},
        "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
        "uptime_seconds": round(time.time() - self.started, 1)}


def create_app(models: dict[str, models_lib.Model],
               limits: photos_lib.Limits = photos_lib.Limits(),
               detector: str = "mtcnn", min_face_size: float = 20.0,
               window_ms: float = 5.0, max_upload_mb: float = 20.0,
               max_batch: int = 8, warm_up: bool = False):
  """The ASGI app serving `models` (endpoint -> Model, e.g. from
  `models.load`): the JSON API under /v1, the page at /."""
  for endpoint, m in models.items():
    if m.endpoint != endpoint:
      raise ValueError(f"a {m.name} model serves /v1/{m.endpoint}, not "
                       f"/v1/{endpoint}")
  service = Service(models, limits, detector, min_face_size,
                    window_ms / 1000.0, max_batch)

  @contextlib.asynccontextmanager
  async def lifespan(_):
    for b in [service.detect, *service.batchers.values()]:
      b.start()
    if warm_up:
      for m in models.values():
        await run_in_threadpool(m.warm_up)
    yield
    for b in [service.detect, *service.batchers.values()]:
      await b.stop()

  # No /docs or /redoc: FastAPI's pages load their scripts from a CDN, and
  # nothing here may reach the internet; the schema is /openapi.json.
  app = fastapi.FastAPI(
      title="facejax", lifespan=lifespan, docs_url=None, redoc_url=None,
      description="Face analysis, age estimation and editing, attribute "
      "editing, caricatures and kinship, one JSON API. Images are base64 "
      "strings; every face in every image is answered.")
  app.state.service = service

  @app.exception_handler(photos_lib.BadInput)
  async def _bad_input(request, e: photos_lib.BadInput):
    del request
    return fastapi.responses.JSONResponse({"detail": str(e)}, e.status)

  @app.get("/healthz")
  async def healthz():
    return {"status": "ok", "models": sorted(models)}

  @app.get("/v1/models")
  async def list_models():
    """What is loaded, from where, and how its batches went."""
    return service.info()

  @app.post("/v1/analyze")
  async def analyze(req: AnalyzeRequest):
    """SwinFace: age, gender, expression and attributes of every face."""
    def answer(model, crop, results):
      del model, crop
      r = dict(results[0])
      if not req.embedding:
        r.pop("embedding")
      return r
    return await service.faces_answered(
        "analyze", req.images, lambda m, c: [c], answer)

  @app.post("/v1/age")
  async def age(req: ImagesRequest):
    """The age regressor or DEX: the age of every face."""
    return await service.faces_answered(
        "age", req.images, lambda m, c: [c], lambda m, c, r: r[0])

  @app.post("/v1/age_edit")
  async def age_edit(req: AgeEditRequest):
    """The age transformer: every face at each target age (PNG data
    URLs), and the input as the model sees it."""
    def answer(model, crop, results):
      return {"input": models_lib.png_data_url(model.model_input(crop),
                                               signed=True),
              "edits": [{"age": a, "image": im}
                        for a, im in zip(req.ages, results)]}
    return await service.faces_answered(
        "age_edit", req.images, lambda m, c: [(c, a) for a in req.ages],
        answer)

  @app.post("/v1/edit")
  async def edit(req: EditRequest):
    """StarGAN: every face translated to each target."""
    model = service.model("edit")
    targets = req.targets or list(model.targets)
    unknown = [t for t in targets if t not in model.targets]
    if unknown:
      raise photos_lib.BadInput(
          f"unknown target(s) {', '.join(map(repr, unknown))}; this model "
          f"has {', '.join(model.targets)}", 422)

    def answer(model, crop, results):
      return {"input": models_lib.png_data_url(model.model_input(crop),
                                               signed=True),
              "edits": [{"target": t, "image": im}
                        for t, im in zip(targets, results)]}
    return await service.faces_answered(
        "edit", req.images, lambda m, c: [(c, t) for t in targets], answer)

  @app.post("/v1/caricature")
  async def caricature(req: CaricatureRequest):
    """The photo <-> caricature translator: `styles` translations of
    every face, one per random style code."""
    model = service.model("caricature")
    codes = model.styles(req.styles, req.seed)

    def answer(model, crop, results):
      return {"input": models_lib.png_data_url(model.model_input(crop),
                                               signed=True),
              "direction": req.direction,
              "edits": [{"style": k, "image": im}
                        for k, im in enumerate(results)]}
    return await service.faces_answered(
        "caricature", req.images,
        lambda m, c: [(c, req.direction, s) for s in codes], answer)

  @app.post("/v1/kinship")
  async def kinship(req: KinshipRequest):
    """Kinship: each pair's score, the threshold and the decision, on
    each photo's most confident face."""
    model = service.model("kinship")
    if (req.images is None) == (req.pairs is None):
      raise photos_lib.BadInput("give either 'images' (two photos) or "
                                "'pairs' (a list of [photo, photo])", 422)
    if req.images is not None:
      if len(req.images) != 2:
        raise photos_lib.BadInput(f"'images' holds {len(req.images)} "
                                  "photo(s); kinship compares exactly 2", 422)
      pairs = [tuple(req.images)]
      field = "images"
    else:
      pairs = req.pairs
      field = "pairs"
    flat = [im for pair in pairs for im in pair]
    found = await service.photos(flat, field)
    items, results = [], []
    for p in range(len(pairs)):
      (pa, fa), (pb, fb) = found[2 * p], found[2 * p + 1]
      faces = [photos_lib.face_json(f[0]) if f else None for f in (fa, fb)]
      missing = [n for n, f in zip("ab", (fa, fb)) if not f]
      if missing:
        results.append({"faces": faces, "kin": None, "message":
                        f"no face found in photo {' and '.join(missing)}"})
        continue
      items.append((service.crop(pa, fa[0], model),
                    service.crop(pb, fb[0], model)))
      results.append({"faces": faces})
    scored = iter(await service.batchers["kinship"].submit(items)
                  if items else [])
    for r in results:
      if "kin" not in r:
        r.update(next(scored))
    return {"model": model.name, "threshold_source": model.threshold_source,
            "results": results}

  static = importlib.resources.files("facejax.serve") / "static"
  app.mount("/static", staticfiles.StaticFiles(directory=str(static)),
            name="static")

  @app.get("/", include_in_schema=False)
  async def page():
    return fastapi.responses.FileResponse(str(static / "index.html"))

  if max_upload_mb:
    app.add_middleware(_BodyLimit, limit=int(max_upload_mb * 1024 * 1024))
  return app
