r"""Trains a model from a config.

  python -m launch.train --config=configs/age_regressor.py \
      --workdir=runs/age_regressor [--config.key=value ...]

Re-running the same command resumes from the newest checkpoint in workdir.
A resumed run with a config that changes shapes or the data order (batch
or image size, model, optimizer, data) is refused, naming the keys, unless
--allow_config_change. Exit status: 0 done, 1 an error, 3 a NaN/Inf loss or
weights (nothing non-finite is saved), 143 preempted by SIGTERM after
saving a checkpoint (requeue and rerun to resume).
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from facejax.checkpoint import WorkdirBusyError
from facejax.checkpoint import WorkdirMismatchError
from facejax import tasks
from facejax.data.sources import DataError
from facejax.train import loop
from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/age_regressor.py[:smoke].",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory "
                               "(checkpoints, metrics, TensorBoard).")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume even if the config changed keys "
    "that alter shapes or the data order.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments: {argv[1:]}")
  common.start_jax()
  try:
    config = _CONFIG.value
    loop.train_and_evaluate(tasks.build(config), config, _WORKDIR.value,
                            allow_config_change=_ALLOW_CHANGE.value)
  except (DataError, WorkdirMismatchError, WorkdirBusyError,
          FileNotFoundError, loop.CheckpointSaveError) as e:
    common.fail(str(e))
  except (KeyError, ValueError) as e:  # bad config values name their key
    common.fail(f"{type(e).__name__}: {e}")
  except loop.NonFiniteLossError as e:
    common.fail(str(e), code=3)
  except loop.Preempted as e:
    common.fail(str(e), code=143)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
