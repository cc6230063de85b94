"""Config sections shared by every model: mesh, sharding, checkpoints, logs."""

from typing import Any

import ml_collections

from facejax import config_lib


def parse_arg(arg: str | None, **extra: Any
              ) -> tuple[ml_collections.ConfigDict, bool]:
  """Every config's prologue: `:smoke`, `:variant=base|smoke`, `:smoke=True`.

  Args:
    arg: the text after ':' in `--config=configs/x.py:arg`, or None.
    **extra: further keys a model accepts, with their defaults.

  Returns:
    (the parsed argument, whether this is the smoke variant).
  """
  arg = config_lib.parse_arg(arg, variant="base", smoke=False, **extra)
  smoke = arg.smoke or arg.variant == "smoke"
  if arg.variant not in ("base", "smoke"):
    raise ValueError(f"unknown variant {arg.variant!r} (base | smoke)")
  return arg, smoke


def base_config() -> ml_collections.ConfigDict:
  """The sections every model shares: seed, steps, mesh, checkpoints, logs."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.log_every_steps = 20
  c.eval_every_steps = 500
  # (axis, size); -1 takes the remaining devices. Batch is split over
  # data x fsdp; parameters >= fsdp_min_size_mb are sharded over fsdp.
  c.mesh = (("data", -1), ("fsdp", 1), ("model", 1))
  c.sharding = ml_collections.ConfigDict()
  c.sharding.fsdp_min_size_mb = 4.0
  c.sharding.rules = ()  # ((regex, (axis | None, ...)), ...), first match
  c.ckpt = ml_collections.ConfigDict()
  c.ckpt.every_steps = 200
  c.ckpt.keep = 3
  c.ckpt.async_save = True
  c.runtime = ml_collections.ConfigDict()
  # CPU: time each convolution shape's forms on this machine the first
  # time a step compiles, and cache the fastest (facejax/autotune.py);
  # False: the fixed rules. FACEJAX_AUTOTUNE=0 turns it off everywhere.
  c.runtime.autotune = True
  # ... and where the CPU has bf16 dot instructions (AVX512_BF16, AMX), also
  # a convolution form with bf16 operands and f32 sums, used only where it
  # is 20 % and 0.5 ms faster than the best f32 form; False: f32 only.
  c.runtime.cpu_bf16 = True
  c.wandb = ml_collections.ConfigDict()
  c.wandb.enabled = True   # used only if the wandb package is installed
  c.wandb.project = "facejax"
  c.wandb.mode = "offline"
  return c


def age_csv_data(smoke: bool, synthetic_size: int) -> ml_collections.ConfigDict:
  """The `data` keys of an age-CSV data set (the bundled synthetic one by
  default); models add image size, normalisation and batching."""
  d = ml_collections.ConfigDict()
  d.root = ""           # empty: the bundled synthetic data set
  d.synthetic_dir = "data/synthetic/age_csv"
  d.synthetic_num = 1500 if smoke else 4000
  d.synthetic_size = synthetic_size
  d.synthetic_seed = 0
  d.train_file = "train.csv"
  d.eval_file = "valid.csv"
  d.test_file = "test.csv"
  d.image_dir = ""      # default: the CSV's folder
  d.path_column = "path"
  d.age_column = "age"
  d.min_age = 0.0
  d.max_age = 100.0
  d.tfds_dir = ""       # a data set written by launch.prepare_data
  age_format_keys(d)
  return d


def age_format_keys(d: ml_collections.ConfigDict) -> None:
  """The keys of a released age data set read in place (data.format).

  'age_csv' reads facejax's path,age CSVs above; any other name reads the
  release folder data.root as unpacked (facejax/data/formats/, README's
  data-set table).
  """
  d.format = "age_csv"  # age_csv | appa_real | afad | cacd2000 | utkface |
  #                       imdb_wiki | morph2 | ffhq_aging | hrfae_ffhq
  # Published split csvs (e.g. the CORAL repository's afad_train.csv ...);
  # empty: the release's official split, else a seeded one by person.
  d.split_files = ml_collections.ConfigDict(
      {"train": "", "valid": "", "test": ""})
  d.split_fractions = (0.8, 0.1, 0.1)  # seeded splits: train, valid, test
  d.split_seed = 0      # not the training seed: the test set stays put
  d.age_label = "real"  # appa_real: real | apparent
  d.face_crop = True    # appa_real: the release's _face.jpg crops
  d.min_face_score = 1.0    # imdb_wiki: face detector score to keep a row
  d.single_face = True      # imdb_wiki: drop photos with a second face
  d.min_age_confidence = 0.6  # ffhq_aging: age-group confidence to keep


def swin_config(smoke: bool) -> ml_collections.ConfigDict:
  """`model.swin`: the Swin backbone's geometry (SwinFace and kinship).

  `variant` names a preset (facejax/models/swin.py); the other keys
  override it where set (0 / () keep the preset's value).
  """
  c = ml_collections.ConfigDict()
  c.variant = "tiny" if smoke else "swin_t"  # swin_t | tiny
  c.img_size = 0       # must equal data.image_size where set
  c.patch_size = 0
  c.embed_dim = 0
  c.window = 0
  c.depths = ()
  c.num_heads = ()
  c.drop_path_rate = 0.0 if smoke else 0.1
  c.remat = False      # jax.checkpoint per block (big inputs)
  return c
