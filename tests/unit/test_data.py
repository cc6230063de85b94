"""Sources, bad input, determinism, resume and padded eval of the pipeline."""

import os
import shutil
import time

import grain
import numpy as np
import pytest

from facejax.data import images, pipeline, sources, transforms

PRE = transforms.Preprocess(image_size=32)


def _write_csv(path, text):
  with open(path, "w") as f:
    f.write(text)
  return str(path)


@pytest.mark.parametrize("text,match", [
    ("file,years\nimages/000000.png,30\n", r"\.csv:1: missing column 'path'"),
    ("path,age\nimages/000000.png,30\nimages/000001.png,thirty\n",
     r"\.csv:3: age 'thirty' is not a number"),
    ("path,age\nimages/000000.png,130\n",
     r"\.csv:2: age 130.0 is outside \[0.0, 100.0\]"),
    ("path,age\nimages/000000.png,-3\n", r"\.csv:2: .*outside"),
    ("path,age\n,30\n", r"\.csv:2: empty 'path'"),
    ("path,age\n", r"\.csv: no rows"),
])
def test_label_file_errors_name_file_and_line(age_data, tmp_path, text,
                                               match):
  csv = _write_csv(tmp_path / "labels.csv", text)
  with pytest.raises(sources.DataError, match=match):
    sources.AgeCsvSource(csv, image_dir=age_data)


def test_missing_label_file():
  with pytest.raises(sources.DataError, match="label file not found"):
    sources.AgeCsvSource("/nonexistent/train.csv")


def _broken_copy(age_data, tmp_path):
  """A copy of the train split with one missing and one corrupt image."""
  root = tmp_path / "broken"
  shutil.copytree(age_data, root)
  src = sources.AgeCsvSource(str(root / "train.csv"))
  os.remove(src.paths[3])
  with open(src.paths[5], "wb") as f:
    f.write(b"\x89PNG truncated nonsense")
  return root, src


def test_missing_and_corrupt_images(age_data, tmp_path):
  root, _ = _broken_copy(age_data, tmp_path)
  src = sources.AgeCsvSource(str(root / "train.csv"))
  assert src.missing == [3]
  # Decoding the corrupt file names the file and the CSV line.
  with pytest.raises(sources.DataError, match=r"train\.csv:7\).*cannot "
                     r"decode image"):
    PRE((0, src[5]))
  bad = sources.find_bad_images(src, range(len(src)))
  assert [i for i, _ in bad] == [3, 5]
  assert "not found" in bad[0][1] and "not a readable image" in bad[1][1]


def test_task_reports_missing_files_or_skips_and_counts(age_data, tmp_path):
  from facejax.tasks import age_regressor
  from helpers import smoke_config
  root, src = _broken_copy(age_data, tmp_path)
  task = age_regressor.Task(smoke_config(str(root)))
  with pytest.raises(sources.DataError, match=r"(?s)1 image file\(s\) not "
                     r"found.*train\.csv:5\)"):
    task.source("train")
  task = age_regressor.Task(smoke_config(
      str(root), **{"data.skip_bad_records": True}))
  kept = task.source("train")
  assert kept.skipped == 2 and len(kept) == len(src) - 2
  ds = pipeline.train_dataset(kept, task.preprocess(True), 16, seed=0)
  for _, batch in zip(range(3), ds):
    assert batch["image"].shape == (16, 32, 32, 3)


def test_label_file_encodings(age_data, tmp_path):
  # Excel's UTF-8 CSV starts with a byte-order mark: read as usual.
  path = tmp_path / "bom.csv"
  path.write_bytes(b"\xef\xbb\xbfpath,age\n" + os.path.join(
      age_data, "images", "000000.png").encode() + b",30\n")
  src = sources.AgeCsvSource(str(path))
  assert len(src) == 1 and src.ages[0] == 30
  # A latin-1 byte: the file, line and byte are named (issue 17).
  path = tmp_path / "latin1.csv"
  path.write_bytes(b"path,age\nimages/000000.png,30\nimages/Jos\xe9.png,40\n")
  with pytest.raises(sources.DataError,
                     match=r"latin1\.csv:3: byte 0xe9 at byte offset 10 of "
                     r"the line is not UTF-8"):
    sources.AgeCsvSource(str(path))
  # A .npy given as the label file.
  path = tmp_path / "ages.npy"
  np.save(path, np.arange(4))
  with pytest.raises(sources.DataError,
                     match=r"ages\.npy: a NumPy \.npy file, not a text"):
    sources.AgeCsvSource(str(path))


def test_celeba_count_line_must_match_its_rows(tmp_path):
  # A list_attr_celeba.txt cut short in a download used to train silently
  # on what was left (issue 17).
  from facejax.data import stargan
  (tmp_path / "img_align_celeba").mkdir()
  rows = ["000001.jpg  1 -1", "000002.jpg -1  1"]
  def source(count_line):
    (tmp_path / "list_attr_celeba.txt").write_text(
        "\n".join([count_line, "Male Young", *rows]) + "\n")
    return stargan.CelebaFormatSource(
        str(tmp_path), "img_align_celeba", "list_attr_celeba.txt",
        ["Male"], "train", 0, None, 0, None, 32, check_files=False)
  assert len(source("2")) == 2
  with pytest.raises(sources.DataError, match=r"list_attr_celeba\.txt:1: "
                     r"the count line says 3 images, the file has 2 rows"):
    source("3")
  with pytest.raises(sources.DataError,
                     match=r"list_attr_celeba\.txt:1: expected the image "
                     r"count"):
    source("Male Young")


def test_swinface_age_range_names_its_own_keys(tmp_path):
  # SwinFace's age CSV: UTKFace goes to 116; the error named data.min_age /
  # data.max_age, keys SwinFace's config does not have (issue 17).
  from facejax.data import swinface
  from PIL import Image
  Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
  path = _write_csv(tmp_path / "train.csv",
                    "path,age,gender\na.png,116,0\na.png,3,1\n")
  src = swinface.age_source(path, 4, "gender", 0, "data.age", 0.0, 120.0)
  assert len(src) == 2
  path = _write_csv(tmp_path / "bad.csv", "path,age,gender\na.png,130,0\n")
  with pytest.raises(sources.DataError, match=r"bad\.csv:2: age 130.0 is "
                     r"outside \[0.0, 120.0\] \(config keys "
                     r"data\.age\.min_age/data\.age\.max_age\)"):
    swinface.age_source(path, 4, "gender", 0, "data.age", 0.0, 120.0)


def test_split_with_no_readable_image_is_named_not_trained(age_data,
                                                          tmp_path):
  # It used to train, then die in eval with "'NoneType' object is not
  # subscriptable" (issue 17).
  from facejax.tasks import age_regressor
  from helpers import smoke_config
  root = tmp_path / "ages"
  shutil.copytree(age_data, root)
  shutil.rmtree(root / "images")
  task = age_regressor.Task(smoke_config(
      str(root), **{"data.skip_bad_records": True}))
  with pytest.raises(sources.DataError, match=r"(?s)valid\.csv: all \d+ "
                     r"records are missing or unreadable.*file not found"):
    task.source("valid")


def test_skip_bad_masks_corrupt_records_inside_pipeline(age_data, tmp_path):
  root, src = _broken_copy(age_data, tmp_path)
  pre = transforms.Preprocess(image_size=32, skip_bad=True)
  assert pre((0, src[5]))["mask"] == 0.0
  sub = sources.SubsetSource(src, [5, 0, 1, 2, 4, 6])  # the first is corrupt
  batch = next(iter(pipeline.eval_batches(sub, pre, 6)))
  np.testing.assert_array_equal(batch["mask"], [0, 1, 1, 1, 1, 1])
  assert batch["age"][0] == 0 and not batch["image"][0].any()


def test_worker_processes_change_nothing(age_data):
  """Same batches (train and padded eval) with 0 and 2 worker processes."""
  src = sources.AgeCsvSource(os.path.join(age_data, "valid.csv"))
  pre = transforms.Preprocess(image_size=16, augment=transforms.Augment(
      rotate_deg=5), seed=0)
  serial = iter(pipeline.train_dataset(src, pre, 8, seed=0, num_workers=0))
  parallel = iter(pipeline.train_dataset(src, pre, 8, seed=0, num_workers=2))
  for _ in range(5):
    a, b = next(serial), next(parallel)
    np.testing.assert_array_equal(a["image"], b["image"])
  state = parallel.get_state()
  expected = next(parallel)
  resumed = iter(pipeline.train_dataset(src, pre, 8, seed=0, num_workers=2))
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["age"], expected["age"])
  eval_pre = transforms.Preprocess(image_size=16)
  ages = [b["age"][b["mask"] > 0] for b in pipeline.eval_batches(
      src, eval_pre, 64, num_workers=2)]
  np.testing.assert_array_equal(np.concatenate(ages), src.ages)


class _CountingBatches:
  """Step -> a small batch; counts the calls (grain threads call it)."""

  def __init__(self):
    self.steps = []

  def __call__(self, step):
    time.sleep(0.002)  # A little work, as decoding a batch is.
    self.steps.append(step)  # list.append is atomic under the GIL
    return {"x": np.full((4,), step, np.float32)}


def test_training_process_loads_only_a_few_batches_ahead():
  """Whole batches are grain's elements: the training process keeps a few
  ready (`pipeline.read_options`), not grain's default of 500 (16 threads),
  which a short run decoded and never used, beside its step."""
  counting = _CountingBatches()
  ds = grain.MapDataset.range(pipeline.ENDLESS).map(counting)
  it = iter(pipeline.prefetch(ds, num_workers=0))
  got = [float(next(it)["x"][0]) for _ in range(3)]
  time.sleep(1.0)  # With grain's defaults: hundreds of calls by now.
  loaded = len(counting.steps)
  print(f"3 batches taken, {loaded} loaded")
  assert got == [0.0, 1.0, 2.0]
  options = pipeline.read_options(0)
  assert loaded <= 3 + options.prefetch_buffer_size + options.num_threads, (
      loaded)


def test_same_seed_same_batches_and_exact_resume(age_data):
  src = sources.AgeCsvSource(os.path.join(age_data, "train.csv"))
  pre = transforms.Preprocess(image_size=32, augment=transforms.Augment(
      flip=True, rotate_deg=5, scale_jitter=0.1, color_jitter=0.1), seed=3)
  a = iter(pipeline.train_dataset(src, pre, 8, seed=1))
  b = iter(pipeline.train_dataset(src, pre, 8, seed=1))
  c = iter(pipeline.train_dataset(src, pre, 8, seed=2))
  first = [next(a) for _ in range(3)]
  for x in first:
    y = next(b)
    np.testing.assert_array_equal(x["image"], y["image"])
  assert not np.array_equal(first[0]["age"], next(c)["age"])
  state = a.get_state()
  expected = [next(a) for _ in range(2)]
  fresh = iter(pipeline.train_dataset(src, pre, 8, seed=1))
  fresh.set_state(state)
  for x in expected:
    y = next(fresh)
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["age"], y["age"])


def test_epochs_visit_every_record_once_in_new_order():
  order = pipeline.GlobalOrder(10, seed=0, global_batch=5)
  e0 = [order(i)[1] for i in range(10)]
  e1 = [order(i)[1] for i in range(10, 20)]
  assert sorted(e0) == sorted(e1) == list(range(10)) and e0 != e1


def test_processes_read_contiguous_blocks_of_the_global_batch():
  one = pipeline.GlobalOrder(100, 0, global_batch=8)
  two = [pipeline.GlobalOrder(100, 0, 8, process_index=p, process_count=2)
         for p in range(2)]
  for step in range(5):
    glob = [one(step * 8 + k)[1] for k in range(8)]
    parts = [two[p](step * 4 + k)[1] for p in range(2) for k in range(4)]
    assert glob == parts


def test_eval_pads_and_counts_every_example_once(age_data):
  src = sources.SubsetSource(
      sources.AgeCsvSource(os.path.join(age_data, "valid.csv")), range(37))
  seen = []
  for batch in pipeline.eval_batches(src, PRE, 16):
    assert batch["image"].shape[0] == 16
    seen.append(batch["age"][batch["mask"] > 0])
  seen = np.concatenate(seen)
  np.testing.assert_array_equal(seen, src.ages)


def test_balance_by_age_caps_and_ranges():
  ages = np.array([20] * 50 + [21] * 3 + [70] * 10 + [5] * 4, np.float32)
  keep = sources.balance_by_age(ages, max_per_age=5, age_range=(20, 69),
                                seed=0)
  kept = ages[keep]
  assert (kept == 20).sum() == 5 and (kept == 21).sum() == 3
  assert not np.isin(kept, [70, 5]).any()
  np.testing.assert_array_equal(
      keep, sources.balance_by_age(ages, 5, (20, 69), seed=0))
  with pytest.raises(sources.DataError, match="data.balance.age_range"):
    sources.balance_by_age(ages, 5, (80, 90), seed=0)


def test_normalisations_round_trip():
  img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  for mode in ("imagenet", "unit", "caffe_bgr"):
    back = transforms.denormalize(transforms.normalize(img, mode), mode)
    np.testing.assert_array_equal(back, img)
  with pytest.raises(ValueError, match="data.normalize"):
    transforms.normalize(img, "zscore")


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "P", "CMYK", "LA",
                                  "RGBA", "L", "1"])
def test_every_image_mode_decodes_to_the_right_grey(tmp_path, mode):
  """A mid-grey image in every PIL mode a face photo may come in decodes
  to mid-grey RGB (a 16-bit PNG used to come out white)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grey8 = np.full((6, 8), 128, np.uint8)
  if mode == "I;16":
    im = Image.fromarray(grey8.astype(np.uint16) * 257)  # 16-bit PNG
    assert im.mode.startswith("I;16")
  elif mode == "I":
    im = Image.fromarray(grey8.astype(np.int32) * 257, "I")
  elif mode == "F":
    im = Image.fromarray(grey8.astype(np.float32) / 255.0, "F")
  elif mode == "1":
    im = Image.fromarray(np.ones((6, 8), bool))
  else:
    im = Image.fromarray(grey8, "L").convert(mode)
  ext = ".tif" if mode in ("F", "I", "CMYK") else ".png"
  path = str(tmp_path / f"face{ext}")
  im.save(path)
  rgb = np.asarray(images.load_image(path))
  assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
  want = 255 if mode == "1" else 128
  np.testing.assert_allclose(rgb, want, atol=1)


def test_exif_orientation_is_applied(tmp_path):
  """A phone photo stored sideways with EXIF Orientation 6 (rotate 90
  degrees clockwise to view) decodes upright: a red top-left corner in the
  stored pixels ends up top-right, and width and height swap."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  stored = np.zeros((40, 60, 3), np.uint8)
  stored[:10, :10] = (255, 0, 0)
  im = Image.fromarray(stored)
  exif = Image.Exif()
  exif[0x0112] = 6  # Orientation: rotate 90 CW.
  path = str(tmp_path / "phone.jpg")
  im.save(path, exif=exif.tobytes(), quality=95)
  rgb = np.asarray(images.load_image(path))
  assert rgb.shape == (60, 40, 3)
  assert rgb[:8, -8:, 0].mean() > 200 and rgb[:8, :8, 0].mean() < 50
