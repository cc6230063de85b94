"""The models a server answers with: one per endpoint, loaded once.

Each model takes face crops (uint8, aligned as it was trained: `align`,
`size`) and answers a batch at a time (`run(items) -> results`), the
function its endpoint's `Batcher` calls. A batch is padded to one of a few
sizes (powers of two up to the batch limit, rounded up to the device
count), so a server compiles a handful of programs per model, not one per
batch size; `warm_up` compiles them before the first request.

Models are loaded from a training workdir (`runs.restore`) or, where the
model has an importer, an official weights file (`runs.load`), exactly as
the photo commands load them.
"""

import abc
import base64
import dataclasses
import io
import os
from typing import Any, Callable

import jax
import numpy as np
from PIL import Image

from facejax import mesh as mesh_lib
from facejax import runs
from facejax import tasks
from facejax.data import stargan as stargan_data
from facejax.evaluators import age as age_eval
from facejax.evaluators import image_grid
from facejax.evaluators import kinship as kinship_eval
from facejax.evaluators import stargan as stargan_eval
from facejax.evaluators import swinface as swinface_eval
from facejax.models import swinface as swinface_model
from facejax.tasks import caricature as caricature_task
from facejax.tasks import frozen

# config name -> the endpoint that serves it (one model per endpoint).
ENDPOINTS = {"swinface": "analyze", "age_regressor": "age", "dex": "age",
             "age_transformer": "age_edit", "stargan": "edit",
             "caricature": "caricature", "kinship": "kinship"}
# config.task -> config name (the regressor's task key predates the name).
_NAME_OF_TASK = {"age_regression": "age_regressor"}
# Models with an importer for official weights (--weights NAME=FILE).
WEIGHTS = ("swinface", "dex", "age_transformer", "stargan")


def png_data_url(image: np.ndarray, signed: bool = False) -> str:
  """An RGB float image ([0, 1], or [-1, 1] if `signed`) as a PNG data
  URL, ready for an <img src>."""
  x = np.asarray(image, np.float32)
  buf = io.BytesIO()
  Image.fromarray(image_grid.to_uint8((x + 1.0) * 0.5 if signed else x)
                  ).save(buf, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def bucket(n: int, max_batch: int, devices: int) -> int:
  """The padded size of a batch of n: a power of two (at most
  `max_batch`), rounded up to a multiple of `devices`."""
  size = 1
  while size < n:
    size *= 2
  size = min(size, max(max_batch, n))
  return -(-size // devices) * devices


def bucket_sizes(max_batch: int, devices: int) -> list[int]:
  """Every size `bucket` gives for 1..max_batch items."""
  return sorted({bucket(n, max_batch, devices)
                 for n in range(1, max_batch + 1)})


def pad(x: np.ndarray, size: int) -> np.ndarray:
  """x [n, ...] padded to [size, ...] by repeating its last row."""
  if len(x) == size:
    return x
  return np.concatenate([x, np.repeat(x[-1:], size - len(x), 0)])


@dataclasses.dataclass
class Model(abc.ABC):
  """A loaded model: what its endpoint needs to crop faces and run.

  name: the config's name (swinface, age_regressor, ...).
  endpoint: the /v1/<endpoint> it serves.
  source: the workdir or weights file it came from.
  step: the checkpoint step (0 for official weights).
  align, size: how faces are cropped for it (facejax.data.faces.align).
  max_batch: items per call at most (the batcher's limit).
  """
  name: str
  endpoint: str
  source: str
  step: int
  align: str
  size: int
  max_batch: int = 8

  @abc.abstractmethod
  def run(self, items: list) -> list:
    """One batch: a result per item, in order."""

  @abc.abstractmethod
  def example_item(self) -> Any:
    """An item of the right shapes (for `warm_up`)."""

  def info(self) -> dict:
    """What GET /v1/models says of this model."""
    return {"endpoint": f"/v1/{self.endpoint}", "source": self.source,
            "step": self.step, "align": self.align, "image_size": self.size,
            "max_batch": self.max_batch}

  def warm_up(self) -> None:
    """Compiles every padded batch size before the first request."""
    for n in bucket_sizes(self.max_batch, jax.device_count()):
      self.run([self.example_item()] * min(n, self.max_batch))

  def _blank_crop(self) -> np.ndarray:
    return np.full((self.size, self.size, 3), 128, np.uint8)


class _SetupModel(Model):
  """A model restored into a `loop.Setup` (`runs.load`/`runs.restore`)."""

  def __init__(self, name, source, step, setup, state, max_batch):
    config = setup.config
    super().__init__(name, ENDPOINTS[name], source, step,
                     config.data.get("align", self.default_align),
                     int(config.data.image_size), max_batch)
    self.setup, self.state, self.task = setup, state, setup.task

  default_align = "box"

  def _padded(self, x: np.ndarray) -> tuple[np.ndarray, int]:
    n = len(x)
    return pad(x, bucket(n, self.max_batch, jax.device_count())), n


class AgeModel(_SetupModel):
  """/v1/age from an age regressor or DEX run: the age of each crop."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._predict = age_eval.predictor(self.setup, self.state)

  def example_item(self):
    return self._blank_crop()

  def run(self, items):
    x, n = self._padded(np.stack(items))
    return [{"age": round(float(a), 2)} for a in self._predict(x)[:n]]


class DexWeightsModel(Model):
  """/v1/age from official DEX weights (a frozen estimator: the expected
  age over 0..100)."""

  def __init__(self, weights: str, max_batch: int):
    estimator = frozen.load_estimator({"estimator": "dex",
                                       "weights": weights})
    self._predict = frozen.photo_ages(estimator)
    super().__init__("dex", "age", weights, 0, "box",
                     int(estimator.image_size), max_batch)

  def example_item(self):
    return self._blank_crop()

  def run(self, items):
    n = len(items)
    ages = self._predict(pad(np.stack(items), bucket(n, self.max_batch, 1)))
    return [{"age": round(float(a), 2)} for a in ages[:n]]


class AnalyzeModel(_SetupModel):
  """/v1/analyze from SwinFace: age, gender, expression, attributes and
  the recognition embedding of each crop."""
  default_align = "arcface_112"

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._pre = self.task.preprocess(train=False).base
    self.expressions = tuple(self.task.expression_classes())

  def example_item(self):
    return self._blank_crop()

  def info(self):
    return {**super().info(), "expressions": list(self.expressions),
            "attributes": [n for n in swinface_model.BINARY_TASKS
                           if n != "Gender"]}

  def run(self, items):
    x = np.stack([self._pre((0, {"image": c}))["image"] for c in items])
    x, n = self._padded(x)
    out = jax.device_get(self.setup.predict(
        self.state, mesh_lib.shard_images(x, self.setup.mesh)))
    out = {k: np.asarray(v) for k, v in out.items()}
    rows = []
    for i in range(n):
      row = {k: v[i] for k, v in out.items()}
      rows.append({
          **swinface_eval.face_predictions(row, self.expressions,
                                           probabilities=True),
          "embedding": [round(float(v), 6) for v in row["embedding"]]})
    return rows


class AgeEditModel(_SetupModel):
  """/v1/age_edit from the age transformer: items are (crop, age), each
  answered with the face at that age (and the input as the model sees it,
  for age 'input')."""
  default_align = "ffhq"

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._pre = self.task.preprocess(train=False)
    self._edit = self.task.edit_fn(False)

  def model_input(self, crop: np.ndarray) -> np.ndarray:
    """The crop as the generator sees it, in [-1, 1]."""
    return self._pre((0, {"image": crop, "age": np.float32(0)}))["image"]

  def example_item(self):
    return (self._blank_crop(), 40.0)

  def run(self, items):
    x, n = self._padded(np.stack([self.model_input(c) for c, _ in items]))
    t, _ = self._padded(np.asarray([a for _, a in items], np.float32))
    batch = mesh_lib.shard_batch({"image": x, "t": t}, self.setup.mesh)
    out = np.asarray(jax.device_get(
        self._edit(self.state, batch["image"], batch["t"])))
    return [png_data_url(out[i]) for i in range(n)]


class EditModel(_SetupModel):
  """/v1/edit from StarGAN: items are (crop, target name), each answered
  with the face translated to that target of its data set."""

  def __init__(self, *args, dataset: int = 0, **kwargs):
    super().__init__(*args, **kwargs)
    self.dataset = dataset
    self._label = stargan_eval.input_label(self.task.layout, dataset)
    self._pre = stargan_data.AttributeFacePreprocess(self.size)
    names = [c for c, _ in self.task.grid_columns()[1:]]
    rows = self.task.grid_targets(dataset,
                                  np.asarray(self._label, np.float32))
    self.targets = dict(zip(names, np.asarray(rows, np.float32)))
    self._gen = jax.device_get(self.state.gen)

  def model_input(self, crop: np.ndarray) -> np.ndarray:
    return np.asarray(self._pre((0, {
        "image": crop, "label": self._label, "dataset": self.dataset,
        "crop_size": 0}))["image"])

  def example_item(self):
    return (self._blank_crop(), next(iter(self.targets)))

  def info(self):
    return {**super().info(), "targets": list(self.targets)}

  def run(self, items):
    x = np.stack([self.model_input(c) for c, _ in items])
    t = np.stack([self.targets[name] for _, name in items])
    n = len(x)
    size = bucket(n, self.max_batch, 1)
    out = np.asarray(self.task._translate_jit(  # pylint: disable=protected-access
        self._gen, pad(x, size), pad(t, size)))
    return [png_data_url(out[i], signed=True) for i in range(n)]


class CaricatureModel(_SetupModel):
  """/v1/caricature from the photo <-> caricature translator: items are
  (crop, direction, style code), each answered with one translation."""
  default_align = "caricature"

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.size = int(self.setup.config.data.get("align_size", 112))
    self._pre = self.task.face_preprocess(False)
    self._gen = jax.device_get(self.state.gen)
    self._stats = jax.device_get(self.state.gen_stats)
    self.directions = tuple(caricature_task.DIRECTIONS)

  def model_input(self, crop: np.ndarray) -> np.ndarray:
    return np.asarray(self._pre((0, {"identity": np.int32(-1),
                                     "image": crop}))["image"])

  def styles(self, count: int, seed: int) -> np.ndarray:
    """`count` style codes drawn with `seed` (as launch.caricature's)."""
    return self.task.style_codes(count, seed)

  def example_item(self):
    return (self._blank_crop(), "photo2cari", self.styles(1, 0)[0])

  def info(self):
    return {**super().info(), "directions": list(self.directions)}

  def run(self, items):
    fn = self.task._jitted("translate", self.task.translate)  # pylint: disable=protected-access
    results = [None] * len(items)
    for direction in dict.fromkeys(d for _, d, _ in items):
      idx = [i for i, (_, d, _) in enumerate(items) if d == direction]
      x = np.stack([self.model_input(items[i][0]) for i in idx])
      s = np.stack([items[i][2] for i in idx])
      size = bucket(len(idx), self.max_batch, 1)
      out = np.asarray(fn(self._gen, self._stats, pad(x, size), direction,
                          pad(s, size)))
      for k, i in enumerate(idx):
        results[i] = png_data_url(out[k], signed=True)
    return results


class KinshipModel(_SetupModel):
  """/v1/kinship from a kinship run: items are (crop a, crop b), each
  answered with the pair's score (and most likely relation)."""
  default_align = "arcface_112"

  def __init__(self, *args, threshold: tuple[float, str], **kwargs):
    super().__init__(*args, **kwargs)
    self.threshold, self.threshold_source = threshold
    self._score = self.setup.compile(self.task.score_fn)

  def example_item(self):
    return (self._blank_crop(), self._blank_crop())

  def info(self):
    return {**super().info(), "threshold": round(self.threshold, 6),
            "threshold_source": self.threshold_source}

  def run(self, items):
    scored = kinship_eval.score_pairs(
        self.setup, self.state, items, self._score,
        bucket(len(items), self.max_batch, jax.device_count()))
    return [{**r, "score": round(r["score"], 6),
             "threshold": round(self.threshold, 6),
             "kin": bool(r["score"] >= self.threshold)} for r in scored]


_CLASSES: dict[str, Callable[..., Model]] = {
    "swinface": AnalyzeModel, "age_regressor": AgeModel, "dex": AgeModel,
    "age_transformer": AgeEditModel, "stargan": EditModel,
    "caricature": CaricatureModel, "kinship": KinshipModel}


def name_of(config) -> str:
  """The config name of a run's config (its `task`, by file name)."""
  task = config.get("task", "")
  return _NAME_OF_TASK.get(task, task)


def from_setup(name: str, setup, state, source: str = "", step: int = 0,
               max_batch: int = 8, **kwargs) -> Model:
  """A served model around a restored (or freshly built) setup and state.

  kwargs: `threshold=(value, where it came from)` for kinship,
  `dataset=k` for StarGAN.
  """
  if name not in _CLASSES:
    raise ValueError(f"no endpoint serves {name!r} models; served: "
                     f"{', '.join(sorted(_CLASSES))}")
  if name == "kinship" and "threshold" not in kwargs:
    raise ValueError("kinship: give threshold=(value, source)")
  return _CLASSES[name](name, source, step, setup, state, max_batch,
                        **kwargs)


def kinship_threshold(setup, state, workdir: str) -> tuple[float, str]:
  """The decision threshold launch.evaluate stored in the workdir, else
  Youden's J on the run's validation list (its data must be here)."""
  try:
    return kinship_eval.stored_threshold(setup, state, workdir)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"kinship {workdir}: no {kinship_eval.THRESHOLD_FILE} and the "
        f"validation list could not be scored ({e}); run python -m "
        f"launch.evaluate --workdir={workdir} first") from None


def load(spec_name: str, workdir: str = "", weights: str = "",
         max_batch: int = 8) -> Model:
  """A served model from a training workdir or official weights.

  Args:
    spec_name: the config name ('' with a workdir: read from its
      config.json).
    workdir: a training workdir, or
    weights: an official weights file (one of WEIGHTS).
    max_batch: items per batch at most.
  """
  if workdir:
    config = runs.read_config(workdir)
    name = name_of(config)
    if spec_name and spec_name != name:
      raise ValueError(f"--workdir {spec_name}={workdir}: that workdir "
                       f"holds a {name!r} run")
    if name not in _CLASSES:
      raise ValueError(f"--workdir {workdir}: no endpoint serves {name!r} "
                       f"runs (served: {', '.join(sorted(_CLASSES))})")
    which = "latest" if name in ("age_transformer", "stargan",
                                 "caricature") else "best"
    setup, state, step = runs.load(
        config.task, workdir, "", None, which=which,
        frozen_networks=name not in ("age_transformer", "caricature"),
        task_class=tasks.get)
    kwargs = {}
    if name == "kinship":
      kwargs["threshold"] = kinship_threshold(setup, state, workdir)
    return from_setup(name, setup, state, os.path.abspath(workdir), step,
                      max_batch, **kwargs)
  if spec_name not in WEIGHTS:
    raise ValueError(f"--weights {spec_name}=...: official weights are read "
                     f"for {', '.join(WEIGHTS)}; give --workdir for "
                     f"{spec_name!r}")
  if not os.path.isfile(weights):
    raise FileNotFoundError(f"--weights {spec_name}={weights}: no such file")
  if spec_name == "dex":
    return DexWeightsModel(weights, max_batch)
  config = None
  if spec_name == "stargan":
    from facejax.convert import stargan as stargan_convert  # pylint: disable=g-import-not-at-top
    config = stargan_convert.release_config(
        weights, runs.default_config("stargan"))
  setup, state, step = runs.load(
      spec_name, "", weights, config, which="best",
      frozen_networks=spec_name != "age_transformer", task_class=tasks.get)
  return from_setup(spec_name, setup, state, os.path.abspath(weights), step,
                    max_batch)


def load_all(workdirs: list[str], weights: list[str], max_batch: int = 8,
             warm_up: bool = False, report=print) -> dict[str, Model]:
  """endpoint -> Model of launch.serve's flags, one model per endpoint.

  Args:
    workdirs: 'RUN' or 'NAME=RUN' per training workdir.
    weights: 'NAME=FILE' per official weights file.
    max_batch: items per batch at most.
    warm_up: compile every batch size now.
    report: told what is being loaded and compiled.
  """
  specs = [(w.rpartition("=")[0], w.rpartition("=")[2], "")
           for w in workdirs]
  for w in weights:
    name, sep, path = w.partition("=")
    if not sep:
      raise ValueError(f"--weights {w}: give NAME=FILE (NAME one of "
                       f"{', '.join(WEIGHTS)})")
    specs.append((name, "", path))
  served = {}
  for name, workdir, path in specs:
    report(f"loading {workdir or f'{name} weights from {path}'} ...")
    m = load(name, workdir, path, max_batch)
    if m.endpoint in served:
      raise ValueError(f"/v1/{m.endpoint} is served by "
                       f"{served[m.endpoint].name} from "
                       f"{served[m.endpoint].source} already; give one "
                       "model per endpoint")
    served[m.endpoint] = m
    if warm_up:
      report(f"compiling {m.name} for batches of up to {m.max_batch} ...")
      m.warm_up()
  return served
