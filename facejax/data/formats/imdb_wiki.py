"""IMDB-WIKI (Rothe et al.; the data set DEX was trained on).

  imdb_crop/imdb.mat + imdb_crop/NN/nm..._rm..._<dob>_<taken>.jpg
  wiki_crop/wiki.mat + wiki_crop/NN/<id>_<dob>_<taken>.jpg

Each .mat (MATLAB v5, read with scipy) holds one struct, `imdb` or `wiki`,
with per-image fields dob (MATLAB serial date), photo_taken (year),
full_path, gender (0 female, 1 male, NaN), name, face_location,
face_score (-Inf: no face found) and second_face_score (NaN: no second
face); imdb adds celeb_names and celeb_id. data.root is the folder holding
imdb_crop/ and/or wiki_crop/ (both are read when both are there), or one of
them.

Age is the age on 1 July of photo_taken, as the release defines it
(datenum(photo_taken, 7, 1) - dob). Rows are kept as the widely used
loaders keep them: face_score >= data.min_face_score (1.0) and finite, and
no second face (data.single_face). People: the name field (IMDB's celeb_id
where a name is empty) (the same person in both subsets is one person), so the seeded split
keeps each person on one side.
"""

import datetime
import os

import numpy as np
import scipy.io

from facejax.data import sources
from facejax.data.formats import base

NAME = "imdb_wiki"
EXPECTED = "imdb_crop/imdb.mat and/or wiki_crop/wiki.mat with their images"
OPTIONS = {"min_face_score": 1.0, "single_face": True}
SUBSETS = (("imdb_crop", "imdb"), ("wiki_crop", "wiki"))


def age_at_photo(dob: float, photo_taken: int) -> float:
  """Age in whole years on 1 July of `photo_taken` (dob: MATLAB datenum).

  MATLAB day 367 is 0001-01-01, Python's ordinal 1: ordinal = datenum - 366.
  """
  if not np.isfinite(dob) or dob < 367:
    return float("nan")
  birth = datetime.date.fromordinal(int(dob) - 366)
  age = int(photo_taken) - birth.year
  if (birth.month, birth.day) > (7, 1):
    age -= 1  # not yet had this year's birthday on 1 July
  return float(age)


def _strings(field) -> list[str]:
  """A cell array of strings as loadmat gives it (1xN of 1-elem arrays)."""
  out = []
  for x in np.ravel(field):
    x = np.ravel(x)
    out.append(str(x[0]) if x.size else "")
  return out


def _mat_files(root: str) -> list[tuple[str, str]]:
  found = []
  for folder, var in SUBSETS:
    for top in (os.path.join(root, folder), root):
      path = os.path.join(top, f"{var}.mat")
      if os.path.isfile(path):
        found.append((path, var))
        break
  return found


def _load(path: str, var: str):
  try:
    mat = scipy.io.loadmat(path)
  except NotImplementedError:
    raise sources.DataError(
        f"{path}: a MATLAB v7.3 file; the IMDB-WIKI release's {var}.mat is "
        "MATLAB v5 (re-download it, or save it with -v7)") from None
  except Exception as e:  # scipy raises several types for a bad file
    raise sources.DataError(f"{path}: not a readable MATLAB file "
                            f"({type(e).__name__}: {e})") from None
  if var not in mat:
    raise sources.DataError(
        f"{path}: no variable {var!r} (found "
        f"{sorted(k for k in mat if not k.startswith('__'))})")
  struct = mat[var]
  try:
    struct = struct[0, 0]
    return {k: struct[k] for k in struct.dtype.names}
  except (IndexError, TypeError):
    raise sources.DataError(f"{path}: {var!r} is not the release's struct "
                            "of per-image fields") from None


def read(root: str, cfg) -> base.AgeListing:
  base.require_dir(root, NAME, EXPECTED)
  files = _mat_files(root)
  if not files:
    raise sources.DataError(f"{root}: no imdb.mat or wiki.mat (data.format="
                            f"'imdb_wiki' expects {EXPECTED})")
  min_score = float(cfg.get("min_face_score", 1.0))
  single = bool(cfg.get("single_face", True))
  out = base.ListingBuilder(NAME, root)
  for path, var in files:
    out.label_files.append(path)
    f = _load(path, var)
    needed = ("dob", "photo_taken", "full_path", "gender", "face_score",
              "second_face_score")
    missing = [k for k in needed if k not in f]
    if missing:
      raise sources.DataError(f"{path}: struct {var!r} lacks fields "
                              f"{missing}")
    dob = np.ravel(f["dob"]).astype(np.float64)
    taken = np.ravel(f["photo_taken"]).astype(np.int64)
    full = _strings(f["full_path"])
    gender = np.ravel(f["gender"]).astype(np.float64)
    score = np.ravel(f["face_score"]).astype(np.float64)
    second = np.ravel(f["second_face_score"]).astype(np.float64)
    # People by name, the field both subsets have: one celebrity is often
    # in IMDB and in Wikipedia, and must stay on one side of the split.
    names = _strings(f["name"]) if "name" in f else [""] * len(full)
    ids = (np.ravel(f["celeb_id"]) if "celeb_id" in f
           else [None] * len(full))
    people = [f"name:{' '.join(n.lower().split())}" if n else
              (f"{var}:{int(c)}" if c is not None else None)
              for n, c in zip(names, ids)]
    lengths = {len(dob), len(taken), len(full), len(gender), len(score),
               len(second), len(people)}
    if len(lengths) != 1:
      raise sources.DataError(f"{path}: fields of {var!r} differ in length "
                              f"({sorted(lengths)})")
    folder = os.path.dirname(path)
    for i, rel in enumerate(full):
      where = f"{path}[{var}][{i}]"
      if not np.isfinite(score[i]) or score[i] < min_score:
        out.skip(f"face_score < {min_score:g} or no face "
                 "(data.min_face_score)", f"{rel} ({where})")
        continue
      if single and np.isfinite(second[i]):
        out.skip("second face found (data.single_face)", f"{rel} ({where})")
        continue
      age = age_at_photo(dob[i], taken[i])
      if not np.isfinite(age):
        out.skip("no valid date of birth", f"{rel} ({where})")
        continue
      g = {0.0: 1, 1.0: 0}.get(float(gender[i]), -1)  # release: 1 = male
      out.add(os.path.join(folder, rel), age, f"{where} {rel}",
              identity=people[i] or f"{var}:{rel}", gender=g)
  return out.build(EXPECTED, notes="age on 1 July of photo_taken")
