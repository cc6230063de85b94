"""UTKFace: ages, genders and races in the file names.

  [age]_[gender]_[race]_[date&time].jpg            in-the-wild (part1..3)
  [age]_[gender]_[race]_[date&time].jpg.chip.jpg   aligned & cropped

gender 0 = male, 1 = female; race 0-4 (White, Black, Asian, Indian,
Others); ages 0-116. A handful of released names lack a field (e.g.
`39_1_20170116174525125.jpg.chip.jpg`); they are reported and skipped. The
release names no people, so splits are seeded by file. The same photo in
two folders (the cropped set and the in-the-wild parts unpacked under one
root) is read once.
"""

import os
import re

from facejax.data.formats import base

NAME = "utkface"
EXPECTED = ("UTKFace images named [age]_[gender]_[race]_[date&time].jpg"
            "[.chip.jpg] anywhere under data.root (UTKFace/, crop_part1/ "
            "or part1/..part3/)")
_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d{17})$")


def stem(file_name: str) -> str:
  """The name without .chip.jpg / .jpg (UTKFace's key for one photo)."""
  s = file_name
  for suffix in (".chip.jpg", ".jpg", ".jpeg", ".png"):
    if s.lower().endswith(suffix):
      s = s[:-len(suffix)]
  return s


def parse_name(file_name: str):
  """(age, gender, race) of a UTKFace file name, or None if malformed."""
  m = _NAME.match(stem(file_name))
  if not m:
    return None
  return int(m.group(1)), int(m.group(2)), int(m.group(3))


def read(root: str, cfg) -> base.AgeListing:
  del cfg
  base.require_dir(root, NAME, EXPECTED)
  out = base.ListingBuilder(NAME, root)
  seen = {}
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
      if not base.is_image(name):
        continue
      rel = os.path.relpath(os.path.join(folder, name), root)
      labels = parse_name(name)
      if labels is None:
        out.skip("malformed names", rel)
        continue
      key = stem(name)
      if key in seen:
        out.skip("duplicate photos", f"{rel} = {seen[key]}")
        continue
      seen[key] = rel
      age, gender, _ = labels
      out.add(os.path.join(folder, name), float(age), name, gender=gender)
  return out.build(EXPECTED)
