"""Released age data sets read as unpacked (facejax/data/formats/).

Each fixture is written in the release's own layout by release_fixtures.py
from the data set's documentation, quirks included; the labels read must
equal the fixture's truth exactly, the split must be the release's own (or
identity-disjoint), a broken layout must give one error naming the file
and the format, and the models that use a format must take steps on it.
"""

import os
import numpy as np
import pytest
from facejax.data import formats
from facejax.data import sources
from facejax.data.formats import base
from facejax.data.formats import imdb_wiki
import release_fixtures as rf
from formats_helpers import FORMATS


def _by_rel(listing):
  return {os.path.relpath(p, listing.root).replace(os.sep, "/"): i
          for i, p in enumerate(listing.paths)}


def _cfg(**kw):
  from configs import common  # pylint: disable=g-import-not-at-top
  d = common.age_csv_data(True, 32)
  d.update(kw)
  return d


@pytest.mark.parametrize("name", FORMATS)
def test_labels_match_the_release_exactly(releases, name):
  root, truth = releases[name]
  listing = formats.read_age(name, root)
  rows = _by_rel(listing)
  assert set(rows) == set(truth), (set(rows) ^ set(truth))
  for rel, want in truth.items():
    i = rows[rel]
    age = want.get("age", want.get("real"))
    assert listing.ages[i] == pytest.approx(age, abs=1e-6), rel
    if "gender" in want:
      assert listing.genders[i] == want["gender"], rel
    if "identity" in want:
      assert listing.identities[i] == want["identity"], rel
    if "person" in want and name == "imdb_wiki":
      assert listing.identities[i] == want["person"], rel
    if "split" in want:
      assert listing.split[i] == want["split"], rel


def test_appa_real_apparent_age_and_full_images(releases):
  root, truth = releases["appa_real"]
  listing = formats.read_age("appa_real", root,
                             {"age_label": "apparent", "face_crop": False})
  rows = _by_rel(listing)
  for rel, want in truth.items():
    full = rel[:-len("_face.jpg")]
    assert listing.ages[rows[full]] == pytest.approx(want["apparent"],
                                                     abs=1e-5)


def test_utkface_reports_malformed_names_and_duplicates(releases, tmp_path):
  root, truth = releases["utkface"]
  listing = formats.read_age("utkface", root)
  assert listing.skipped["malformed names"] == len(rf.UTK_MALFORMED)
  # The in-the-wild copy of a photo under the same root is read once.
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(root, tmp_path / "all")
  wild = tmp_path / "all" / "part1"
  wild.mkdir()
  first = sorted(truth)[0].split("/")[1]
  shutil.copy(os.path.join(root, "UTKFace", first),
              wild / first.replace(".chip.jpg", ""))
  again = formats.read_age("utkface", str(tmp_path / "all"))
  assert len(again) == len(listing)
  assert again.skipped["duplicate photos"] == 1
  # Ages above data.max_age (100 by default) are counted, not trained on.
  src = formats.open_age_split(_cfg(format="utkface", root=root), "train")
  assert src.ages.max() <= 100


def test_imdb_wiki_age_is_the_age_on_1_july():
  for dob, taken, age in rf.IMDB_AGES:
    assert imdb_wiki.age_at_photo(rf._datenum(dob), taken) == age


def test_cacd2000_from_names_alone(tmp_path):
  truth = rf.cacd2000(str(tmp_path), meta=False)
  listing = formats.read_age("cacd2000", str(tmp_path))
  rows = _by_rel(listing)
  for rel, want in truth.items():
    assert listing.ages[rows[rel]] == want["age"]
    assert listing.identities[rows[rel]] == want["person"]
  assert listing.split is None  # no ranks without the .mat: seeded


@pytest.mark.parametrize("name", FORMATS)
def test_splits_are_official_or_identity_disjoint(releases, name):
  root, _ = releases[name]
  cfg = _cfg(format=name, root=root, max_age=120.0)
  listing = formats.read_age(name, root, cfg)
  parts = {s: set(formats.split_rows(listing, s, cfg)[0])
           for s in base.SPLITS}
  assert not parts["train"] & parts["valid"]
  assert not parts["train"] & parts["test"]
  assert not parts["valid"] & parts["test"]
  assert set().union(*parts.values()) == set(range(len(listing)))
  if listing.identities is not None:
    people = {s: {listing.identities[i] for i in rows}
              for s, rows in parts.items()}
    assert not people["train"] & people["test"]
    assert not people["train"] & people["valid"]
  if listing.split is not None:
    # The release's test rows are the test split, untouched.
    official = {i for i, s in enumerate(listing.split) if s == "test"}
    assert parts["test"] == official


def test_seeded_split_does_not_move_when_rows_are_added():
  keys = [f"person{i}" for i in range(200)]
  a = base.seeded_split(keys, (0.8, 0.1, 0.1), seed=0)
  b = base.seeded_split(keys + [f"new{i}" for i in range(50)],
                        (0.8, 0.1, 0.1), seed=0)
  assert a == b[:200]
  counts = {s: a.count(s) for s in base.SPLITS}
  assert 140 <= counts["train"] <= 180, counts
  assert base.seeded_split(keys, (0.8, 0.1, 0.1), seed=1) != a


def test_published_split_files(releases, tmp_path):
  """The CORAL repository's csvs select images; ages come from the
  release (CORAL's `age` column is age - min_age)."""
  root, truth = releases["afad"]
  rels = sorted(truth)
  # CORAL's paths are relative to AFAD-Full/: 39/112/406208-0.jpg.
  coral = tmp_path / "afad_test.csv"
  coral.write_text("file,path,age,gender\n" + "".join(
      f"{r.split('/')[-1]},{r[len('AFAD-Full/'):]},{truth[r]['age'] - 15},"
      f"{'male' if truth[r]['gender'] == 0 else 'female'}\n"
      for r in rels[:5]))
  cfg = _cfg(format="afad", root=root)
  cfg.split_files.test = str(coral)
  src = formats.open_age_split(cfg, "test")
  assert sorted(os.path.relpath(p, root) for p in src.paths) == rels[:5]
  assert list(src.ages) == [truth[r]["age"] for r in rels[:5]]
  # Only train and test files (UTKFace's published splits): valid is the
  # rows they leave out, never rows of theirs.
  train_csv = tmp_path / "afad_train.csv"
  train_csv.write_text("file,path,age,gender\n" + "".join(
      f"x,{r[len('AFAD-Full/'):]},0,male\n" for r in rels[5:15]))
  cfg.split_files.train = str(train_csv)
  parts = {s: set(formats.open_age_split(cfg, s).paths)
           for s in ("train", "valid", "test")}
  assert len(parts["train"]) == 10 and len(parts["test"]) == 5
  assert parts["valid"] == {os.path.join(root, r) for r in rels[15:]}
  # MORPH: pandas' unnamed index column, converted .jpg names.
  root, truth = releases["morph2"]
  photo = sorted(truth)[0]
  stem = os.path.splitext(os.path.basename(photo))[0]
  morph = tmp_path / "morph2_test.csv"
  morph.write_text(",id_num,picture_num,race,Male,facial_hair,age,glasses,"
                   f"quality\n{stem}.jpg,1,0,B,1,,3,,GOOD\n")
  cfg = _cfg(format="morph2", root=root)
  cfg.split_files.test = str(morph)
  src = formats.open_age_split(cfg, "test")
  assert src.paths == [os.path.join(root, photo)]
  # A name the release does not have: the file and line are named.
  morph.write_text(",file,age\n0,99_Nobody_0001.jpg,3\n")
  with pytest.raises(sources.DataError, match=r"morph2_test\.csv:2: "
                     r"'99_Nobody_0001\.jpg' is not an image of the morph2"):
    formats.open_age_split(cfg, "test")


@pytest.mark.parametrize("name,damage,match", [
    ("appa_real", "drop_column", r"gt_avg_train\.csv:1: no column "
     r"'real_age' \(data\.format='appa_real'"),
    ("appa_real", "empty", r"no gt_avg_train\.csv.*data\.format='appa_real'"),
    ("afad", "empty", r"no images found for data\.format='afad'.*Expected "
     r"AFAD-Full/<age>/<111\|112>"),
    ("utkface", "empty", r"no images found for data\.format='utkface'"),
    ("imdb_wiki", "empty", r"no imdb\.mat or wiki\.mat"),
    ("imdb_wiki", "not_mat", r"wiki\.mat: not a readable MATLAB file"),
    ("morph2", "drop_column", r"morph_2008_nonCommercial\.csv:1: missing "
     r"columns \['photo'\]"),
    ("ffhq_aging", "bad_row", r"ffhq_aging_labels\.csv:3: expected an "
     r"integer image_number"),
    ("hrfae_ffhq", "not_mat", r"ffhq\.npy: shape \(3,\), expected \(N, 2\)"),
    ("cacd2000", "not_mat", r"celebrity2000_meta\.mat: not a readable "
     r"MATLAB file"),
])
def test_broken_layouts_name_the_file_and_format(tmp_path, name, damage,
                                                 match):
  root = str(tmp_path)
  if damage != "empty":
    getattr(rf, name)(root)
  if damage == "drop_column":
    label = {"appa_real": "appa-real-release/gt_avg_train.csv",
             "morph2": "morph_2008_nonCommercial.csv"}[name]
    path = os.path.join(root, label)
    lines = open(path).read().splitlines()
    lines[0] = lines[0].rsplit(",", 1)[0] + ",other"
    open(path, "w").write("\n".join(lines) + "\n")
  elif damage == "bad_row":
    path = os.path.join(root, "ffhq_aging_labels.csv")
    lines = open(path).read().splitlines()
    lines[2] = "seven" + lines[2][lines[2].index(","):]
    open(path, "w").write("\n".join(lines) + "\n")
  elif damage == "not_mat":
    label = {"imdb_wiki": "wiki_crop/wiki.mat", "hrfae_ffhq": "ffhq.npy",
             "cacd2000": "celebrity2000_meta.mat"}[name]
    if name == "hrfae_ffhq":
      np.save(os.path.join(root, label), np.array(["a", "b", "c"]))
    else:
      open(os.path.join(root, label), "wb").write(b"not a MATLAB file" * 9)
  formats._read_cached.cache_clear()
  with pytest.raises(sources.DataError, match=match):
    formats.read_age(name, root)


def test_unknown_format_names_the_choices():
  with pytest.raises(ValueError, match=r"data\.format: unknown age data "
                     r"set 'utk'.*'utkface'"):
    formats.read_age("utk", "/tmp")


def test_rafd_release_names_parsed_and_split_by_person(tmp_path, capsys):
  from facejax.data import stargan as stargan_data  # pylint: disable=g-import-not-at-top
  from facejax.data.formats import rafd  # pylint: disable=g-import-not-at-top
  truth = rf.rafd(str(tmp_path))
  for name, want in truth.items():
    got = rafd.parse_name(name)
    assert (got.camera, got.subject, got.expression, got.gender,
            got.ethnicity, got.gaze) == (
                want["camera"], want["subject"], want["expression"],
                want["gender"], want["ethnicity"], want["gaze"])
  classes = stargan_data.rafd_classes(str(tmp_path), "train", "k")
  assert classes == rf.RAFD_EXPRESSIONS  # 'contemptuous' included
  parts = {s: stargan_data.RafdFormatSource(str(tmp_path), s, classes, 0,
                                              None, 0, "k", {"test_fraction":
                                                             0.25})
           for s in ("train", "test")}
  people = {s: {rafd.parse_name(p).subject for p in src.paths}
            for s, src in parts.items()}
  assert people["train"] and people["test"]
  assert not people["train"] & people["test"]
  for src in parts.values():
    for p, label in zip(src.paths, src.labels):
      want = truth[os.path.basename(p)]
      assert classes[label] == want["expression"]
      assert want["camera"] in (45, 90, 135)  # StarGAN's three cameras
  n_kept = sum(t["camera"] in (45, 90, 135) for t in truth.values())
  assert len(parts["train"]) + len(parts["test"]) == n_kept
  out = capsys.readouterr().out  # one start-up line per split
  assert f"rafd release at {tmp_path}: test {len(parts['test'])} images" in out


def test_rafd_class_in_data_but_not_in_config_is_an_error(tmp_path):
  """StarGAN's train/<class>/ layout with RaFD's 8th expression."""
  from facejax.data import stargan as stargan_data  # pylint: disable=g-import-not-at-top
  for c in rf.RAFD_EXPRESSIONS:
    folder = tmp_path / "train" / c
    folder.mkdir(parents=True)
    rf._image(str(folder / "a.jpg"), np.random.default_rng(0), 16)
  seven = tuple(c for c in rf.RAFD_EXPRESSIONS if c != "contemptuous")
  with pytest.raises(sources.DataError, match=r"class folder\(s\) "
                     r"\['contemptuous'\] are not in the classes.*"
                     r"data\.sets\[1\]\.classes"):
    stargan_data.RafdFormatSource(str(tmp_path), "train", seven, 1, None,
                                    0, "data.sets[1]")
  src = stargan_data.RafdFormatSource(
      str(tmp_path), "train",
      stargan_data.rafd_classes(str(tmp_path), "train", "k"), 1, None, 0)
  assert len(src) == 8


def test_fiw_unrelated_and_nonfaces_are_not_identities(tmp_path):
  from facejax.data import swinface as swinface_data  # pylint: disable=g-import-not-at-top
  members = rf.fiw(str(tmp_path))
  folders = swinface_data.identity_folders(str(tmp_path / "FIDs"), "k")
  got = {name.replace(os.sep, "/"): len(paths) for name, paths in folders}
  assert got == {m[len("FIDs/"):] if m.startswith("FIDs/") else m: len(v)
                 for m, v in members.items()}


def test_webcaricature_view_files_keep_names_with_spaces(tmp_path):
  from facejax.data import caricature  # pylint: disable=g-import-not-at-top
  restricted = tmp_path / "RestrictedView1_DevTrain.txt"
  restricted.write_text(
      "2\n"
      "Adele Laurie Blue Adkins\tC00001\tP00001\n"
      "Jeff Bridges\tC00004\tP00002\n"
      "Elizabeth Taylor\tC00039\tJennifer Aniston\tP00006\n"
      "Jeff Bridges\tC00007\tAdele Laurie Blue Adkins\tP00003\n")
  assert caricature.read_subject_list(str(restricted)) == [
      "Adele Laurie Blue Adkins", "Jeff Bridges", "Elizabeth Taylor",
      "Jennifer Aniston"]
  unrestricted = tmp_path / "UnRestrictedView1_DevTest.txt"
  unrestricted.write_text("2\nJeff Bridges\t35\t25\nMeg Ryan\t20\t14\n")
  assert caricature.read_subject_list(str(unrestricted)) == [
      "Jeff Bridges", "Meg Ryan"]
  # The same list re-saved with spaces instead of tabs.
  spaced = tmp_path / "FR_Train_dev.txt"
  spaced.write_text("Adele Laurie Blue Adkins 12 9\nMeg Ryan 20 14\n")
  assert caricature.read_subject_list(str(spaced)) == [
      "Adele Laurie Blue Adkins", "Meg Ryan"]


def test_celeba_drive_layout_with_the_official_partition(tmp_path):
  from facejax.data import stargan as stargan_data  # pylint: disable=g-import-not-at-top
  truth = rf.celeba_drive(str(tmp_path))
  attrs = ("Black_Hair", "Eyeglasses", "Male", "Young")
  got = {}
  for split in ("train", "test"):
    src = stargan_data.CelebaFormatSource(
        str(tmp_path), "img_align_celeba", "list_attr_celeba.txt", attrs,
        split, 5, 1234, 0, None, 0, partition="official")
    for path, values in zip(src.paths, src.values):
      name = os.path.basename(path)
      got[name] = split
      want = truth[name]["values"]
      assert list(values) == [float(want[a] == 1) for a in attrs], name
  assert got == {n: "test" if t["partition"] == 2 else "train"
                 for n, t in truth.items()}
  # The reference protocol: a seeded `test_count` share.
  ref = stargan_data.CelebaFormatSource(
      str(tmp_path), "img_align_celeba", "list_attr_celeba.txt", attrs,
      "test", 5, 1234, 0, None, 0)
  assert len(ref) == 5


def write_verification_bin(path, images, issame):
  """A .bin as insightface writes it: pickle((JPEG bytes, issame list))."""
  import io  # pylint: disable=g-import-not-at-top
  import pickle  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  bins = []
  for im in images:
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, format="JPEG", quality=95)
    bins.append(buf.getvalue())
  with open(path, "wb") as f:
    pickle.dump((bins, list(map(bool, issame))), f, protocol=2)


def test_verification_bin_round_trip_and_refuses_code(tmp_path):
  import io  # pylint: disable=g-import-not-at-top
  import pickle  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from facejax.data.formats import verification_bin  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (8, 112, 112, 3), dtype=np.uint8)
  issame = [True, False, True, False]
  path = tmp_path / "lfw.bin"
  write_verification_bin(path, images, issame)
  got, same = verification_bin.read_bin(str(path))
  assert got.shape == (8, 112, 112, 3) and list(same) == issame
  bins, _ = pickle.load(open(path, "rb"), encoding="bytes")
  np.testing.assert_array_equal(
      got[3], np.asarray(Image.open(io.BytesIO(bins[3])).convert("RGB")))

  class Evil:
    def __reduce__(self):
      return (os.system, ("echo pwned",))
  bad = tmp_path / "evil.bin"
  bad.write_bytes(pickle.dumps(([Evil(), b""], [True])))
  with pytest.raises(sources.DataError, match=r"evil\.bin: not an "
                     r"insightface verification \.bin.*posix\.system|"
                     r"evil\.bin: not an insightface.*os\.system"):
    verification_bin.read_bin(str(bad))
  bad.write_bytes(pickle.dumps((bins[:3], [True, False])))
  with pytest.raises(sources.DataError, match=r"3 images for 2 pairs"):
    verification_bin.read_bin(str(bad))


def test_ten_fold_accuracy_matches_a_brute_force_count():
  from facejax.evaluators import verification  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  n = 203  # not a multiple of 10: the first 3 folds hold 21 pairs
  issame = rng.random(n) < 0.5
  dist = np.where(issame, rng.normal(1.0, 0.4, n), rng.normal(1.8, 0.4, n))
  dist = np.clip(dist, 0, 3.99)
  got = verification.kfold_accuracy(dist, issame)
  # Brute force: every candidate threshold, every fold, by counting.
  starts, accs = [0], []
  for k in range(10):
    starts.append(starts[-1] + 20 + (k < 3))
  cands = [i / 100 for i in range(400)]
  for k in range(10):
    lo, hi = starts[k], starts[k + 1]
    train = [i for i in range(n) if not lo <= i < hi]
    best, best_acc = None, -1.0
    for t in cands:
      acc = sum((dist[i] < t) == issame[i] for i in train) / len(train)
      if acc > best_acc + 1e-12:
        best, best_acc = t, acc
    accs.append(sum((dist[i] < best) == issame[i]
                    for i in range(lo, hi)) / (hi - lo))
  assert got["accuracy"] == pytest.approx(np.mean(accs), abs=1e-12)
  assert got["pairs"] == n
  assert 0.75 < got["accuracy"] < 0.95  # the two normals overlap
  perfect = verification.kfold_accuracy(np.where(issame, 0.5, 2.5), issame)
  assert perfect["accuracy"] == 1.0


def test_raf_db_basic_feeds_swinface_expressions(tmp_path):
  from facejax.data import swinface as swinface_data  # pylint: disable=g-import-not-at-top
  from facejax.data.formats import raf_db  # pylint: disable=g-import-not-at-top
  truth = rf.raf_db(str(tmp_path))
  for split in ("train", "test"):
    src = swinface_data.expression_source(str(tmp_path), split, 40, {}, 7,
                                      "data.expression")
    names = [os.path.basename(p).replace("_aligned", "") for p in src.paths]
    assert sorted(names) == sorted(n for n, t in truth.items()
                                   if t["split"] == split)
    labels = [int(src[i]["expression"]) for i in range(len(src))]
    assert labels == [truth[n]["label"] - 1 for n in names]
    assert all("/Image/aligned/" in p for p in src.paths)
  assert raf_db.CLASSES[3] == "happiness"  # label 4
  with pytest.raises(sources.DataError, match=r"RAF-DB has 7 classes; the "
                     r"Expression head has 8"):
    swinface_data.expression_source(str(tmp_path), "train", 40, {}, 8, "k")
  os.remove(tmp_path / "basic" / "Image" / "aligned" /
            "train_00004_aligned.jpg")
  with pytest.raises(sources.DataError, match=r"list_patition_label\.txt:4: "
                     r"1 image\(s\) not found"):
    swinface_data.expression_source(str(tmp_path), "train", 40, {}, 7, "k")


def test_errors_name_the_keys_where_the_release_is_configured(releases,
                                                                tmp_path):
  """SwinFace's age set lives under data.age: errors name data.age.* keys
  (they used to say data.split_files, data.age_label, ...)."""
  from facejax.data.sources import DataError  # pylint: disable=g-import-not-at-top
  root, _ = releases["appa_real"]
  cfg = _cfg(format="appa_real", root=root,
             split_files={"train": str(tmp_path / "missing.csv")})
  with pytest.raises(DataError, match=r"config key data\.age\.split_files"):
    formats.open_age_split(cfg, "train", config_prefix="data.age")
  cfg = _cfg(format="appa_real", root=root, age_label="median")
  with pytest.raises(ValueError, match=r"config key data\.age\.age_label"):
    formats.open_age_split(cfg, "train", config_prefix="data.age")
  with pytest.raises(ValueError, match=r"config key data\.age_label"):
    formats.open_age_split(cfg, "train")


def test_celeba_identities_feed_swinface_recognition(tmp_path):
  """data.identity.root at CelebA (Drive layout): identity_CelebA.txt gives
  the people; a malformed line names file and line."""
  from facejax.data import swinface as swinface_data  # pylint: disable=g-import-not-at-top
  from facejax.data.sources import DataError  # pylint: disable=g-import-not-at-top
  rf.celeba_drive(str(tmp_path), n=30)
  ids = swinface_data.identity_folders(str(tmp_path), "data.identity")
  # The fixture's identity of image i is 1 + i // 3.
  assert len(ids) == len({1 + i // 3 for i in range(1, 31)})
  name, paths = ids[0]
  assert name == "celeba1" and [os.path.basename(p) for p in paths] == [
      "000001.jpg", "000002.jpg"]
  assert all(os.path.isfile(p) for _, ps in ids for p in ps)
  with open(tmp_path / "Anno" / "identity_CelebA.txt", "a") as f:
    f.write("000031.jpg x\n")
  with pytest.raises(DataError, match=r"identity_CelebA\.txt:31: expected"):
    swinface_data.identity_folders(str(tmp_path), "data.identity")


def test_rfiw_pair_lists_member_and_face_level(tmp_path):
  from facejax.data import kinship as kin_data  # pylint: disable=g-import-not-at-top
  members = rf.fiw(str(tmp_path), families=5)
  rf.rfiw_lists(str(tmp_path), members)
  train = kin_data.load_split(str(tmp_path), "train-pairs.csv")
  # 3 families x 2 member pairs x 2 faces each (face k with face k).
  assert len(train) == 12 and set(train.labels) == {1}
  assert {kin_data.RELATIONS[r - 1] for r in train.relations} == {"fs", "ms"}
  first = train[0]
  assert first["image_a_path"].endswith("F0001/MID1/P00100_face1.jpg")
  assert first["image_b_path"].endswith("F0001/MID3/P00100_face3.jpg")
  assert (first["gender_a"], first["gender_b"]) == (1, 1)  # mid.csv: m, m
  val = kin_data.load_split(str(tmp_path), "val-pairs.csv")
  assert list(val.labels) == [1, 1, 0, 0]
  assert all("unrelated_and_nonfaces" not in p.path_a + p.path_b
             for p in train.pairs + val.pairs)
  bad = tmp_path / "bad.csv"
  bad.write_text("p1,p2,ptype\nF0001/MID1,F0001/MID3,uncle\n")
  with pytest.raises(sources.DataError, match=r"bad\.csv:2: unknown "
                     r"relation 'uncle'"):
    kin_data.load_split(str(tmp_path), "bad.csv")
  bad.write_text("p1,p2,ptype\nF0001/MID1,F0001/MID9,fs\n")
  with pytest.raises(sources.DataError, match=r"bad\.csv:2: member "
                     r"'F0001/MID9' has no face images"):
    kin_data.load_split(str(tmp_path), "bad.csv")


def test_recordio_identities_and_exact_pixels(tmp_path, capsys):
  from facejax.data import swinface as swinface_data  # pylint: disable=g-import-not-at-top
  from facejax.data import images as images_lib  # pylint: disable=g-import-not-at-top
  from facejax.data.formats import recordio  # pylint: disable=g-import-not-at-top
  truth = rf.insightface_rec(str(tmp_path))
  offsets = recordio.read_idx(str(tmp_path / "train.idx"))
  key_at = {off: k for k, off in offsets.items()}
  folders = swinface_data.identity_folders(str(tmp_path), "data.identity")
  assert len(folders) == 6 and all(len(n) == 4 for _, n in folders)
  assert "train.rec: 24 images of 6 identities" in capsys.readouterr().out
  for ident, (_, names) in enumerate(folders):
    for name in names:
      key = key_at[int(name.rsplit("@", 1)[1])]
      assert truth[key][0] == ident
      # Record 3 was written in two parts around an inner magic number.
      np.testing.assert_array_equal(
          np.asarray(images_lib.load_image(name)), truth[key][1])
  # Without insightface's header record: identities from every label.
  os.rename(tmp_path / "train.idx", tmp_path / "full.idx")
  lines = (tmp_path / "full.idx").read_text().splitlines()[1:1 + 24]
  (tmp_path / "train.idx").write_text("\n".join(lines) + "\n")
  scanned = recordio.identities(str(tmp_path))
  assert [len(n) for _, n in scanned] == [4] * 6
  (tmp_path / "train.idx").write_text("0\t5\n")
  with pytest.raises(sources.DataError, match=r"train\.rec: no RecordIO "
                     r"record at byte 5"):
    recordio.identities(str(tmp_path))


def test_webcaricature_release_with_its_view_files(tmp_path):
  from configs import sphereface as sphereface_config  # pylint: disable=g-import-not-at-top
  from facejax.data import caricature  # pylint: disable=g-import-not-at-top
  rf.webcaricature(str(tmp_path))
  view = "EvaluationProtocols/FaceVerification/UnRestricted/"
  cfg = sphereface_config.data_config(False)
  cfg.root = str(tmp_path)
  cfg.train_list = view + "UnRestrictedView1_DevTrain.txt"
  cfg.test_list = view + "UnRestrictedView1_DevTest.txt"
  cfg.valid_list = ""
  cfg.valid_fraction = 0.2
  seen = {}
  for split in ("train", "valid", "test"):
    photo, cari = caricature.open_domains(cfg, split)
    names = {photo.names[i] for i in photo.identities if i >= 0}
    seen[split] = names
    assert len(cari) == 2 * len(names) and len(photo) == 2 * len(names)
    # The 17 FacialPoints became 5 alignment points for every image.
    assert np.isfinite(cari.points).all() and np.isfinite(photo.points).all()
  assert seen["test"] == set(rf.WEBCARI_SUBJECTS[6:])
  assert seen["train"] | seen["valid"] == set(rf.WEBCARI_SUBJECTS[:6])
  assert not seen["train"] & seen["valid"]
  assert "Adele Laurie Blue Adkins" in seen["train"] | seen["valid"]


def test_fiw_relationship_matrix_gives_rfiw_pair_types(tmp_path):
  """mid.csv codes (FIW_RIDs: 1 child, 2 sibling, 3 grandchild, 4 parent,
  5 spouse, 6 grandparent) read as RFIW pair types by gender; a member with
  no face folder is left out; a bad code names file and line."""
  from facejax.data.formats import rfiw  # pylint: disable=g-import-not-at-top
  from facejax.data.sources import DataError  # pylint: disable=g-import-not-at-top
  fam = tmp_path / "F0007"
  # 1 grandma, 2 father, 3 son, 4 daughter, 5 son's wife (no photos).
  rows = ["MID 1 2 3 4 5 Name Gender",
          "1 0 4 6 6 0 ann f",
          "2 1 0 4 4 0 bob m",
          "3 3 1 0 2 5 cid male",
          "4 3 1 2 0 0 dee female",
          "5 0 0 5 0 0 eve f"]
  from PIL import Image  # pylint: disable=g-import-not-at-top
  fam.mkdir()
  (fam / "mid.csv").write_text("\n".join(rows) + "\n")
  for m in (1, 2, 3, 4):
    os.makedirs(fam / f"MID{m}")
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(
        fam / f"MID{m}" / f"P1_face{m}.jpg")
  pairs = {(a[-4:], b[-4:], t) for a, b, t, _ in rfiw.kin_pairs(str(tmp_path))}
  assert pairs == {("MID1", "MID2", "ms"), ("MID1", "MID3", "gmgs"),
                   ("MID1", "MID4", "gmgd"), ("MID2", "MID3", "fs"),
                   ("MID2", "MID4", "fd"), ("MID3", "MID4", "sibs")}
  (fam / "mid.csv").write_text("\n".join(rows[:2] + ["2 1 0 x 4 0 bob m"])
                               + "\n")
  with pytest.raises(DataError, match=r"mid\.csv:3: relationship code 'x'"):
    rfiw.kin_pairs(str(tmp_path))
