"""The face-analysis service: every endpoint through FastAPI's test
client, each bad input, and a load test of a real server on loopback.

Models: the session's trained smoke age regressor, and the five other
served models' smoke configs at initialisation written as workdirs
(tests/serve_helpers.py says why); all are loaded through the same
`--workdir` path as `launch.serve`.
"""

import base64
import concurrent.futures
import io
import os
import subprocess
import sys
import time

from fastapi import testclient as fastapi_testclient
import httpx
import numpy as np
import pytest
from PIL import Image

from facejax import tasks
from facejax.data import faces as faces_lib
from facejax.data.faces import photos as photo_files
from facejax.evaluators import age as age_eval
from facejax.serve import app as app_lib
from facejax.serve import models as models_lib
from facejax.serve import photos as photos_lib
from helpers import ROOT
from serve_helpers import astronaut_jpeg, running_server, served_workdirs

MAX_BATCH = 4
# The astronaut's face in skimage's 512x512 photo (pixels, x0 y0 x1 y1).
FACE = (179, 58, 268, 175)


def _b64(raw: bytes) -> str:
  return base64.b64encode(raw).decode()


def _png(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def _cat_png() -> bytes:
  """skimage's Chelsea the cat: a real photo with no human face."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  return _png(data.chelsea())


def _decode_data_url(url: str) -> np.ndarray:
  assert url.startswith("data:image/png;base64,"), url[:40]
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(
      url.split(",", 1)[1]))))


@pytest.fixture(scope="module")
def workdirs(untrained_workdirs, regressor_workdir):
  return served_workdirs(untrained_workdirs, regressor_workdir)


@pytest.fixture(scope="module")
def served(workdirs):
  """endpoint -> Model, loaded from the workdirs as launch.serve does."""
  out = {}
  for name, workdir in workdirs.items():
    m = models_lib.load("", workdir=workdir, max_batch=MAX_BATCH)
    assert m.name == name
    out[m.endpoint] = m
  return out


@pytest.fixture(scope="module")
def client(served):
  limits = photos_lib.Limits(max_images=4, max_pixels=2_000_000,
                             max_faces=4)
  app = app_lib.create_app(served, limits, max_batch=MAX_BATCH,
                           max_upload_mb=3.0)
  with fastapi_testclient.TestClient(app) as c:
    yield c


@pytest.fixture(scope="module")
def astronaut():
  return _b64(astronaut_jpeg())


def _face_inside(box, expected=FACE, tolerance=20):
  return all(abs(a - b) <= tolerance for a, b in zip(box, expected))


def test_models_and_health(client, workdirs):
  assert client.get("/healthz").json()["status"] == "ok"
  info = client.get("/v1/models").json()
  assert sorted(info["models"]) == ["age", "age_edit", "analyze",
                                    "caricature", "edit", "kinship"]
  age = info["models"]["age"]
  assert age["name"] == "age_regressor"
  assert age["source"] == os.path.abspath(workdirs["age_regressor"])
  assert age["step"] > 0  # the trained run's checkpoint
  assert info["models"]["kinship"]["threshold"] == 0.5
  assert "celeba:Blond_Hair" in info["models"]["edit"]["targets"]
  schema = client.get("/openapi.json").json()
  assert {"/v1/analyze", "/v1/age", "/v1/age_edit", "/v1/edit",
          "/v1/caricature", "/v1/kinship", "/v1/models"} <= set(
              schema["paths"])
  # FastAPI's /docs page loads scripts from a CDN: not served.
  assert client.get("/docs").status_code == 404
  page = client.get("/")
  assert page.status_code == 200 and "/static/app.js" in page.text
  assert "http" not in client.get("/static/app.js").text.replace(
      "http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere


def test_age_matches_the_predict_command(client, astronaut, workdirs,
                                         tmp_path):
  """The server crops and scores a real photo exactly as
  `launch.predict` does (MTCNN, the regressor's box crop)."""
  r = client.post("/v1/age", json={"images": [astronaut]})
  assert r.status_code == 200, r.text
  body = r.json()
  assert body["model"] == "age_regressor"
  (result,) = body["results"]
  assert (result["width"], result["height"]) == (512, 512)
  face = result["faces"][0]
  assert _face_inside(face["box"]), face["box"]
  assert face["score"] > 0.9 and len(face["landmarks"]) == 5

  path = str(tmp_path / "astronaut.jpg")
  with open(path, "wb") as f:
    f.write(astronaut_jpeg())
  predict, size, align = age_eval.run_predictor(
      workdirs["age_regressor"], "best", tasks.get)
  crops = photo_files.FaceCrops([path], faces_lib.make_detector("mtcnn"),
                                align, size, progress=False)
  expected = [predict(np.stack([f.crop]))[0]
              for batch in crops for f in batch]
  got = [f["age"] for f in result["faces"]]
  np.testing.assert_allclose(got, expected, atol=0.01)


def test_many_images_per_request_keep_their_order(client, astronaut):
  r = client.post("/v1/age", json={"images": [
      astronaut, _b64(_cat_png()), "data:image/jpeg;base64," + astronaut]})
  assert r.status_code == 200, r.text
  a, cat, b = r.json()["results"]
  assert a["faces"] and b["faces"] and a["faces"] == b["faces"]
  assert cat["faces"] == [] and cat["message"] == "no face found"


def test_analyze(client, astronaut):
  face = client.post("/v1/analyze", json={"images": [astronaut]}
                     ).json()["results"][0]["faces"][0]
  assert _face_inside(face["box"])
  assert face["gender"] in ("male", "female")
  assert face["expression"] in face["expression_probabilities"]
  assert np.isclose(sum(face["expression_probabilities"].values()), 1.0,
                    atol=1e-3)
  assert "Smiling" in face["attributes"] and "embedding" not in face
  face = client.post("/v1/analyze", json={
      "images": [astronaut], "embedding": True}).json()["results"][0][
          "faces"][0]
  assert np.isclose(np.linalg.norm(face["embedding"]), 1.0, atol=1e-3)


def test_age_edit_images(client, astronaut, served):
  face = client.post("/v1/age_edit", json={
      "images": [astronaut], "ages": [20, 65]}).json()["results"][0][
          "faces"][0]
  assert [e["age"] for e in face["edits"]] == [20, 65]
  size = served["age_edit"].size
  for url in [face["input"]] + [e["image"] for e in face["edits"]]:
    assert _decode_data_url(url).shape == (size, size, 3)
  r = client.post("/v1/age_edit", json={"images": [astronaut],
                                        "ages": [130]})
  assert r.status_code == 422 and "ages" in r.text


def test_edit_targets(client, astronaut, served):
  targets = ["celeba:Blond_Hair", "rafd:happy"]
  face = client.post("/v1/edit", json={
      "images": [astronaut], "targets": targets}).json()["results"][0][
          "faces"][0]
  assert [e["target"] for e in face["edits"]] == targets
  size = served["edit"].size
  assert _decode_data_url(face["edits"][1]["image"]).shape == (size, size, 3)
  everything = client.post("/v1/edit", json={"images": [astronaut]}).json()
  assert len(everything["results"][0]["faces"][0]["edits"]) == len(
      served["edit"].targets)
  r = client.post("/v1/edit", json={"images": [astronaut],
                                    "targets": ["Purple_Hair"]})
  assert r.status_code == 422
  assert "Purple_Hair" in r.json()["detail"]
  assert "celeba:Blond_Hair" in r.json()["detail"]


def test_caricature_styles(client, astronaut):
  face = client.post("/v1/caricature", json={
      "images": [astronaut], "styles": 2, "seed": 3}).json()["results"][0][
          "faces"][0]
  assert face["direction"] == "photo2cari"
  a, b = (_decode_data_url(e["image"]) for e in face["edits"])
  assert a.shape == b.shape and not np.array_equal(a, b)
  again = client.post("/v1/caricature", json={
      "images": [astronaut], "styles": 2, "seed": 3}).json()["results"][0][
          "faces"][0]
  assert again["edits"] == face["edits"]  # the seed fixes the styles
  r = client.post("/v1/caricature", json={"images": [astronaut],
                                          "direction": "sideways"})
  assert r.status_code == 422


def test_kinship(client, astronaut):
  r = client.post("/v1/kinship", json={"images": [astronaut, astronaut]})
  assert r.status_code == 200, r.text
  (res,) = r.json()["results"]
  assert res["threshold"] == 0.5 and isinstance(res["kin"], bool)
  assert res["kin"] == (res["score"] >= 0.5)
  cat = _b64(_cat_png())
  res = client.post("/v1/kinship", json={"pairs": [
      [astronaut, cat], [astronaut, astronaut]]}).json()["results"]
  assert res[0]["kin"] is None and "no face found in photo b" in res[0][
      "message"]
  assert isinstance(res[1]["kin"], bool)
  for body in ({"images": [astronaut]}, {},
               {"images": [astronaut, astronaut],
                "pairs": [[astronaut, astronaut]]}):
    r = client.post("/v1/kinship", json=body)
    assert r.status_code == 422, (body.keys(), r.text)


@pytest.mark.parametrize("image, status, says", [
    (_b64(b"hello, not an image"), 400, "images[0]: not an image file"),
    ("%%% not base64 %%%", 400, "images[0]: not valid base64"),
    ("data:image/jpeg,rawbytes", 400, "must be base64"),
    ("", 400, "expected a base64-encoded image"),
])
def test_bad_images_are_4xx_with_a_message(client, image, status, says):
  r = client.post("/v1/age", json={"images": [image]})
  assert r.status_code == status and says in r.json()["detail"], r.text


def test_truncated_and_huge_images(client, astronaut):
  truncated = _b64(astronaut_jpeg()[:2000])
  r = client.post("/v1/age", json={"images": [astronaut, truncated]})
  assert r.status_code == 400
  assert r.json()["detail"].startswith("images[1]: cannot decode image")
  big = _b64(_png(np.zeros((1500, 1500, 3), np.uint8)))  # 2.25 MP > 2 MP
  r = client.post("/v1/age", json={"images": [big]})
  assert r.status_code == 413 and "1500x1500" in r.json()["detail"]


def test_request_limits(client, astronaut):
  r = client.post("/v1/age", json={"images": [astronaut] * 5})
  assert r.status_code == 413 and "at most 4" in r.json()["detail"]
  r = client.post("/v1/age", content=b"{" + b" " * (4 << 20) + b"}",
                  headers={"content-type": "application/json"})
  assert r.status_code == 413 and "--max_upload_mb" in r.json()["detail"]
  r = client.post("/v1/age", json={"pictures": [astronaut]})
  assert r.status_code == 422 and "images" in r.text
  r = client.post("/v1/age", content=b"{not json",
                  headers={"content-type": "application/json"})
  assert r.status_code == 422


def test_unloaded_model_says_how_to_load_it(served):
  app = app_lib.create_app({"age": served["age"]})
  with fastapi_testclient.TestClient(app) as c:
    r = c.post("/v1/edit", json={"images": ["x"]})
  assert r.status_code == 404
  assert "--workdir stargan=RUN or --weights stargan=FILE" in r.json()[
      "detail"]


def test_concurrent_requests_share_batches(client, astronaut):
  """Requests from 8 threads at once reach the model in shared batches."""
  before = client.get("/v1/models").json()["models"]["age"]["batches"]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    codes = list(pool.map(
        lambda _: client.post("/v1/age", json={"images": [astronaut]}
                              ).status_code, range(16)))
  assert codes == [200] * 16
  after = client.get("/v1/models").json()["models"]["age"]["batches"]
  calls = after["calls"] - before["calls"]
  items = after["items"] - before["items"]
  print(f"16 concurrent requests: {items} faces in {calls} model calls")
  assert items >= 16 and calls < items


def test_a_photo_is_detected_once_for_every_endpoint(client):
  """The page sends each photo to every endpoint at once: the server
  finds its faces once and every request shares them."""
  mirrored = np.ascontiguousarray(
      np.asarray(Image.open(io.BytesIO(astronaut_jpeg())))[:, ::-1])
  photo = _b64(_png(mirrored))
  detector = lambda: client.get("/v1/models").json()["detector"]["batches"]
  before = detector()
  calls = [("/v1/age", {"images": [photo]}),
           ("/v1/analyze", {"images": [photo]}),
           ("/v1/kinship", {"images": [photo, photo]})]
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    answers = list(pool.map(lambda c: client.post(c[0], json=c[1]), calls))
  assert [a.status_code for a in answers] == [200] * 3
  boxes = [answers[0].json()["results"][0]["faces"][0]["box"],
           answers[1].json()["results"][0]["faces"][0]["box"],
           answers[2].json()["results"][0]["faces"][0]["box"]]
  assert boxes[0] == boxes[1] == boxes[2]
  assert 512 - boxes[0][2] == pytest.approx(FACE[0], abs=20)  # mirrored
  assert detector()["items"] - before["items"] == 1


def test_official_dex_weights_serve_as_the_predict_command(tmp_path):
  """--weights dex=FILE: a DEX-format file (random weights under the
  documented names) answers /v1/age as `launch.predict --weights` would:
  MTCNN, the box crop at the file's input size, the expected age."""
  from dex_helpers import GEO, _dex_state_dict, _save_state_dict  # pylint: disable=g-import-not-at-top
  from facejax.tasks import frozen  # pylint: disable=g-import-not-at-top
  weights = _save_state_dict(_dex_state_dict(GEO, seed=3),
                             str(tmp_path / "dex.pth"))
  model = models_lib.load("dex", weights=weights, max_batch=MAX_BATCH)
  assert (model.endpoint, model.size, model.step) == ("age", 64, 0)
  app = app_lib.create_app({"age": model})
  with fastapi_testclient.TestClient(app) as c:
    faces = c.post("/v1/age", json={"images": [_b64(astronaut_jpeg())]}
                   ).json()["results"][0]["faces"]
    assert c.get("/v1/models").json()["models"]["age"]["source"] == (
        os.path.abspath(weights))
  path = str(tmp_path / "astronaut.jpg")
  with open(path, "wb") as f:
    f.write(astronaut_jpeg())
  crops = photo_files.FaceCrops([path], faces_lib.make_detector("mtcnn"),
                                "box", 64, progress=False)
  est = frozen.load_estimator({"estimator": "dex", "weights": weights})
  expected = [float(est.age(est.variables,
                            f.crop[None].astype(np.float32) / 255.0)[0])
              for batch in crops for f in batch]
  np.testing.assert_allclose([f["age"] for f in faces], expected, atol=0.01)
  assert all(0.0 <= a <= 100.0 for a in expected)


def test_model_flags_errors_name_the_flag(tmp_path, workdirs):
  with pytest.raises(ValueError, match="official weights are read for "
                     "swinface, dex, age_transformer, stargan"):
    models_lib.load("kinship", weights=str(tmp_path / "k.pt"))
  with pytest.raises(FileNotFoundError, match="--weights dex=.*no such file"):
    models_lib.load("dex", weights=str(tmp_path / "missing.pth"))
  with pytest.raises(ValueError, match="holds a 'age_regressor' run"):
    models_lib.load("stargan", workdir=workdirs["age_regressor"])
  with pytest.raises(FileNotFoundError, match="not a facejax training"):
    models_lib.load("", workdir=str(tmp_path))
  with pytest.raises(ValueError, match="--weights dex.pth: give NAME=FILE"):
    models_lib.load_all([], ["dex.pth"])
  reg = workdirs["age_regressor"]
  with pytest.raises(ValueError, match="/v1/age is served by age_regressor "
                     f"from {reg} already"):
    models_lib.load_all([reg, f"age_regressor={reg}"], [], report=print)


# --- A real server on loopback --------------------------------------------

def test_serve_without_models_says_how():
  run = subprocess.run([sys.executable, "-m", "launch.serve"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, XLA_FLAGS=""))
  assert run.returncode == 1
  assert "no model to serve: give --workdir=RUN" in run.stderr


def test_load_on_loopback(workdirs, tmp_path):
  """200 requests from 16 concurrent clients to a real server: no errors,
  batches of more than one face, more requests per second than one client
  gets; latency and throughput printed. Measured on a 2-core AMD EPYC
  (AVX-512), quiet: 1 client 18.9 req/s; 16 clients 30.9 req/s, p50 87
  ms, p99 330 ms, mean batch 2.35 (age model), 1.62 (detector)."""
  with running_server([f"--workdir={workdirs['age_regressor']}",
                      "--max_batch=8", "--batch_window_ms=10"],
                     str(tmp_path / "server.log")) as url:
    # The photo at 256 px (the detector's time per photo is a quarter of
    # the 512 px one's), a different file per request: the server detects
    # the faces of identical bytes once, and each request here should cost
    # a detection.
    small = np.array(Image.open(io.BytesIO(astronaut_jpeg())).resize(
        (256, 256)))
    bodies = []
    for k in range(430):
      small[0, 0] = (k % 256, k // 256, 0)
      buf = io.BytesIO()
      Image.fromarray(small).save(buf, format="JPEG", quality=92)
      bodies.append({"images": [_b64(buf.getvalue())]})
    def one(k):
      with httpx.Client(timeout=120) as c:
        t = time.perf_counter()
        r = c.post(url + "/v1/age", json=bodies[k])
        return r.status_code, time.perf_counter() - t

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
      # Warm-up, the same load untimed: the detector compiles the batch
      # shapes this load makes (the server compiled the model's at
      # start-up), which a server that has run a while no longer does.
      warm = list(pool.map(one, range(200, 400)))
      assert [c for c, _ in warm] == [200] * 200
      with httpx.Client(timeout=30) as c:
        before = c.get(url + "/v1/models").json()
      t0 = time.perf_counter()
      results = list(pool.map(one, range(200)))
      wall = time.perf_counter() - t0
    t0 = time.perf_counter()  # The same requests from one client.
    alone = [one(k) for k in range(400, 430)]
    alone_rate = len(alone) / (time.perf_counter() - t0)
    with httpx.Client(timeout=30) as c:
      after = c.get(url + "/v1/models").json()
  codes = [c for c, _ in results]
  latency = np.array([s for _, s in results])
  batches = {}
  for name, now, was in (
      ("age model", after["models"]["age"]["batches"],
       before["models"]["age"]["batches"]),
      ("detector", after["detector"]["batches"],
       before["detector"]["batches"])):
    calls = now["calls"] - was["calls"]
    batches[name] = (now["items"] - was["items"]) / max(calls, 1)
  print(f"\nload test: 1 client {alone_rate:.1f} req/s; 200 requests from "
        f"16 clients: {200 / wall:.1f} req/s, "
        f"p50 {np.percentile(latency, 50) * 1000:.0f} ms, p99 "
        f"{np.percentile(latency, 99) * 1000:.0f} ms; mean batch: age model "
        f"{batches['age model']:.2f}, detector {batches['detector']:.2f}; "
        f"slowest {np.sort(latency)[-4:].round(2).tolist()} s")
  assert codes == [200] * 200, sorted(set(codes))
  assert [c for c, _ in alone] == [200] * 30
  # Batching: more clients, more requests answered per second.
  assert 200 / wall > alone_rate
  assert batches["age model"] > 1.0 and batches["detector"] > 1.0
