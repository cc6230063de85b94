"""The age data sets as the age tasks read them (regression, DEX, HRFAE).

`config.data` names an age CSV (`data.format='age_csv'`, the default), a
released data set (`data.format`, see `facejax.data.formats`) or a
prepared TFDS folder (`data.tfds_dir`); these functions turn it into the
train / valid / test sources and the age-balanced training sampler.
"""

import os

from absl import logging
import ml_collections

from facejax.data import sources as sources_lib


def data_root(data: ml_collections.ConfigDict) -> str:
  """The user's data root, or the synthetic set (generated if absent)."""
  if data.root:
    return data.root
  if data.get("format", "age_csv") != "age_csv":
    raise sources_lib.DataError(
        f"config key data.root is empty: data.format={data.format!r} reads "
        "the release folder given there")
  from facejax.data import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.ensure("age_csv", data.synthetic_dir,
                          num=data.synthetic_num, size=data.synthetic_size,
                          seed=data.synthetic_seed)


def source(data: ml_collections.ConfigDict, split: str):
  """Source of a split: 'train' | 'valid' | 'test' (file names config)."""
  if data.get("tfds_dir", ""):
    from facejax.data import tfds_prepared  # pylint: disable=g-import-not-at-top
    return tfds_prepared.load(data.tfds_dir, split)
  if data.get("format", "age_csv") != "age_csv":
    from facejax.data import formats  # pylint: disable=g-import-not-at-top
    return drop_bad(formats.open_age_split(data, split),
                    data.skip_bad_records)
  name = {"train": data.train_file, "valid": data.eval_file,
          "test": data.test_file}.get(split, split)
  if os.path.isabs(name) or os.path.exists(name):
    path = name  # a CSV given directly (absolute, or relative to the cwd)
  else:
    path = os.path.join(data_root(data), name)
  src = sources_lib.AgeCsvSource(
      path, image_dir=data.image_dir or None, path_column=data.path_column,
      age_column=data.age_column, min_age=data.min_age, max_age=data.max_age)
  return drop_bad(src, data.skip_bad_records)


def drop_bad(src, skip_bad_records: bool):
  """Missing/corrupt files: error (default) or skip and count."""
  if skip_bad_records:
    bad = sources_lib.find_bad_images(src, range(len(src)))
    if bad:
      for i, reason in bad[:10]:
        logging.warning("skipping %s: %s", src.describe(i), reason)
      logging.warning("%s: skipped %d of %d records (bad image files)",
                      src.csv_path, len(bad), len(src))
    if bad:
      keep = sorted(set(range(len(src))) - {i for i, _ in bad})
      if not keep:
        raise sources_lib.DataError(
            f"{src.csv_path}: all {len(src)} records are missing or "
            f"unreadable images, e.g. {src.describe(bad[0][0])}: "
            f"{bad[0][1]} (data.skip_bad_records=True leaves nothing "
            "to read)")
      return sources_lib.SubsetSource(src, keep, skipped=len(bad))
    return src
  if src.missing:
    shown = "\n  ".join(src.describe(i) for i in src.missing[:5])
    raise sources_lib.DataError(
        f"{src.csv_path}: {len(src.missing)} image file(s) not found, "
        f"e.g.\n  {shown}\n(set data.skip_bad_records=True to skip them)")
  return src


def balance(src, bal: ml_collections.ConfigDict, seed: int,
            log: bool = True):
  """The age-balanced sampler (config data.balance); with `log`, the age
  histograms before and after are logged."""
  if not bal.enabled:
    return src
  if not hasattr(src, "ages"):
    raise ValueError("data.balance needs a source with known ages")
  if log:
    sources_lib.log_histogram("age histogram before balancing", src.ages)
  keep = sources_lib.balance_by_age(src.ages, bal.max_per_age,
                                    tuple(bal.age_range), seed)
  out = sources_lib.SubsetSource(src, keep)
  if log:
    sources_lib.log_histogram("age histogram after balancing", out.ages)
  return out
