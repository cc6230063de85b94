"""A model's inference function as serialized StableHLO (jax.export).

  inference = export.inference_of(setup, state)
  export.save(inference, "exported/")          # model.stablehlo, weights, spec
  run, spec = export.load("exported/")         # no facejax model code needed
  ages = run(images)                           # any batch size

The function is exported with a symbolic batch size and the weights as its
first argument, so the StableHLO stays small and the weights sit beside it
in `weights.safetensors`. `spec.json` says how to feed it: the face crop
(`align`, `margin`), input size, pixel normalisation, each input's shape
and what each output means.
"""

import dataclasses
import json
import os
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

_MODEL = "model.stablehlo"
_WEIGHTS = "weights.safetensors"
_SPEC = "spec.json"


@dataclasses.dataclass
class Inference:
  """fn(weights, *inputs) and what it needs.

  inputs: (name, shape with "b" for the batch, dtype) per input after the
  weights; outputs: a description of the result.
  """
  fn: Callable[..., Any]
  weights: Any
  inputs: list
  outputs: str
  preprocessing: dict


def inference_of(setup, state) -> Inference:
  """The inference function of a restored run or imported weights."""
  config, task = setup.config, setup.task
  d = config.data
  size = int(d.image_size)
  images = ("images", ["b", size, size, 3], "float32")
  pre = {"image_size": size, "align": d.get("align", "box"), "margin": 0.4,
         "normalize": d.get("normalize", "unit"),
         "crop_fraction": float(d.get("crop_fraction", 1.0))}
  name = config.task
  if name == "age_transformer":
    weights = {"gen": state.gen, "gen_stats": state.gen_stats}

    def fn(w, x, ages):
      return task.edit(types.SimpleNamespace(**w), x, ages)
    return Inference(fn, weights, [images, ("target_ages", ["b"], "float32")],
                     "edited faces [b, S, S, 3], RGB in [0, 1]",
                     dict(pre, normalize="unit"))
  if name == "stargan":
    return Inference(
        task.translate, state.gen,
        [images, ("labels", ["b", task.layout.label_dim], "float32")],
        "translated faces [b, S, S, 3] in [-1, 1]; labels as the config's "
        "data.sets (attribute and class blocks, then the data-set mask)",
        dict(pre, normalize="unit",
             label_names=[f"{b.name}:{n}" for b in task.layout.blocks
                          for n in b.names]))
  if task.implements("predict"):
    weights = {"params": state.params, "batch_stats": state.batch_stats}

    def fn(w, x):
      return task.predict(types.SimpleNamespace(**w), x)
    what = {"swinface": "every head's logits and the L2-normalised "
                        "embedding (a dict)"}.get(name, "ages [b] in years")
    return Inference(fn, weights, [images], what, pre)
  raise ValueError(f"export: the {name!r} task has no inference function "
                   "to export (age_regressor, dex, swinface, "
                   "age_transformer and stargan have)")


def _shapes(inference: Inference, batch) -> list:
  return [jax.ShapeDtypeStruct(tuple(batch if s == "b" else s for s in shape),
                               jnp.dtype(dtype))
          for _, shape, dtype in inference.inputs]


def export(inference: Inference) -> "jax.export.Exported":
  """jax.export of the function: weights fixed in shape, batch symbolic."""
  batch, = jax.export.symbolic_shape("b")
  weights = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                         inference.weights)
  return jax.export.export(jax.jit(inference.fn))(
      weights, *_shapes(inference, batch))


def save(inference: Inference, out_dir: str) -> "jax.export.Exported":
  """Writes model.stablehlo, weights.safetensors and spec.json."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  exported = export(inference)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, _MODEL), "wb") as f:
    f.write(exported.serialize())
  leaves = jax.tree.leaves(jax.device_get(inference.weights))
  safetensors.numpy.save_file(
      {f"{i:05d}": np.ascontiguousarray(np.asarray(a))
       for i, a in enumerate(leaves)},
      os.path.join(out_dir, _WEIGHTS))
  spec = {"inputs": [{"name": n, "shape": s, "dtype": t}
                     for n, s, t in inference.inputs],
          "outputs": inference.outputs,
          "preprocessing": inference.preprocessing,
          "weights": len(leaves), "jax_version": jax.__version__}
  with open(os.path.join(out_dir, _SPEC), "w") as f:
    json.dump(spec, f, indent=1)
  return exported


def load(out_dir: str) -> tuple[Callable[..., Any], dict]:
  """(run(*inputs), spec) from a folder `save` wrote."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  for name in (_MODEL, _WEIGHTS, _SPEC):
    if not os.path.isfile(os.path.join(out_dir, name)):
      raise FileNotFoundError(f"{os.path.join(out_dir, name)}: missing; "
                              "not a folder written by launch.export")
  with open(os.path.join(out_dir, _MODEL), "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with open(os.path.join(out_dir, _SPEC)) as f:
    spec = json.load(f)
  arrays = safetensors.numpy.load_file(os.path.join(out_dir, _WEIGHTS))
  leaves = [arrays[f"{i:05d}"] for i in range(spec["weights"])]
  (args_tree, _) = exported.in_tree.children()
  weights = jax.tree.unflatten(args_tree.children()[0], leaves)

  def run(*inputs):
    return exported.call(weights, *inputs)
  return run, spec
