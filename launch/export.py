r"""Exports a model's inference function as StableHLO (jax.export).

  python -m launch.export --workdir=runs/age_regressor --out=exported/
  python -m launch.export --weights=checkpoint_step_79999_gpu_0.pt \
      --model=swinface --out=exported/

Writes `model.stablehlo` (serialized, any batch size), `weights.safetensors`
and `spec.json` (inputs, outputs, and the face crop and normalisation the
model expects). Reload anywhere JAX runs, without facejax's model code:

  from facejax import export
  run, spec = export.load("exported/")
  outputs = run(images)          # images as spec["preprocessing"] says
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from facejax import export
from launch import common
from facejax import runs
from facejax import tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Official weights, instead "
                               "of --workdir (with --model).")
_MODEL = flags.DEFINE_enum(
    "model", None, ["age_regressor", "dex", "swinface", "age_transformer",
                    "stargan"],
    "Which model --weights holds (its configs/<model>.py geometry).")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The model geometry for --weights.", lock_config=False)
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                           "Which checkpoint to use.")
flags.mark_flags_as_mutual_exclusive(["workdir", "weights"], required=True)
flags.mark_flag_as_required("out")


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments: {argv[1:]}")
  common.start_jax()
  try:
    if _WEIGHTS.value:
      if not (_MODEL.value or _CONFIG.value):
        raise ValueError("--weights needs --model (or --config)")
      config = _CONFIG.value or runs.default_config(_MODEL.value)
      task = config.task
    else:
      config, task = None, runs.read_config(_WORKDIR.value).task
    setup, state, step = runs.load(task, _WORKDIR.value or "",
                                      _WEIGHTS.value or "", config,
                                      which=_WHICH.value,
                                      frozen_networks=False,
                                      task_class=tasks.get)
    inference = export.inference_of(setup, state)
    print("exporting (tracing and lowering the inference function)...",
          flush=True)
    exported = export.save(inference, _OUT.value)
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  inputs = ", ".join(f"{n} {s}" for n, s, _ in inference.inputs)
  print(f"wrote {_OUT.value}: {task} (checkpoint step {step}), inputs "
        f"{inputs}, platforms {', '.join(exported.platforms)}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
