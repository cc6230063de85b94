"""Tiny data sets written in each release's own layout, quirks included.

Every writer follows the data set's documentation and the loaders people
use with it (facejax/data/formats/<name>.py says which), not facejax's
synthetic writer, and returns the truth: {relative image path: labels}.
Images are small JPEG/PNG faces of noise, readable by any decoder.
"""

import datetime
import os

import numpy as np
from PIL import Image
import scipy.io


def _image(path: str, rng: np.random.Generator, size: int = 24) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
  fmt = "PNG" if path.lower().endswith(".png") else "JPEG"
  Image.fromarray(pixels).save(path, format=fmt)


def appa_real(root: str, per_split: int = 8) -> dict:
  """appa-real-release/{train,valid,test}/NNNNNN.jpg (+ _face.jpg, .mat),
  gt_avg_<split>.csv and the per-rating gt_<split>.csv."""
  rng = np.random.default_rng(0)
  top = os.path.join(root, "appa-real-release")
  truth, n = {}, 0
  for split in ("train", "valid", "test"):
    avg = ["file_name,num_ratings,apparent_age_avg,apparent_age_std,"
           "real_age"]
    ratings = ["file_name,real_age,apparent_age,worker_age,worker_gender"]
    for _ in range(per_split):
      name = f"{n:06d}.jpg"
      real = int(rng.integers(1, 90))
      votes = [real + int(v) for v in rng.integers(-6, 7, size=3)]
      apparent = float(np.mean(votes))
      avg.append(f"{name},{len(votes)},{apparent:.6f},"
                 f"{np.std(votes):.6f},{real}")
      for v in votes:
        ratings.append(f"{name},{real},{v},{int(rng.integers(20, 60))},"
                       f"{'male' if v % 2 else 'female'}")
      _image(os.path.join(top, split, name), rng, 32)
      _image(os.path.join(top, split, name + "_face.jpg"), rng)
      with open(os.path.join(top, split, name + ".mat"), "wb") as f:
        f.write(b"MATLAB 5.0 MAT-file")  # face metadata; never read
      truth[f"appa-real-release/{split}/{name}_face.jpg"] = {"real": real,
                                           "apparent": apparent,
                                           "split": split}
      n += 1
    with open(os.path.join(top, f"gt_avg_{split}.csv"), "w") as f:
      f.write("\n".join(avg) + "\n")
    with open(os.path.join(top, f"gt_{split}.csv"), "w") as f:
      f.write("\n".join(ratings) + "\n")
  return truth


def afad(root: str) -> dict:
  """AFAD-Full/<age>/<111|112>/<id>-<n>.jpg with AFAD-Full.txt, README.md
  and the stray Thumbs.db files of the release."""
  rng = np.random.default_rng(1)
  top = os.path.join(root, "AFAD-Full")
  truth, lines = {}, []
  for age in (15, 22, 31, 40):
    for code, gender in (("111", 0), ("112", 1)):
      for k in range(3):
        name = f"{100000 + age * 100 + k}-{k % 2}.jpg"
        rel = f"{age}/{code}/{name}"
        _image(os.path.join(top, rel), rng)
        lines.append(f"./{rel}")
        truth[f"AFAD-Full/{rel}"] = {"age": age, "gender": gender}
      with open(os.path.join(top, str(age), code, "Thumbs.db"), "wb") as f:
        f.write(b"\xd0\xcf\x11\xe0")
  with open(os.path.join(top, "AFAD-Full.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(top, "README.md"), "w") as f:
    f.write("# AFAD\n")
  return truth


UTK_MALFORMED = ("39_1_20170116174525125.jpg.chip.jpg",      # no race
                 "24_0_1_20170116220224657 .jpg.chip.jpg",   # a space
                 "55_0_0_20170116232725357jpg.chip.jpg")     # no dot


def utkface(root: str) -> dict:
  """UTKFace/[age]_[gender]_[race]_[datetime].jpg.chip.jpg, with the
  release's malformed names and ages up to 116."""
  rng = np.random.default_rng(2)
  top = os.path.join(root, "UTKFace")
  truth = {}
  ages = [1, 4, 9, 16, 23, 28, 35, 42, 50, 61, 75, 88, 101, 116]
  for i, age in enumerate(ages * 2):
    gender, race = i % 2, i % 5
    stamp = f"{20170101000000000 + i * 1234567:017d}"  # yyyymmddHHMMSSFFF
    name = f"{age}_{gender}_{race}_{stamp}.jpg.chip.jpg"
    _image(os.path.join(top, name), rng)
    truth[f"UTKFace/{name}"] = {"age": age, "gender": gender}
  for name in UTK_MALFORMED:
    _image(os.path.join(top, name), rng)
  return truth


def cacd2000(root: str, meta: bool = True) -> dict:
  """CACD2000/<age>_<First>_<Last>_<NNNN>.jpg and celebrity2000_meta.mat
  (MATLAB v5 structs celebrityData and celebrityImageData)."""
  rng = np.random.default_rng(3)
  people = [("Aaron_Johnson", 1990, 1), ("Renee_Olstead", 1989, 2),
            ("Bill_Pullman", 1953, 3), ("Mary_Kate_Olsen", 1986, 5),
            ("Jean-Claude_Van_Damme", 1960, 7), ("Adele", 1988, 12),
            ("Chris_Pine", 1980, 40), ("Ed_Harris", 1950, 9)]
  truth, rows = {}, []
  for pid, (person, birth, rank) in enumerate(people, start=1):
    for k, year in enumerate((2004, 2008, 2012)):
      age = year - birth - 1
      name = f"{age}_{person}_{k + 1:04d}.jpg"
      _image(os.path.join(root, "CACD2000", name), rng)
      rows.append((age, pid, year, rank, birth, name))
      split = "valid" if rank <= 2 else "test" if rank <= 5 else "train"
      truth[f"CACD2000/{name}"] = {"age": age, "identity": str(pid),
                                   "person": person, "split": split}
  if meta:
    col = lambda xs, t: np.asarray(xs, t).reshape(-1, 1)
    names = np.empty((len(rows), 1), dtype=object)
    for i, r in enumerate(rows):
      names[i, 0] = r[5]
    image_data = {
        "age": col([r[0] for r in rows], np.float64),
        "identity": col([r[1] for r in rows], np.float64),
        "year": col([r[2] for r in rows], np.float64),
        "feature": np.zeros((0, 0)),
        "rank": col([r[3] for r in rows], np.float64),
        "lfw": col([0] * len(rows), np.float64),
        "birth": col([r[4] for r in rows], np.float64),
        "name": names}
    celeb_names = np.empty((len(people), 1), dtype=object)
    for i, p in enumerate(people):
      celeb_names[i, 0] = p[0].replace("_", " ")
    celeb = {"name": celeb_names,
             "identity": col(range(1, len(people) + 1), np.float64),
             "birth": col([p[1] for p in people], np.float64),
             "rank": col([p[2] for p in people], np.float64),
             "lfw": col([0] * len(people), np.float64)}
    scipy.io.savemat(os.path.join(root, "celebrity2000_meta.mat"),
                     {"celebrityData": celeb,
                      "celebrityImageData": image_data})
  return truth


def _datenum(d: datetime.date) -> float:
  """MATLAB datenum of a date (datenum(1, 1, 1) = 367)."""
  return float(d.toordinal() + 366)


# (dob, photo_taken, age on 1 July of photo_taken): written out by hand.
IMDB_AGES = ((datetime.date(1981, 5, 5), 2009, 28),
             (datetime.date(1990, 8, 15), 2010, 19),
             (datetime.date(1975, 7, 1), 2000, 25),
             (datetime.date(1975, 7, 2), 2000, 24),
             (datetime.date(1960, 1, 1), 2011, 51),
             (datetime.date(1999, 12, 31), 2014, 14))


def imdb_wiki(root: str) -> dict:
  """imdb_crop/imdb.mat and wiki_crop/wiki.mat (v5 structs of per-image
  fields as the release has them) with their NN/ image folders."""
  rng = np.random.default_rng(4)
  truth = {}
  for folder, var in (("imdb_crop", "imdb"), ("wiki_crop", "wiki")):
    rows = []
    for i in range(12):
      dob, taken, age = IMDB_AGES[i % len(IMDB_AGES)]
      person = i
      if var == "imdb":
        rel = (f"{i:02d}/nm{person:07d}_rm{i:09d}_{dob.year}-{dob.month}-"
               f"{dob.day}_{taken}.jpg")
      else:
        rel = (f"{i:02d}/{10000000 + i}_{dob.year}-{dob.month:02d}-"
               f"{dob.day:02d}_{taken}.jpg")
      score = (-np.inf if i == 7 else 0.5 if i == 8 else 1.5 + i / 10)
      second = 2.0 if i == 9 else np.nan
      gender = np.nan if i == 10 else float(i % 2)  # 1 = male
      rows.append((dob, taken, rel, gender, person, score, second))
      _image(os.path.join(root, folder, rel), rng)
      if i not in (7, 8, 9):
        truth[f"{folder}/{rel}"] = {
            "age": age, "person": f"name:person {person}",
            "gender": -1 if i == 10 else (0 if i % 2 else 1)}
    n = len(rows)
    cell = lambda xs: np.array([np.array([x]) for x in xs] + [None],
                               dtype=object)[:-1].reshape(1, n)
    fields = {
        "dob": np.array([[_datenum(r[0]) for r in rows]]),
        "photo_taken": np.array([[r[1] for r in rows]], np.uint16),
        "full_path": cell([r[2] for r in rows]),
        "gender": np.array([[r[3] for r in rows]]),
        "name": cell([f"Person {r[4]}" for r in rows]),
        "face_location": cell([np.array([1., 1., 20., 20.]) for _ in rows]),
        "face_score": np.array([[r[5] for r in rows]]),
        "second_face_score": np.array([[r[6] for r in rows]])}
    if var == "imdb":
      fields["celeb_names"] = cell([f"Person {k}" for k in range(n)])
      fields["celeb_id"] = np.array([[r[4] for r in rows]], np.uint16)
    scipy.io.savemat(os.path.join(root, folder, f"{var}.mat"), {var: fields})
  return truth


MORPH_HEADER = ("id_num,picture_num,dob,doa,race,gender,facial_hair,age,"
                "age_diff,glasses,photo")


def morph2(root: str) -> dict:
  """morph_2008_nonCommercial.csv with Album2/<id>_<n><M|F><age>.JPG."""
  rng = np.random.default_rng(5)
  lines, truth = [MORPH_HEADER], {}
  for person in range(6):
    pid = 3397 + person * 1111
    sex = "M" if person % 3 else "F"
    for n in range(3):
      age = 16 + person * 9 + n * 2
      photo = f"Album2/{pid:06d}_{n}{sex}{age}.JPG"
      lines.append(f"{pid:06d},{n},03/1{person}/19{60 + person},"
                   f"0{n + 1}/12/20{n:02d},B,{sex},,{age},{n * 2},,{photo}")
      _image(os.path.join(root, photo), rng)
      truth[photo] = {"age": age, "identity": f"{pid:06d}",
                      "gender": 0 if sex == "M" else 1}
  with open(os.path.join(root, "morph_2008_nonCommercial.csv"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return truth


FFHQ_AGING_HEADER = ("image_number,age_group,age_group_confidence,gender,"
                     "gender_confidence,head_pitch,head_roll,head_yaw,"
                     "left_eye_occluded,right_eye_occluded,glasses")
FFHQ_GROUPS = {"0-2": 1.0, "3-6": 4.5, "7-9": 8.0, "10-14": 12.0,
               "15-19": 17.0, "20-29": 24.5, "30-39": 34.5, "40-49": 44.5,
               "50-69": 59.5, "70-120": 75.0}


def ffhq_aging(root: str) -> dict:
  """ffhq_aging_labels.csv and ffhq_aging256x256/<thousands>/<nnnnn>.png."""
  rng = np.random.default_rng(6)
  lines, truth = [FFHQ_AGING_HEADER], {}
  groups = list(FFHQ_GROUPS)
  numbers = [0, 7, 999, 1000, 1234, 5321, 68998, 68999, 69000, 69001,
             69999, 70000]
  for k, number in enumerate(numbers):
    group = groups[k % len(groups)]
    conf = 0.4 if k == 3 else 0.9
    gender = "female" if k % 2 else "male"
    lines.append(f"{number},{group},{conf},{gender},0.99,-1,-1,-1,-1,-1,-1")
    rel = f"ffhq_aging256x256/{number - number % 1000:05d}/{number:05d}.png"
    _image(os.path.join(root, rel), rng)
    if conf >= 0.6:
      truth[rel] = {"age": FFHQ_GROUPS[group], "gender": k % 2,
                    "split": "train" if number < 69000 else "test"}
  with open(os.path.join(root, "ffhq_aging_labels.csv"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return truth


def hrfae_ffhq(root: str, n: int = 40) -> dict:
  """HRFAE's data/: ffhq.npy ((N, 2) strings: file name, age), ffhq/."""
  rng = np.random.default_rng(7)
  rows, truth = [], {}
  for i in range(n):
    name, age = f"{i:05d}.png", int(rng.integers(15, 80))
    rows.append((name, str(age)))
    _image(os.path.join(root, "ffhq", name), rng)
    truth[f"ffhq/{name}"] = {"age": age,
                             "split": "train" if i < int(0.95 * n) else "test"}
  np.save(os.path.join(root, "ffhq.npy"), np.array(rows))
  return truth


RAFD_EXPRESSIONS = ("angry", "contemptuous", "disgusted", "fearful", "happy",
                    "neutral", "sad", "surprised")
RAFD_SUBJECTS = (("01", "Caucasian", "female"), ("02", "Moroccan", "male"),
                 ("05", "Kid", "female"), ("33", "Caucasian", "male"),
                 ("41", "Kid", "male"), ("57", "Moroccan", "female"),
                 ("61", "Caucasian", "female"), ("73", "Moroccan", "male"))


def rafd(root: str) -> dict:
  """Flat Rafd<angle>_<id>_<ethnicity>_<gender>_<expression>_<gaze>.jpg
  (five cameras; frontal gaze everywhere, left/right for subject 01)."""
  rng = np.random.default_rng(8)
  truth = {}
  for sid, ethnicity, gender in RAFD_SUBJECTS:
    for expression in RAFD_EXPRESSIONS:
      for angle in (0, 45, 90, 135, 180):
        gazes = ("frontal", "left", "right") if sid == "01" else ("frontal",)
        for gaze in gazes:
          name = (f"Rafd{angle:03d}_{sid}_{ethnicity}_{gender}_{expression}"
                  f"_{gaze}.jpg")
          _image(os.path.join(root, name), rng, 56)
          truth[name] = {"camera": angle, "subject": sid,
                         "expression": expression, "gender": gender,
                         "ethnicity": ethnicity, "gaze": gaze}
  return truth


def fiw(root: str, families: int = 3) -> dict:
  """FIDs/F0001/MID1/P00001_face0.jpg with each family's mid.csv
  (`MID 1 2 3 Name Gender`, the relationship matrix) and its
  unrelated_and_nonfaces/ folder of photos that are no member."""
  rng = np.random.default_rng(9)
  members = {}
  for f in range(1, families + 1):
    fid = f"F{f:04d}"
    top = os.path.join(root, "FIDs", fid)
    # Father, mother, son: 4 = parent of, 1 = child of, 5 = spouse.
    matrix = [[0, 5, 4], [5, 0, 4], [1, 1, 0]]
    rows = ["MID 1 2 3 Name Gender"]
    for m, (name, gender) in enumerate((("dad", "m"), ("mom", "f"),
                                        ("son", "m")), start=1):
      rows.append(f"{m} " + " ".join(map(str, matrix[m - 1]))
                  + f" {name}{f} {gender}")
      for p in range(2):
        rel = f"FIDs/{fid}/MID{m}/P{f * 100 + p:05d}_face{m}.jpg"
        _image(os.path.join(root, rel), rng)
        members.setdefault(f"{fid}/MID{m}", []).append(rel)
    for p in range(2):
      _image(os.path.join(top, "unrelated_and_nonfaces",
                          f"P{f * 100 + 50 + p:05d}_face0.jpg"), rng)
    with open(os.path.join(top, "mid.csv"), "w") as fh:
      fh.write("\n".join(rows) + "\n")
  return members


CELEBA_ATTRS = ("5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive",
                "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
                "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
                "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
                "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
                "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes",
                "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
                "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling",
                "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
                "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
                "Wearing_Necktie", "Young")


def celeba_drive(root: str, n: int = 30) -> dict:
  """CelebA's Google Drive layout: Anno/list_attr_celeba.txt (count line,
  names line, `000001.jpg -1  1 ...` with the release's double spaces),
  Anno/identity_CelebA.txt, Eval/list_eval_partition.txt and
  Img/img_align_celeba/."""
  rng = np.random.default_rng(10)
  rows, parts, ids, truth = [], [], [], {}
  for i in range(1, n + 1):
    name = f"{i:06d}.jpg"
    values = rng.choice([-1, 1], size=len(CELEBA_ATTRS))
    part = 0 if i <= n * 0.6 else 1 if i <= n * 0.8 else 2
    rows.append(name + "".join(f" {v:2d}" for v in values))
    parts.append(f"{name} {part}")
    ids.append(f"{name} {1 + i // 3}")
    _image(os.path.join(root, "Img", "img_align_celeba", name), rng, 40)
    truth[name] = {"values": dict(zip(CELEBA_ATTRS, values)),
                   "partition": part}
  os.makedirs(os.path.join(root, "Anno"), exist_ok=True)
  os.makedirs(os.path.join(root, "Eval"), exist_ok=True)
  with open(os.path.join(root, "Anno", "list_attr_celeba.txt"), "w") as f:
    f.write(f"{n}\n" + " ".join(CELEBA_ATTRS) + " \n" + "\n".join(rows)
            + "\n")
  with open(os.path.join(root, "Anno", "identity_CelebA.txt"), "w") as f:
    f.write("\n".join(ids) + "\n")
  with open(os.path.join(root, "Eval", "list_eval_partition.txt"), "w") as f:
    f.write("\n".join(parts) + "\n")
  return truth


def raf_db(root: str, per_class: int = 3) -> dict:
  """RAF-DB basic: EmoLabel/list_patition_label.txt (`train_00001.jpg 5`),
  Image/aligned/<name>_aligned.jpg and Image/original/<name>.jpg."""
  rng = np.random.default_rng(11)
  top = os.path.join(root, "basic")
  lines, truth = [], {}
  for split in ("train", "test"):
    k = 0
    for label in range(1, 8):
      for _ in range(per_class):
        k += 1
        name = f"{split}_{k:05d}.jpg"
        lines.append(f"{name} {label}")
        _image(os.path.join(top, "Image", "original", name), rng, 48)
        _image(os.path.join(top, "Image", "aligned",
                            f"{split}_{k:05d}_aligned.jpg"), rng, 32)
        truth[name] = {"label": label, "split": split}
  os.makedirs(os.path.join(top, "EmoLabel"), exist_ok=True)
  with open(os.path.join(top, "EmoLabel", "list_patition_label.txt"),
            "w") as f:
    f.write("\n".join(lines) + "\n")
  return truth


def rfiw_lists(root: str, members: dict) -> dict:
  """RFIW track-I csvs for a fiw() tree: train-pairs.csv at member level
  (`p1,p2,ptype`, kin only) and val-pairs.csv / test-pairs.csv at face
  level with labels (`p1,p2,ptype,label`, kin and non-kin)."""
  fams = sorted({m.split("/")[0] for m in members})
  train = ["p1,p2,ptype"]
  for fid in fams[:-2]:
    train += [f"{fid}/MID1,{fid}/MID3,fs", f"{fid}/MID2,{fid}/MID3,ms"]
  face = lambda fid, m, k=0: members[f"{fid}/MID{m}"][k][len("FIDs/"):]
  lists = {"train-pairs.csv": train}
  for name, fid, other in (("val-pairs.csv", fams[-2], fams[0]),
                           ("test-pairs.csv", fams[-1], fams[1])):
    lists[name] = ["p1,p2,ptype,label",
                   f"{face(fid, 1)},{face(fid, 3)},fs,1",
                   f"{face(fid, 2, 1)},{face(fid, 3, 1)},ms,1",
                   f"{face(fid, 1)},{face(other, 3)},fs,0",
                   f"{face(fid, 2)},{face(other, 3, 1)},ms,0"]
  for name, lines in lists.items():
    with open(os.path.join(root, name), "w") as f:
      f.write("\n".join(lines) + "\n")
  return lists


def insightface_rec(root: str, identities: int = 6, per_id: int = 4) -> dict:
  """train.rec / train.idx as insightface writes MS1MV2 (mxnet's
  MXIndexedRecordIO with IRHeaders): record 0 the header (first identity
  record, end), images 1..N labelled by identity, then one (start, end)
  record per identity. One payload holds the RecordIO magic at an aligned
  offset, so it is written as two parts (cflag 1, 3), as dmlc's writer
  does."""
  import io  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(12)
  magic = 0xCED7230A
  records, truth = {}, {}
  n_img = identities * per_id
  first_id = n_img + 1
  header = lambda flag, label, id2=0: struct.pack("<IfQQ", flag, label, 0,
                                                  id2)
  records[0] = header(2, 0.0) + struct.pack("<2f", first_id,
                                            first_id + identities)
  key = 1
  for ident in range(identities):
    for _ in range(per_id):
      im = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
      buf = io.BytesIO()
      Image.fromarray(im).save(buf, format="PNG")  # lossless: exact pixels
      id2 = magic if key == 3 else 0
      records[key] = header(0, float(ident), id2) + buf.getvalue()
      truth[key] = (ident, im)
      key += 1
  for ident in range(identities):
    start = 1 + ident * per_id
    records[first_id + ident] = header(2, 0.0) + struct.pack(
        "<2f", start, start + per_id)
  rec = open(os.path.join(root, "train.rec"), "wb")
  idx = []
  for k in sorted(records):
    idx.append(f"{k}\t{rec.tell()}")
    data = records[k]
    cut = [i for i in range(0, len(data) - 3, 4)
           if struct.unpack_from("<I", data, i)[0] == magic]
    chunks = ([data[:cut[0]], data[cut[0] + 4:]] if cut else [data])
    for c, chunk in enumerate(chunks):
      cflag = 0 if len(chunks) == 1 else (1 if c == 0 else 3)
      rec.write(struct.pack("<II", magic, cflag << 29 | len(chunk)))
      rec.write(chunk + b"\0" * ((4 - len(chunk) % 4) % 4))
  rec.close()
  with open(os.path.join(root, "train.idx"), "w") as f:
    f.write("\n".join(idx) + "\n")
  return truth


WEBCARI_SUBJECTS = ("Adele Laurie Blue Adkins", "Jeff Bridges", "Meg Ryan",
                    "Elizabeth Taylor", "Jennifer Aniston", "Bill Gates",
                    "Jean-Claude Van Damme", "Yao Ming")


def webcaricature(root: str) -> dict:
  """WebCaricature as released: OriginalImages/<Subject Name>/C00001.jpg
  and P00001.jpg, FacialPoints/<Subject Name>/<stem>.txt (17 'x y'
  lines), Filenames/, and the EvaluationProtocols view files (a count
  line, then tab-separated `Name\\t#caricatures\\t#photos`)."""
  rng = np.random.default_rng(13)
  truth = {}
  for s, name in enumerate(WEBCARI_SUBJECTS):
    for kind, n in (("C", 2), ("P", 2)):
      for k in range(1, n + 1):
        stem = f"{kind}{k:05d}"
        _image(os.path.join(root, "OriginalImages", name, stem + ".jpg"),
               rng, 64)
        pts = [(20 + 2 * i + s, 24 + (i % 5) * 3) for i in range(17)]
        lm = os.path.join(root, "FacialPoints", name, stem + ".txt")
        os.makedirs(os.path.dirname(lm), exist_ok=True)
        with open(lm, "w") as f:
          f.write("\n".join(f"{x} {y}" for x, y in pts) + "\n")
    os.makedirs(os.path.join(root, "Filenames", name), exist_ok=True)
    truth[name] = {"C": 2, "P": 2}
  view = os.path.join(root, "EvaluationProtocols", "FaceVerification",
                      "UnRestricted")
  os.makedirs(view, exist_ok=True)
  for fname, names in (("UnRestrictedView1_DevTrain.txt",
                        WEBCARI_SUBJECTS[:6]),
                       ("UnRestrictedView1_DevTest.txt",
                        WEBCARI_SUBJECTS[6:])):
    with open(os.path.join(view, fname), "w") as f:
      f.write(f"{len(names)}\n" + "".join(f"{n}\t2\t2\n" for n in names))
  return truth
