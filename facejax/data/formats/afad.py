"""AFAD-Full / AFAD-Lite: ages and genders in the folder names.

  AFAD-Full/<age>/<111|112>/<image>.jpg      111 = male, 112 = female

The release names no people, so splits are seeded by file (or the CORAL
repository's published csvs, given as data.split_files). data.root may be
the AFAD-Full (or AFAD-Lite) folder itself or the folder holding it.
"""

import os

from facejax.data.formats import base

NAME = "afad"
EXPECTED = "AFAD-Full/<age>/<111|112>/*.jpg (111 male, 112 female)"
GENDER_CODES = {"111": 0, "112": 1}


def _release_dir(root: str) -> str:
  base.require_dir(root, NAME, EXPECTED)
  entries = os.listdir(root)
  if not any(e.isdigit() for e in entries):
    for name in ("AFAD-Full", "AFAD-Lite"):
      if os.path.isdir(os.path.join(root, name)):
        return os.path.join(root, name)
  return root


def read(root: str, cfg) -> base.AgeListing:
  del cfg
  top = _release_dir(root)
  out = base.ListingBuilder(NAME, root)
  for age_dir in sorted(os.listdir(top)):
    path = os.path.join(top, age_dir)
    if not os.path.isdir(path):
      continue
    if not age_dir.isdigit():
      out.skip("folders not named by an age", age_dir)
      continue
    for code in sorted(os.listdir(path)):
      sub = os.path.join(path, code)
      if not os.path.isdir(sub):
        continue
      if code not in GENDER_CODES:
        out.skip("folders not 111/112", os.path.join(age_dir, code))
        continue
      for name in base.list_images(sub):
        rel = os.path.join(age_dir, code, name)
        out.add(os.path.join(sub, name), float(age_dir), rel,
                gender=GENDER_CODES[code])
  return out.build(EXPECTED)
