"""The service's page in a real browser: `launch.serve` started as a user
starts it, the page at / driven by headless Chromium (playwright).

The server serves every model: the session's trained smoke age regressor
and the other five at initialisation (tests/serve_helpers.py), so their
images are noise; what is checked is what the page shows, not what the
models learned. Photos are real ones that ship in scikit-image: the
astronaut (one face) and a cat (no face).
"""

import base64
import os
import time

import httpx
import pytest
from PIL import Image

import serve_helpers

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
INSTALL_HINT = ("Debian's Chromium is needed at /usr/bin/chromium: "
                "apt-get install -y chromium (and pip install playwright)")
# The astronaut's face in the 512x512 photo (x0, y0, x1, y1).
FACE = (179, 58, 268, 175)
AGES = [20, 30, 40, 50, 60]  # The page's default target ages.
# One model's first call compiles it; the page asks five at once.
ANSWER_MS = 300_000


@pytest.fixture(scope="module")
def server(untrained_workdirs, regressor_workdir, tmp_path_factory):
  """The base URL of `python -m launch.serve` with every model, on one
  CPU device."""
  root = tmp_path_factory.mktemp("served")
  workdirs = serve_helpers.served_workdirs(untrained_workdirs,
                                           regressor_workdir)
  start = time.time()
  with serve_helpers.running_server(
      ["--warm_up=false", "--max_batch=4",
       *[f"--workdir={name}={w}" for name, w in workdirs.items()]],
      str(root / "server.log")) as url:
    print(f"launch.serve answered /healthz after {time.time() - start:.1f} s")
    yield url


@pytest.fixture(scope="module")
def browser():
  """Headless Chromium; skipped (failed where CI requires it) when
  Chromium or playwright is missing."""
  try:
    from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  except ImportError:
    sync_playwright = None
  if sync_playwright is None or not os.path.exists(CHROMIUM):
    if os.environ.get("FACEJAX_REQUIRE_BROWSER") == "1":
      pytest.fail(INSTALL_HINT)
    pytest.skip(INSTALL_HINT)
  with sync_playwright() as p:
    b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                          headless=True)
    yield b
    b.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """name -> path: the astronaut (JPEG), the cat (PNG) and a text file
  named like a JPEG."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  d = tmp_path_factory.mktemp("photos")
  out = {"astronaut": d / "astronaut.jpg", "cat": d / "cat.png",
         "notes": d / "notes.jpg"}
  out["astronaut"].write_bytes(serve_helpers.astronaut_jpeg())
  Image.fromarray(data.chelsea()).save(out["cat"])
  out["notes"].write_text("this is not a picture\n")
  return {k: str(v) for k, v in out.items()}


def _open(browser, url):
  """A fresh page at `url`, once it knows which models are loaded; page
  errors are collected in page.errors."""
  page = browser.new_page(viewport={"width": 1280, "height": 900})
  page.errors = []
  page.on("pageerror", lambda e: page.errors.append(str(e)))
  page.goto(url)
  page.wait_for_selector("body[data-ready]", timeout=30_000)
  assert page.get_attribute("body", "data-ready") == "true"
  return page


def _upload(page, paths):
  """Chooses `paths` in the file input and waits until every photo is
  answered."""
  before = page.locator("[data-testid=photo-result]").count()
  page.set_input_files("#photo-input", paths)
  page.wait_for_function(
      "n => document.querySelectorAll("
      "'[data-testid=photo-result][data-state=done]').length == n",
      arg=before + len(paths), timeout=ANSWER_MS)


def _card(page, name):
  return page.locator("[data-testid=photo-result]", has_text=name)


def _images_loaded(locator) -> list[int]:
  """naturalWidth of every <img> under `locator` once all have loaded or
  failed (data URLs decode asynchronously)."""
  locator.first.wait_for()
  handle = locator.first.element_handle()
  locator.page.wait_for_function(
      "el => [...el.querySelectorAll('img')].every(i => i.complete)",
      arg=handle, timeout=30_000)
  return locator.first.evaluate(
      "el => [...el.querySelectorAll('img')].map(i => i.naturalWidth)")


@pytest.fixture(scope="module")
def page(browser, server, photos):
  """The page after the astronaut, the cat and the text file are
  dropped on it."""
  page = _open(browser, server + "/")
  start = time.time()
  _upload(page, [photos["astronaut"], photos["cat"], photos["notes"]])
  print(f"page answered 3 photos in {time.time() - start:.1f} s")
  yield page
  assert not page.errors, page.errors
  page.close()


def test_page_lists_every_loaded_model(page):
  loaded = page.locator("[data-testid=model-loaded]")
  assert sorted(loaded.evaluate_all("els => els.map(e => e.dataset.endpoint)")
                ) == ["age", "age_edit", "analyze", "caricature", "edit",
                      "kinship"]
  assert page.locator("[data-testid=not-loaded]:visible").count() == 0


def test_face_is_boxed_where_it_is(page):
  card = _card(page, "astronaut.jpg")
  image = card.locator("[data-testid=photo]").bounding_box()
  boxes = card.locator("[data-testid=face-box]")
  assert boxes.count() >= 1
  scale = 512 / image["width"]
  assert abs(image["height"] * scale - 512) < 2  # Square, as the photo.

  def in_photo(b):
    return ((b["x"] - image["x"]) * scale, (b["y"] - image["y"]) * scale,
            (b["x"] + b["width"] - image["x"]) * scale,
            (b["y"] + b["height"] - image["y"]) * scale)

  def overlap(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])
    return inter / (area(a) + area(b) - inter)

  drawn = [in_photo(boxes.nth(i).bounding_box())
           for i in range(boxes.count())]
  best = max(overlap(d, FACE) for d in drawn)
  assert best > 0.4, (drawn, FACE)
  # Faces are numbered on the photo and in their cards.
  assert card.locator("svg text").first.text_content() == "1"
  assert card.locator("[data-testid=face]").count() == boxes.count()
  assert "face" in card.locator("[data-testid=face-count]").inner_text()


def test_analysis_shows_age_gender_and_expression(page):
  face = _card(page, "astronaut.jpg").locator("[data-testid=face]").first
  analysis = face.locator("[data-testid=analysis]")
  text = analysis.inner_text()
  age = analysis.locator("[data-field=age]").inner_text()
  assert age.split()[0].replace(".", "", 1).isdigit(), text
  assert analysis.locator("[data-field=gender]").inner_text().split()[0] in (
      "male", "female"), text
  assert analysis.locator("[data-field=expression]").inner_text(), text
  # The trained regressor's estimate, from /v1/age.
  years = float(face.locator("[data-testid=age] .big").inner_text())
  assert 0.0 <= years <= 120.0


def test_age_edit_strip_has_input_and_every_age(page):
  face = _card(page, "astronaut.jpg").locator("[data-testid=face]").first
  strip = face.locator("[data-testid=age-edit-strip]")
  widths = _images_loaded(strip)
  assert len(widths) == len(AGES) + 1 and all(w > 0 for w in widths), widths
  labels = strip.locator("figcaption").all_inner_texts()
  assert labels == ["input"] + [f"{a} y" for a in AGES]


def test_attribute_edits_and_caricatures_load(page, server):
  targets = httpx.get(f"{server}/v1/models").json()[
      "models"]["edit"]["targets"]
  face = _card(page, "astronaut.jpg").locator("[data-testid=face]").first
  widths = _images_loaded(face.locator("[data-testid=attribute-edits]"))
  assert len(widths) == len(targets) + 1 and all(w > 0 for w in widths)
  widths = _images_loaded(face.locator("[data-testid=caricatures]"))
  assert len(widths) == 3 + 1 and all(w > 0 for w in widths)  # 3 styles


def test_photo_without_a_face_says_so(page):
  card = _card(page, "cat.png")
  assert card.locator("[data-testid=no-face]").inner_text() == "no face found"
  assert card.locator("[data-testid=face-box]").count() == 0
  assert card.locator("[data-testid=photo-error]").is_hidden()


def test_bad_upload_shows_the_servers_message(page, server, photos):
  with open(photos["notes"], "rb") as f:
    body = {"images": [base64.b64encode(f.read()).decode()]}
  answer = httpx.post(f"{server}/v1/age", json=body, timeout=60)
  assert answer.status_code == 400
  detail = answer.json()["detail"]
  error = _card(page, "notes.jpg").locator("[data-testid=photo-error]")
  assert error.is_visible()
  assert detail in error.inner_text()


def test_kinship_compares_two_photos(page, photos):
  result = page.locator("[data-testid=kinship-result]")
  decision = page.locator("[data-testid=kinship-decision]")
  # A photo without a face: no decision, and the page says why.
  page.set_input_files("#kin-a", photos["astronaut"])
  page.set_input_files("#kin-b", photos["cat"])
  page.click("#kin-compare")
  result.wait_for(state="visible", timeout=ANSWER_MS)
  assert decision.inner_text() == "no face found in photo b"
  # The same face twice: a score, the threshold and a decision.
  page.set_input_files("#kin-b", photos["astronaut"])
  page.click("#kin-compare")
  page.wait_for_function(
      "() => /KIN/.test(document.querySelector("
      "'[data-testid=kinship-decision]').textContent)", timeout=ANSWER_MS)
  assert page.locator("[data-testid=kinship-error]").is_hidden()
  assert decision.inner_text() in ("KIN", "NOT KIN")
  assert 0.0 <= float(result.locator("[data-field=score]").inner_text()) <= 1
  assert float(result.locator("[data-field=threshold]").inner_text()) == 0.5


def test_full_page_screenshot(page, tmp_path):
  path = tmp_path / "serve_page.png"
  page.screenshot(path=str(path), full_page=True)
  with Image.open(path) as shot:
    assert shot.size[0] >= 1000 and shot.size[1] >= 1500, shot.size
    assert len(set(shot.convert("L").resize((64, 64)).getdata())) > 50
  assert path.stat().st_size > 100_000


def test_validation_errors_appear_next_to_their_section(browser, server,
                                                        photos):
  page = _open(browser, server + "/")
  page.click("#options summary")
  page.fill("#opt-ages", "20, 150")
  _upload(page, [photos["astronaut"]])
  face = page.locator("[data-testid=face]").first
  # Pydantic's 422 detail names the field; the other sections answer.
  error = face.locator(".age_edit [data-testid=section-error]").inner_text()
  assert "ages.1" in error and "100" in error, error
  assert face.locator("[data-testid=analysis]").is_visible()
  assert "ages.1" in page.locator("[data-testid=photo-error]").inner_text()
  assert not page.errors, page.errors
  page.close()


def test_models_not_loaded_are_left_out(browser, server, photos):
  page = browser.new_page()
  page.errors = []
  page.on("pageerror", lambda e: page.errors.append(str(e)))
  # The page as a server with the age model alone would show it.
  models = httpx.get(f"{server}/v1/models").json()
  models["models"] = {"age": models["models"]["age"]}
  page.route("**/v1/models", lambda route: route.fulfill(json=models))
  page.goto(server + "/")
  page.wait_for_selector("body[data-ready=true]")
  missing = page.locator("[data-testid=model-missing]").evaluate_all(
      "els => els.map(e => e.dataset.endpoint)")
  assert sorted(missing) == ["age_edit", "analyze", "caricature", "edit",
                             "kinship"]
  notes = page.locator("[data-testid=not-loaded]:visible").all_inner_texts()
  assert any("Kinship is not loaded" in n for n in notes), notes
  assert page.locator("#kin-compare").is_hidden()
  # Dropped on the zone this time, as a user drags a file in.
  with open(photos["astronaut"], "rb") as f:
    data = base64.b64encode(f.read()).decode()
  page.locator("#dropzone").evaluate(
      """(zone, data) => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const drop = new DataTransfer();
        drop.items.add(new File([bytes], "dropped.jpg", {type: "image/jpeg"}));
        zone.dispatchEvent(new DragEvent("drop", {
            dataTransfer: drop, bubbles: true, cancelable: true}));
      }""", data)
  page.wait_for_selector("[data-testid=photo-result][data-state=done]",
                         timeout=ANSWER_MS)
  assert "dropped.jpg" in page.locator(
      "[data-testid=photo-result]").inner_text()
  face = page.locator("[data-testid=face]").first
  assert face.locator("[data-endpoint]").evaluate_all(
      "els => els.map(e => e.dataset.endpoint)") == ["age"]
  assert float(face.locator("[data-testid=age] .big").inner_text()) >= 0
  assert not page.errors, page.errors
  page.close()
