"""The synthetic Families-in-the-Wild set: families, photos and kin pairs."""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Optional

import numpy as np

from facejax.data.synthetic import identities
from facejax.data.synthetic import writing


# FIW relation names and the label numbers the kinship task uses.
RELATION_LABELS = {
    'non-kin': 0, 'md': 1, 'ms': 2, 'sibs': 3, 'ss': 4, 'bb': 5, 'fd': 6,
    'fs': 7, 'gfgd': 8, 'gfgs': 9, 'gmgd': 10, 'gmgs': 11,
}


@dataclasses.dataclass
class _Member:
  mid: str
  role: str
  identity: dict
  age: float
  parents: tuple[int, ...] = ()
  images: list[str] = dataclasses.field(default_factory=list)

  @property
  def gender(self) -> int:
    return self.identity['gender']


def _make_family(rng: np.random.Generator) -> list[_Member]:
  """Parents, sometimes one side's grandparents, and 1-4 children."""
  skin = int(rng.integers(4))
  mixed = rng.random() < 0.15
  members = []
  gp_side = int(rng.integers(2)) if rng.random() < 0.35 else -1
  if gp_side >= 0:
    members.append(_Member(
        '', 'grandfather',
        identities.sample_identity(rng, gender=1, skin_group=skin),
        float(rng.uniform(66.0, 88.0))))
    members.append(_Member(
        '', 'grandmother',
        identities.sample_identity(rng, gender=0, skin_group=skin),
        float(rng.uniform(64.0, 86.0))))
  for gender, role in ((1, 'father'), (0, 'mother')):
    parent_skin = int(rng.integers(4)) if mixed and gender == 0 else skin
    if gp_side == gender:
      identity = identities.inherit_identity(
          rng, [members[0].identity, members[1].identity], gender=gender)
      age = min(members[0].age, members[1].age) - float(rng.uniform(22, 32))
      members.append(_Member('', role, identity, age, (0, 1)))
    else:
      identity = identities.sample_identity(rng, gender=gender,
                                            skin_group=parent_skin)
      members.append(_Member('', role, identity,
                             float(rng.uniform(30.0, 52.0))))
  father, mother = len(members) - 2, len(members) - 1
  youngest_parent = min(members[father].age, members[mother].age)
  for _ in range(int(rng.integers(1, 5))):
    gender = int(rng.integers(2))
    identity = identities.inherit_identity(
        rng, [members[father].identity, members[mother].identity],
        gender=gender)
    age = float(rng.uniform(2.0, max(3.0, youngest_parent - 20.0)))
    members.append(_Member('', 'son' if gender else 'daughter', identity,
                           age, (father, mother)))
  for k, member in enumerate(members):
    member.mid = f'MID{k + 1}'
  return members


def _relation(members: list[_Member], i: int,
              j: int) -> Optional[tuple[str, int, int]]:
  """FIW relation of members i and j as (name, elder, younger), or None."""
  def kind(k: int, male: str, female: str) -> str:
    return male if members[k].gender else female

  for elder, young in ((i, j), (j, i)):
    parents = members[young].parents
    if elder in parents:
      return kind(elder, 'f', 'm') + kind(young, 's', 'd'), elder, young
    if any(elder in members[p].parents for p in parents):
      name = 'g' + kind(elder, 'f', 'm') + 'g' + kind(young, 's', 'd')
      return name, elder, young
  if members[i].parents and members[i].parents == members[j].parents:
    if members[i].gender == members[j].gender:
      return ('bb' if members[i].gender else 'ss'), i, j
    return 'sibs', i, j
  return None


def write_fiw(
    out: str, num_families: int = 60, size: int = 112, seed: int = 0
) -> dict:
  """Writes a Families-in-the-Wild-like kinship set.

  Files: out/images/F0001/MID1/P00001_face0.jpg (2-4 photos per member at
  different ages); out/families.csv (`family,mid,gender,skin_group,role`);
  out/txt/{train,val,test}.txt with lines `id path1 path2 relation is_kin`
  (paths relative to out/images; families split 70/15/15, as many
  negatives as positives, negatives pair members of two families of the same
  split under a relation name that fits their roles);
  out/txt/train_triplets.txt with `id anchor positive negative relation 1`.

  Args:
    out: output folder.
    num_families: number of families, at least 6 (2 per split).
    size: image size in pixels.
    seed: random seed.

  Returns:
    Summary dict with counts of families, members, images and pairs.
  """
  if num_families < 6:
    raise ValueError('write_fiw needs num_families >= 6 (2 per split).')
  image_root = os.path.join(out, 'images')
  families, picture = [], 0
  os.makedirs(image_root, exist_ok=True)
  with open(os.path.join(out, 'families.csv'), 'w', newline='') as f, \
      writing.Renderer(num_families * 15) as renderer:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(('family', 'mid', 'gender', 'skin_group', 'role'))
    for fam in range(num_families):
      fid = f'F{fam + 1:04d}'
      rng = writing.stream_rng(seed, 'fiw', fam)
      members = _make_family(rng)
      for k, member in enumerate(members):
        folder = os.path.join(image_root, fid, member.mid)
        os.makedirs(folder, exist_ok=True)
        writer.writerow((fid, member.mid, member.gender,
                         member.identity['skin_group'], member.role))
        for shot in range(int(rng.integers(2, 5))):
          shot_rng = writing.stream_rng(seed, 'fiw', fam, k, shot)
          spread = 4.0 if member.role in ('son', 'daughter') else 8.0
          age = min(98.0, max(1.0, member.age + shot_rng.uniform(-1, 1)
                              * spread))
          face = identities.sample_face(shot_rng, member.identity,
                                        age=round(age, 1))
          picture += 1
          rel = f'{fid}/{member.mid}/P{picture:05d}_face0.jpg'
          renderer.add(face, size, shot_rng, os.path.join(image_root, rel))
          member.images.append(rel)
      families.append(members)

  split_rng = writing.stream_rng(seed, 'fiw', writing.AUX, 0)
  order = split_rng.permutation(num_families).tolist()
  n_val = max(2, int(round(0.15 * num_families)))
  n_train = num_families - 2 * n_val
  splits = {'train': sorted(order[:n_train]),
            'val': sorted(order[n_train:n_train + n_val]),
            'test': sorted(order[n_train + n_val:])}
  txt = os.path.join(out, 'txt')
  os.makedirs(txt, exist_ok=True)
  summary = {'layout': 'fiw', 'families': num_families,
             'members': sum(len(m) for m in families), 'images': picture}
  for split, fams in splits.items():
    rng = writing.stream_rng(seed, 'fiw', writing.AUX,
                             1 + list(splits).index(split))
    positives = []
    for fam in fams:
      members = families[fam]
      for i in range(len(members)):
        for j in range(i + 1, len(members)):
          found = _relation(members, i, j)
          if found is None:
            continue
          relation, elder, young = found
          combos = [(p, q) for p in members[elder].images
                    for q in members[young].images]
          take = rng.permutation(len(combos))[:3]
          positives += [(combos[t][0], combos[t][1], relation, young, fam)
                        for t in sorted(take.tolist())]
    lines, triplets = [], []
    for p1, p2, relation, young, fam in positives:
      # Negative: swap the younger member for a stranger of the same role
      # (else gender) from another family of this split.
      young_member = families[fam][young]
      other = fams[int(rng.integers(len(fams) - 1))]
      other = other if other != fam else fams[-1]
      candidates = [m for m in families[other] if m.role == young_member.role]
      candidates = candidates or [m for m in families[other]
                                  if m.gender == young_member.gender]
      candidates = candidates or families[other]
      stranger = candidates[int(rng.integers(len(candidates)))]
      negative = stranger.images[int(rng.integers(len(stranger.images)))]
      lines.append((p1, p2, relation, 1))
      lines.append((p1, negative, relation, 0))
      triplets.append((p1, p2, negative, relation))
    shuffle = rng.permutation(len(lines)).tolist()
    with open(os.path.join(txt, f'{split}.txt'), 'w') as f:
      for k, index in enumerate(shuffle):
        p1, p2, relation, kin = lines[index]
        f.write(f'{k} {p1} {p2} {relation} {kin}\n')
    if split == 'train':
      with open(os.path.join(txt, 'train_triplets.txt'), 'w') as f:
        for k, (anchor, pos, neg, relation) in enumerate(triplets):
          f.write(f'{k} {anchor} {pos} {neg} {relation} 1\n')
    summary[f'{split}_families'] = len(fams)
    summary[f'{split}_pairs'] = len(lines)
  return summary
