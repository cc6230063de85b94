"""Procedurally drawn faces whose pixels carry their labels.

The faces stand in for the real face data sets (age CSVs such as CACD or
UTKFace, CelebA, RaFD, FIW) in tests and smoke runs: every label is drawn
into the image strongly enough that a small CNN can learn it at 32-64 px
after a few hundred steps.

* identity: face shape (width/height ratio, jaw), eye spacing and size, nose
  length and width, mouth, skin tone (skin_group 0..3 sets the colour),
  natural hair colour, eye colour.
* age 0..100: children have a smaller head on narrower shoulders, with big,
  low-set eyes and a short nose (all linear in age up to 18); from ~18
  nasolabial folds, from ~28 forehead lines (count and darkness grow to
  ~95), crow's feet, eye bags, sagging jowls, cheek creases and age spots
  later; hair greys from ~33 (Gray_Hair from ~55) and is white by ~90;
  receding hairline or baldness from ~40 for those prone to it.
* gender: hair length, jaw, brow thickness, beards for men.
* smile, eyeglasses, bangs, seven expressions (eyebrows, eyes, mouth) and
  most of the 40 CelebA attributes.
* nuisance per image: background, clothes, a shift/scale/rotation of the
  head, brightness, contrast, noise, occasional blur.

Only numpy, PIL and absl.logging are used so that the module stays cheap to
import and picklable for data-loader worker processes. Everything is
deterministic given the seed: each image draws from its own numpy Generator
seeded by (seed, layout, index), so the files do not depend on generation
order.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import functools
import inspect
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zlib
from typing import Any, Callable, Optional, Sequence

from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter

EXPRESSIONS = (
    'angry', 'disgusted', 'fearful', 'happy', 'neutral', 'sad', 'surprised'
)
HAIR_COLOURS = ('Black_Hair', 'Blond_Hair', 'Brown_Hair', 'Gray_Hair')
CELEBA_ATTRIBUTES = (
    '5_o_Clock_Shadow', 'Arched_Eyebrows', 'Attractive', 'Bags_Under_Eyes',
    'Bald', 'Bangs', 'Big_Lips', 'Big_Nose', 'Black_Hair', 'Blond_Hair',
    'Blurry', 'Brown_Hair', 'Bushy_Eyebrows', 'Chubby', 'Double_Chin',
    'Eyeglasses', 'Goatee', 'Gray_Hair', 'Heavy_Makeup', 'High_Cheekbones',
    'Male', 'Mouth_Slightly_Open', 'Mustache', 'Narrow_Eyes', 'No_Beard',
    'Oval_Face', 'Pale_Skin', 'Pointy_Nose', 'Receding_Hairline',
    'Rosy_Cheeks', 'Sideburns', 'Smiling', 'Straight_Hair', 'Wavy_Hair',
    'Wearing_Earrings', 'Wearing_Hat', 'Wearing_Lipstick', 'Wearing_Necklace',
    'Wearing_Necktie', 'Young',
)
# FIW relation names and the label numbers the kinship task uses.
RELATION_LABELS = {
    'non-kin': 0, 'md': 1, 'ms': 2, 'sibs': 3, 'ss': 4, 'bb': 5, 'fd': 6,
    'fs': 7, 'gfgd': 8, 'gfgs': 9, 'gmgd': 10, 'gmgs': 11,
}
LAYOUTS = ('age_csv', 'celeba', 'rafd', 'fiw')
BEARD_STYLES = ('none', 'stubble', 'mustache', 'goatee', 'full')
MARKER = 'SYNTHETIC_DONE.json'

# Bump when the drawing or file layout changes so that ensure() regenerates.
_VERSION = 1

# Skin colour per skin_group, clearly apart so that the group is visible.
_SKIN_BASE = (
    (242.0, 210.0, 188.0),
    (220.0, 172.0, 132.0),
    (170.0, 118.0, 80.0),
    (100.0, 64.0, 44.0),
)
_HAIR_BASE = {
    'Black_Hair': (30.0, 26.0, 24.0),
    'Brown_Hair': (110.0, 70.0, 40.0),
    'Blond_Hair': (212.0, 172.0, 96.0),
}
# Natural hair colour probabilities (black, brown, blond) per skin group.
_HAIR_P = ((0.3, 0.4, 0.3), (0.5, 0.4, 0.1), (0.75, 0.22, 0.03),
           (0.9, 0.1, 0.0))
_NATURAL_HAIR = ('Black_Hair', 'Brown_Hair', 'Blond_Hair')
_EYE_COLOURS = (
    (80.0, 50.0, 28.0), (45.0, 30.0, 22.0), (70.0, 110.0, 160.0),
    (80.0, 120.0, 80.0), (120.0, 95.0, 50.0),
)
_EYE_P = ((0.3, 0.1, 0.3, 0.15, 0.15), (0.5, 0.3, 0.05, 0.05, 0.1),
          (0.45, 0.5, 0.0, 0.0, 0.05), (0.3, 0.7, 0.0, 0.0, 0.0))
_BEARD_P = (0.45, 0.2, 0.1, 0.1, 0.15)
# Default expression mix: about as many smiles as CelebA.
_EXPRESSION_P = (0.06, 0.05, 0.05, 0.45, 0.29, 0.05, 0.05)
# The same mix without 'happy', for faces asked not to smile.
_NOT_HAPPY = tuple(e for e in EXPRESSIONS if e != 'happy')
_NOT_HAPPY_P = tuple(p / (1.0 - _EXPRESSION_P[3])
                     for e, p in zip(EXPRESSIONS, _EXPRESSION_P)
                     if e != 'happy')

# Continuous identity traits: (female_lo, female_hi, male_lo, male_hi).
# Units: *_width/height in canvas widths, eye/nose/mouth sizes relative to the
# face half-width (a) or half-height (b), the rest unitless. Children inherit
# the parents' relative position inside their own gender's range, so a
# father's square jaw gives a daughter a squarish (female-range) jaw.
_TRAITS = {
    # Narrow ranges: head size is also the main age cue of children.
    'face_width': (0.202, 0.22, 0.216, 0.234),
    'face_height': (0.268, 0.286, 0.278, 0.296),
    'hairline': (0.56, 0.66, 0.58, 0.68),
    'jaw': (2.0, 2.5, 2.5, 3.3),
    'chin_taper': (0.12, 0.3, 0.04, 0.18),
    'eye_spacing': (0.36, 0.46, 0.36, 0.46),
    'eye_size': (0.19, 0.24, 0.18, 0.23),
    'eye_open': (0.8, 1.2, 0.75, 1.1),
    'eye_height': (-0.03, 0.03, -0.03, 0.03),
    'brow_thickness': (0.045, 0.065, 0.06, 0.09),
    'brow_arch': (0.3, 1.0, 0.0, 0.6),
    'nose_length': (0.33, 0.42, 0.36, 0.46),
    'nose_width': (0.15, 0.22, 0.18, 0.28),
    'nose_point': (0.0, 1.0, 0.0, 1.0),
    'mouth_width': (0.36, 0.46, 0.38, 0.48),
    'lip_thickness': (0.045, 0.08, 0.035, 0.065),
    'chubby': (0.0, 1.0, 0.0, 1.0),
    'cheekbones': (0.0, 1.0, 0.0, 1.0),
    'balding': (0.0, 0.4, 0.0, 1.0),
    'hair_length': (0.5, 1.0, 0.0, 0.3),
    'hair_volume': (0.03, 0.1, 0.0, 0.05),
    'hair_wavy': (0.0, 1.0, 0.0, 1.0),
    'grey_onset': (-3.0, 3.0, -3.0, 3.0),
    'attractive': (0.0, 1.0, 0.0, 1.0),
}
# Spread of a child's trait around the parents' mean, as a fraction of range.
_INHERIT_NOISE = 0.12

# Face coordinates are designed for a head about half the image tall; scaled
# up a little so that the face fills more of a small (32 px) input.
_HEAD_SCALE = 1.12

_FACE_FIELDS = (
    'age', 'hair_grey', 'hair_colour', 'recede', 'bald', 'expression',
    'smile', 'mouth_open', 'bangs', 'beard', 'eyeglasses', 'glasses_round',
    'glasses_rgb', 'earrings', 'lipstick', 'makeup', 'necklace', 'necktie',
    'rosy', 'blur', 'bg_rgb', 'cloth_rgb', 'shift', 'scale', 'rotation',
    'brightness', 'contrast', 'noise', 'noise_seed',
)


def _clip01(x: float) -> float:
  return min(1.0, max(0.0, x))


def _lerp(a, b, t):
  return a + (b - a) * t


def _smooth(t: float) -> float:
  t = _clip01(t)
  return t * t * (3.0 - 2.0 * t)


def _rgb(c) -> tuple[int, int, int]:
  r, g, b = c
  return (int(min(255.0, max(0.0, r)) + 0.5),
          int(min(255.0, max(0.0, g)) + 0.5),
          int(min(255.0, max(0.0, b)) + 0.5))


def _floats(c) -> list[float]:
  return [round(float(v), 2) for v in c]


# ----------------------------------------------------------------------------
# Identities and faces.
# ----------------------------------------------------------------------------


def _trait_range(name: str, gender: int) -> tuple[float, float]:
  lo_f, hi_f, lo_m, hi_m = _TRAITS[name]
  return (lo_m, hi_m) if gender else (lo_f, hi_f)


def _skin_rgb(skin_group: int, light: float, jitter: np.ndarray) -> list:
  # One shared brightness shift plus a little per-channel tint; both small
  # against the gaps between groups so that the group stays recognisable.
  base = np.asarray(_SKIN_BASE[skin_group])
  return _floats(base * (1.0 + 0.05 * light) + 4.0 * jitter)


def _gendered(identity: dict, rng: np.random.Generator) -> None:
  """Draws the traits that only exist for one gender, in place."""
  male = identity['gender'] == 1
  style = int(rng.choice(len(BEARD_STYLES), p=_BEARD_P))
  sideburns = bool(rng.random() < 0.25)
  identity['beard_style'] = BEARD_STYLES[style] if male else 'none'
  identity['sideburns'] = sideburns and male


def sample_identity(
    rng: np.random.Generator,
    *,
    gender: Optional[int] = None,
    skin_group: Optional[int] = None,
) -> dict:
  """Samples the parameters that stay fixed for one person.

  Args:
    rng: random generator.
    gender: 0 female, 1 male; random if None.
    skin_group: 0..3 (light to dark skin); random if None.

  Returns:
    JSON-friendly dict of identity parameters, including 'gender' and
    'skin_group'.
  """
  g = int(rng.integers(2))
  s = int(rng.integers(4))
  gender = g if gender is None else int(gender)
  skin_group = s if skin_group is None else int(skin_group)
  identity = {'gender': gender, 'skin_group': skin_group}
  for name in _TRAITS:
    lo, hi = _trait_range(name, gender)
    identity[name] = round(float(lo + (hi - lo) * rng.random()), 4)
  light = float(rng.normal())
  identity['skin_light'] = round(light, 3)
  identity['skin_rgb'] = _skin_rgb(skin_group, light, rng.normal(size=3))
  hair = _NATURAL_HAIR[int(rng.choice(3, p=_HAIR_P[skin_group]))]
  identity['hair_natural'] = hair
  identity['hair_rgb'] = _floats(
      np.asarray(_HAIR_BASE[hair]) + rng.uniform(-12.0, 12.0, size=3)
  )
  eye = int(rng.choice(len(_EYE_COLOURS), p=_EYE_P[skin_group]))
  identity['eye_rgb'] = list(_EYE_COLOURS[eye])
  identity['detail_seed'] = int(rng.integers(2**31))
  _gendered(identity, rng)
  return identity


def inherit_identity(
    rng: np.random.Generator,
    parents: Sequence[dict],
    *,
    gender: Optional[int] = None,
) -> dict:
  """Samples a child of one or two parents.

  Continuous traits are the parents' mean (with one parent, pulled 35% of the
  way towards a random stranger standing in for the unknown other parent)
  plus a little noise; skin group, hair and eye colour come from one parent.

  Args:
    rng: random generator.
    parents: one or two identities from sample_identity/inherit_identity.
    gender: the child's gender; random if None.

  Returns:
    The child's identity dict.
  """
  if len(parents) not in (1, 2):
    raise ValueError(f'Expected 1 or 2 parents, got {len(parents)}.')
  g = int(rng.integers(2))
  gender = g if gender is None else int(gender)
  # The stranger is always drawn so that the random stream does not depend
  # on the number of parents.
  stranger = sample_identity(rng, skin_group=parents[0]['skin_group'])
  if len(parents) == 2:
    pool, weights = list(parents), (0.5, 0.5)
  else:
    pool, weights = [parents[0], stranger], (0.65, 0.35)
  child = {'gender': gender}
  for name in _TRAITS:
    pos = 0.0
    for parent, w in zip(pool, weights):
      lo, hi = _trait_range(name, parent['gender'])
      pos += w * (parent[name] - lo) / (hi - lo)
    pos = _clip01(pos + _INHERIT_NOISE * float(rng.normal()))
    lo, hi = _trait_range(name, gender)
    child[name] = round(lo + (hi - lo) * pos, 4)
  pick = parents[int(rng.integers(len(parents)))]
  child['skin_group'] = pick['skin_group']
  same = all(p['skin_group'] == pick['skin_group'] for p in parents)
  light = float(np.mean([p['skin_light'] for p in parents])) if same else 0.0
  light += 0.3 * float(rng.normal())
  child['skin_light'] = round(light, 3)
  child['skin_rgb'] = _skin_rgb(pick['skin_group'], light,
                                rng.normal(size=3))
  pick = parents[int(rng.integers(len(parents)))]
  child['hair_natural'] = pick['hair_natural']
  child['hair_rgb'] = _floats(
      np.asarray(pick['hair_rgb']) + rng.uniform(-6.0, 6.0, size=3)
  )
  child['eye_rgb'] = list(parents[int(rng.integers(len(parents)))]['eye_rgb'])
  child['detail_seed'] = int(rng.integers(2**31))
  _gendered(child, rng)
  return child


def _regender(identity: dict, gender: int) -> dict:
  """Moves an identity to the other gender, keeping relative traits."""
  out = dict(identity)
  out['gender'] = gender
  for name in _TRAITS:
    lo, hi = _trait_range(name, identity['gender'])
    pos = (identity[name] - lo) / (hi - lo)
    lo, hi = _trait_range(name, gender)
    out[name] = round(lo + (hi - lo) * pos, 4)
  _gendered(out, np.random.default_rng([identity['detail_seed'], gender]))
  return out


def _hair_grey(age: float, onset: float) -> float:
  # Greys from ~33 and keeps whitening up to ~90 so that the strongest cue at
  # low resolution stays informative over most of the adult range; 0.5 (the
  # Gray_Hair label) is reached at ~55.
  return _clip01((age - 33.0 - onset) / 57.0) ** 0.75


def _recede(age: float, gender: int, balding: float) -> float:
  if gender:
    return balding * _clip01((age - 40.0) / 35.0)
  return 0.3 * balding * _clip01((age - 55.0) / 40.0)


def sample_face(
    rng: np.random.Generator, identity: Optional[dict] = None, **overrides
) -> dict:
  """Samples one photo of a person: age, expression, accessories, nuisance.

  The random stream consumed does not depend on the overrides, so the same
  seed with a different `age=` gives the same photo of an older person.

  Args:
    rng: random generator.
    identity: the person (sample_identity); a new random one if None.
    **overrides: any field of the returned dict, e.g. age=70.0,
      expression='sad', smile=True, eyeglasses=False, hair_colour=...,
      gender=1. Derived fields follow them (hair greys with age, smile goes
      with the 'happy' expression, ...).

  Returns:
    Label dict: the identity parameters plus 'age' (float), 'gender',
    'hair_colour' (one of HAIR_COLOURS), 'smile', 'eyeglasses', 'bangs',
    'expression' (one of EXPRESSIONS) and more attributes and nuisance
    parameters. JSON-friendly.

  Raises:
    ValueError: unknown override keys or contradicting smile/expression.
  """
  if identity is None:
    identity = sample_identity(rng)
  unknown = set(overrides) - set(identity) - set(_FACE_FIELDS)
  if unknown:
    raise ValueError(f'Unknown face fields: {sorted(unknown)}.')
  face = dict(identity)
  if 'gender' in overrides and overrides['gender'] != face['gender']:
    face = _regender(face, int(overrides['gender']))
  # Draw everything up front, in a fixed order.
  age = float(rng.uniform(0.0, 100.0))
  expression = EXPRESSIONS[int(rng.choice(7, p=_EXPRESSION_P))]
  other_expression = _NOT_HAPPY[int(rng.choice(6, p=_NOT_HAPPY_P))]
  u = rng.random(16)
  face.update({
      'glasses_round': bool(u[15] < 0.5),
      'glasses_rgb': _floats(rng.choice(
          [(20.0, 20.0, 20.0), (90.0, 50.0, 30.0), (150.0, 150.0, 160.0),
           (120.0, 20.0, 30.0)])),
      'bg_rgb': _floats(rng.uniform(25.0, 235.0, size=3)),
      'cloth_rgb': _floats(rng.uniform(20.0, 230.0, size=3)),
      'shift': [round(float(v), 4)
                for v in rng.uniform(-0.035, 0.035, size=2)],
      # Small, so that the head size of children stays a clear age cue.
      'scale': round(float(rng.uniform(0.97, 1.03)), 4),
      'rotation': round(float(rng.uniform(-6.0, 6.0)), 3),
      # Mild enough that the skin group stays readable from the colour.
      'brightness': round(float(rng.uniform(0.9, 1.1)), 4),
      'contrast': round(float(rng.uniform(0.9, 1.08)), 4),
      'noise': round(float(rng.uniform(1.0, 6.0)), 3),
      'noise_seed': int(rng.integers(2**31)),
  })
  blur_radius = round(float(rng.uniform(0.7, 1.4)), 3)
  face.update(overrides)

  face['age'] = float(overrides.get('age', round(age, 2)))
  age = face['age']
  male = face['gender'] == 1
  # Smile and expression are one mouth: a smile is the 'happy' expression.
  if 'expression' in overrides:
    if overrides['expression'] not in EXPRESSIONS:
      raise ValueError(f'Unknown expression {overrides["expression"]!r}.')
    if 'smile' in overrides and bool(overrides['smile']) != (
        overrides['expression'] == 'happy'):
      raise ValueError('smile must be True exactly for expression "happy".')
  elif 'smile' in overrides:
    if overrides['smile']:
      expression = 'happy'
    elif expression == 'happy':
      expression = other_expression
    face['expression'] = expression
  else:
    face['expression'] = expression
  face['smile'] = face['expression'] == 'happy'
  if 'mouth_open' not in overrides:
    # Angry (bared teeth), fearful and surprised faces always open it.
    p_open = {'happy': 0.65, 'neutral': 0.15, 'sad': 0.15, 'disgusted': 0.6}
    face['mouth_open'] = bool(u[0] < p_open.get(face['expression'], 1.0))

  if 'hair_grey' not in overrides:
    face['hair_grey'] = round(_hair_grey(age, face['grey_onset']), 4)
  hair_colour = overrides.get('hair_colour')
  if hair_colour is not None:
    if hair_colour not in HAIR_COLOURS:
      raise ValueError(f'Unknown hair colour {hair_colour!r}.')
    if hair_colour == 'Gray_Hair':
      face['hair_grey'] = max(face['hair_grey'], 0.6)
    else:
      face['hair_natural'] = hair_colour
      face['hair_rgb'] = list(_HAIR_BASE[hair_colour])
      face['hair_grey'] = min(face['hair_grey'], 0.4)
  face['hair_colour'] = ('Gray_Hair' if face['hair_grey'] >= 0.5 else
                         face['hair_natural'])

  if 'recede' not in overrides:
    face['recede'] = round(_recede(age, face['gender'], face['balding']), 4)
  if overrides.get('bald'):
    face['recede'] = max(face['recede'], 0.9)
  face['bald'] = bool(face['recede'] >= 0.8)

  if 'bangs' not in overrides:
    p_bangs = 0.35 if age < 14 else (0.3 if not male else 0.12)
    face['bangs'] = bool(u[1] < p_bangs)
  face['bangs'] = bool(face['bangs'] and face['recede'] < 0.45)
  if 'beard' not in overrides:
    face['beard'] = face['beard_style'] if male and age >= 16 else 'none'
  if 'eyeglasses' not in overrides:
    face['eyeglasses'] = bool(u[2] < (0.3 if age > 50 else 0.12))
  adult = age >= 15
  defaults = {
      'earrings': not male and u[3] < 0.35,
      'lipstick': not male and adult and u[4] < 0.5,
      'necklace': u[6] < (0.25 if not male else 0.05),
      'necktie': male and age >= 18 and u[7] < 0.15,
      'rosy': u[8] < 0.1,
  }
  defaults['makeup'] = defaults['lipstick'] and u[5] < 0.6
  for key, value in defaults.items():
    if key not in overrides:
      face[key] = bool(value)
  if 'blur' not in overrides:
    face['blur'] = blur_radius if u[9] < 0.05 else 0.0
  return face


# ----------------------------------------------------------------------------
# Drawing.
# ----------------------------------------------------------------------------


# Drawing runs a few hundred small numpy ops per face, so the per-call
# overhead dominates: unit parameter vectors and curve bases are cached.
@functools.lru_cache(maxsize=None)
def _unit(n: int) -> np.ndarray:
  return np.linspace(0.0, 1.0, n)


@functools.lru_cache(maxsize=None)
def _circle(n: int) -> np.ndarray:
  t = np.linspace(0.0, 2.0 * math.pi, n)
  return np.stack([np.cos(t), np.sin(t)], axis=1)


@functools.lru_cache(maxsize=None)
def _bezier_basis(n: int) -> np.ndarray:
  t = _unit(n)
  return np.stack([(1 - t) ** 2, 2 * (1 - t) * t, t ** 2], axis=1)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 40,
             t0: float = 0.0, t1: float = 2.0 * math.pi) -> np.ndarray:
  """Points of an ellipse (or arc t0..t1; y points down)."""
  if t0 == 0.0 and t1 == 2.0 * math.pi:
    return _circle(n) * (rx, ry) + (cx, cy)
  t = t0 + (t1 - t0) * _unit(n)
  out = np.empty((n, 2))
  out[:, 0] = cx + rx * np.cos(t)
  out[:, 1] = cy + ry * np.sin(t)
  return out


def _bezier(p0, p1, p2, n: int = 12) -> np.ndarray:
  """Quadratic Bezier curve through n points."""
  return _bezier_basis(n) @ np.array((p0, p1, p2), dtype=float)


class _Pen:
  """Draws in face coordinates: rotated, scaled and shifted onto the canvas.

  Face coordinates are in canvas widths with the origin near the eye line;
  transforming the points (rather than rotating the image) keeps the drawing
  crisp and fast.
  """

  def __init__(self, draw: ImageDraw.ImageDraw, px: int, cx: float, cy: float,
               scale: float, degrees: float):
    rad = math.radians(degrees)
    c, s = math.cos(rad), math.sin(rad)
    self._draw = draw
    self._m = np.array([[c, s], [-s, c]]) * scale * px
    self._t = np.array([cx, cy]) * px
    self._unit = scale * px

  def _pts(self, xy: np.ndarray) -> list[float]:
    return (np.asarray(xy) @ self._m + self._t).ravel().tolist()

  def poly(self, xy: np.ndarray, fill) -> None:
    self._draw.polygon(self._pts(xy), fill=_rgb(fill))

  def line(self, xy: np.ndarray, fill, width: float) -> None:
    w = max(1, int(round(width * self._unit)))
    self._draw.line(self._pts(xy), fill=_rgb(fill), width=w, joint='curve')

  def ellipse(self, cx, cy, rx, ry, fill, n: int = 32) -> None:
    self.poly(_ellipse(cx, cy, rx, ry, n), fill)


@dataclasses.dataclass
class _Geo:
  """Resolved geometry and colours of one face (face coordinates)."""
  a: float  # Face half-width.
  b: float  # Eye line to chin.
  b_up: float  # Face centre to hairline.
  outline: np.ndarray  # Face outline (lower half first, right to left).
  skull: tuple[float, float, float]  # centre y, rx, ry of the hair cap.
  eye_y: float
  eye_dx: float
  ew: float
  eh: float
  brow_y: float
  nose_bottom: float
  nose_w: float
  mouth_y: float
  mw: float
  lip: float
  skin: np.ndarray
  hair: np.ndarray
  growth: float
  sag: float


# Eye openness, brow (all, inner, outer offsets in b; negative is up) and
# mouth (curve, opening, width factor, upper share of opening, teeth) per
# expression: each class differs from the others in at least two places.
_EYE_OPEN = {'angry': 0.7, 'disgusted': 0.45, 'fearful': 1.5, 'happy': 0.6,
             'neutral': 1.0, 'sad': 0.8, 'surprised': 1.6}
_BROW = {
    'angry': (0.04, 0.1, -0.04),
    'disgusted': (0.05, 0.03, 0.03),
    'fearful': (-0.08, -0.07, 0.03),
    'happy': (-0.02, 0.0, 0.0),
    'neutral': (0.0, 0.0, 0.0),
    'sad': (-0.01, -0.1, 0.05),
    'surprised': (-0.14, 0.0, 0.0),
}


def _geometry(face: dict) -> _Geo:
  age = face['age']
  # Linear in age (not eased) so that every year of childhood shows.
  growth = _clip01(age / 18.0)
  sag = _clip01((age - 45.0) / 55.0)
  head = _lerp(0.68, 1.0, growth)
  chubby = face['chubby']
  a = face['face_width'] * head * (1.0 + 0.06 * chubby)
  a *= _lerp(1.04, 1.0, growth)  # Round baby cheeks.
  b = face['face_height'] * head * _lerp(0.9, 1.0, growth)
  b_low = b * (1.0 + 0.05 * sag)
  b_up = b * _lerp(face['hairline'], 1.17, face['recede'])
  # Lower face: superellipse (square jaw for large exponents), tapered to a
  # chin, with jowls bulging out as the face sags; upper face: ellipse up to
  # the hairline.
  n = _lerp(2.1, face['jaw'], growth) + 0.4 * chubby
  t = np.linspace(0.0, math.pi, 48)
  ct, st = np.cos(t), np.sin(t)
  x = a * np.sign(ct) * np.abs(ct) ** (2.0 / n)
  y = np.abs(st) ** (2.0 / n)
  taper = face['chin_taper'] * growth * (1.0 - 0.5 * chubby)
  x *= 1.0 - taper * y ** 2
  x *= 1.0 + 0.09 * sag * np.exp(-(((y - 0.78) / 0.14) ** 2))
  lower = np.stack([x, b_low * y], axis=1)
  t = np.linspace(math.pi, 2.0 * math.pi, 33)[1:-1]
  upper = np.stack([a * np.cos(t), b_up * np.sin(t)], axis=1)
  outline = np.concatenate([lower, upper])

  skull_ry = b * (1.0 + face['hair_volume']) * _lerp(1.1, 1.0, growth)
  skull_rx = a * (1.05 + face['hair_volume']) * _lerp(1.04, 1.0, growth)
  skull = (-0.14 * b, skull_rx, skull_ry)

  eye_y = b * (_lerp(0.1, -0.06, growth) + face['eye_height'])
  eye_dx = a * face['eye_spacing'] * _lerp(1.05, 1.0, growth)
  ew = a * face['eye_size'] * _lerp(1.45, 1.0, growth)
  eh = 0.45 * ew * face['eye_open'] * (1.0 - 0.15 * sag)
  brow_y = eye_y - 0.45 * ew * face['eye_open'] - 0.12 * b
  nose_len = b * face['nose_length'] * _lerp(0.7, 1.0, growth)
  nose_bottom = eye_y + nose_len
  nose_w = a * face['nose_width'] * _lerp(0.8, 1.0, growth)
  mouth_y = nose_bottom + b * (_lerp(0.16, 0.2, growth) + 0.03 * sag)
  mw = a * face['mouth_width'] * _lerp(0.8, 1.0, growth)
  lip = b * face['lip_thickness'] * (1.0 - 0.25 * sag)

  skin = np.asarray(face['skin_rgb'], dtype=float)
  # Children's skin is a little pinker, old skin duller and yellower.
  skin = skin * _lerp(1.04, 1.0, growth)
  dull = _clip01((age - 40.0) / 50.0)
  skin = skin * (1.0 - 0.07 * dull) + np.array([4.0, 2.0, -6.0]) * dull
  natural = np.asarray(face['hair_rgb'], dtype=float)
  g = face['hair_grey']
  grey = np.full(3, 150.0 + 100.0 * g) - np.array([0.0, 0.0, 4.0])
  hair = natural * (1.0 - g) + grey * g
  return _Geo(a=a, b=b, b_up=b_up, outline=outline, skull=skull,
              eye_y=eye_y, eye_dx=eye_dx, ew=ew, eh=eh, brow_y=brow_y,
              nose_bottom=nose_bottom, nose_w=nose_w, mouth_y=mouth_y, mw=mw,
              lip=lip, skin=skin, hair=hair, growth=growth, sag=sag)


def _draw_body(pen: _Pen, face: dict, geo: _Geo) -> None:
  a, b = geo.a, geo.b
  cloth = np.asarray(face['cloth_rgb'])
  # Children: big head on narrow shoulders and a short neck.
  wide = _lerp(0.72, 1.0, geo.growth)
  top = _lerp(1.08, 1.2, geo.growth) * b
  shoulder = _bezier((0.4 * a, top), (1.7 * a * wide, top + 0.05 * b),
                     (2.1 * a * wide, top + 0.7 * b), 10)
  body = np.concatenate([
      shoulder * [-1.0, 1.0], [[-2.3 * a, 5.0 * b], [2.3 * a, 5.0 * b]],
      shoulder[::-1]])
  pen.poly(body, cloth)
  if face['necktie']:
    pen.poly([[-0.42 * a, 1.18 * b], [0.0, 1.5 * b], [0.42 * a, 1.18 * b]],
             (235, 235, 235))
  else:
    pen.poly(_ellipse(0.0, 1.2 * b, 0.42 * a, 0.28 * b, 16, 0.0, math.pi),
             geo.skin * 0.9)


def _draw_back_hair(pen: _Pen, face: dict, geo: _Geo) -> None:
  """Long hair: two curtains behind the head falling to the shoulders."""
  length = face['hair_length']
  if length < 0.35 or face['recede'] > 0.8:
    return
  cy, rx, _ = geo.skull
  b = geo.b
  y_end = cy + (0.8 + 1.7 * length) * b
  ys = np.linspace(cy, y_end, 12)
  t = (ys - cy) / (y_end - cy)
  wave = 0.06 * geo.a * face['hair_wavy'] * np.sin(t * 4.0 * math.pi)
  outer = rx + 0.1 * geo.a * t + wave
  inner = np.full_like(ys, 0.55 * geo.a) + wave
  colour = geo.hair * 0.85
  for side in (-1.0, 1.0):
    pts = np.concatenate([
        np.stack([side * outer, ys], axis=1),
        np.stack([side * inner, ys], axis=1)[::-1]])
    pen.poly(pts, colour)


def _draw_neck(pen: _Pen, face: dict, geo: _Geo) -> None:
  a, b = geo.a, geo.b
  shade = geo.skin * 0.88
  pen.poly([[-0.4 * a, 0.5 * b], [0.4 * a, 0.5 * b], [0.43 * a, 1.3 * b],
            [-0.43 * a, 1.3 * b]], shade)
  if face['necktie']:
    pen.poly([[-0.38 * a, 1.18 * b], [0.0, 1.42 * b], [0.38 * a, 1.18 * b]],
             (235, 235, 235))
    tie = np.asarray(face['cloth_rgb'])[::-1] * 0.7
    pen.poly([[-0.07 * a, 1.33 * b], [0.07 * a, 1.33 * b],
              [0.12 * a, 2.2 * b], [0.0, 2.4 * b], [-0.12 * a, 2.2 * b]], tie)
  if face['age'] > 50:
    dark = 0.25 * _clip01((face['age'] - 50.0) / 35.0)
    for k in range(2):
      y = (0.85 + 0.15 * k) * b
      pen.line(_bezier((-0.3 * a, y), (0.0, y + 0.05 * b), (0.3 * a, y), 8),
               shade * (1.0 - dark), 0.005)
  if face['necklace']:
    gold = (215, 175, 70) if face['noise_seed'] % 2 else (200, 200, 210)
    pen.line(_bezier((-0.43 * a, 1.17 * b), (0.0, 1.55 * b),
                     (0.43 * a, 1.17 * b), 12), gold, 0.007)
    pen.ellipse(0.0, 1.37 * b, 0.04 * a, 0.04 * a, gold, 10)


def _draw_head(pen: _Pen, face: dict, geo: _Geo) -> None:
  """Ears, hair cap, face, sideburns."""
  a, b = geo.a, geo.b
  ear_y = geo.eye_y + 0.12 * b
  cy, rx, ry = geo.skull
  cap = geo.hair
  # Thinning hair lets the scalp show through; babies have little hair.
  thin = 0.3 * face['recede'] + 0.6 * _clip01((3.0 - face['age']) / 3.0)
  cap = cap * (1.0 - thin) + geo.skin * thin
  pen.ellipse(0.0, cy, rx, ry, cap, 48)
  # Ears over the cap: short hair ends above them, long hair is tucked
  # behind them.
  for side in (-1.0, 1.0):
    pen.ellipse(side * 0.97 * a, ear_y, 0.13 * a, 0.22 * b, geo.skin * 0.93,
                20)
    pen.line(_ellipse(0.99 * a, ear_y, 0.06 * a, 0.12 * b, 8,
                      -0.5 * math.pi, 0.5 * math.pi) * [side, 1.0],
             geo.skin * 0.75, 0.004)
  pen.poly(geo.outline, geo.skin)
  if face['sideburns'] and face['recede'] < 0.8:
    for side in (-1.0, 1.0):
      pen.poly([[side * 1.0 * a, -0.35 * b], [side * 0.86 * a, -0.3 * b],
                [side * 0.9 * a, 0.22 * b], [side * 0.99 * a, 0.18 * b]],
               geo.hair * 0.9)
  if face['earrings']:
    metal = (215, 175, 70) if face['detail_seed'] % 2 else (205, 205, 215)
    for side in (-1.0, 1.0):
      pen.ellipse(side * 1.0 * a, ear_y + 0.24 * b, 0.05 * a, 0.05 * a,
                  metal, 10)


def _draw_cheeks(pen: _Pen, face: dict, geo: _Geo) -> None:
  a, b = geo.a, geo.b
  y = geo.nose_bottom - 0.08 * b
  if face['rosy'] or face['makeup']:
    blush = geo.skin * 0.65 + np.array([235.0, 110.0, 115.0]) * 0.35
    for side in (-1.0, 1.0):
      pen.ellipse(side * 0.58 * a, y, 0.17 * a, 0.1 * b, blush, 16)
  if face['cheekbones'] > 0.6:
    shade = geo.skin * 0.9
    for side in (-1.0, 1.0):
      pen.line(_bezier((side * 0.85 * a, geo.eye_y + 0.15 * b),
                       (side * 0.7 * a, y + 0.05 * b),
                       (side * 0.5 * a, y + 0.14 * b), 8), shade, 0.006)


def _draw_age_lines(pen: _Pen, face: dict, geo: _Geo,
                    rng: np.random.Generator) -> None:
  """Wrinkles, folds, bags, jowls and spots; all grow with age."""
  age = face['age']
  a, b, skin = geo.a, geo.b, geo.skin
  # Nasolabial folds from 18, darkening steadily to 80.
  fold = _clip01((age - 18.0) / 77.0)
  if fold > 0:
    col = skin * (1.0 - (0.08 + 0.4 * fold))
    for side in (-1.0, 1.0):
      pen.line(_bezier(
          (side * (geo.nose_w + 0.06 * a), geo.nose_bottom - 0.08 * b),
          (side * (geo.mw + 0.12 * a), geo.mouth_y - 0.12 * b),
          (side * (geo.mw + 0.08 * a), geo.mouth_y + 0.12 * b), 10),
               col, 0.005 + 0.006 * fold)
  # Forehead lines from 28: one more about every ten years, darker with age.
  lines = _clip01((age - 28.0) / 66.0)
  if lines > 0:
    count = int(math.ceil(lines * 6))
    dark = 0.12 + 0.43 * lines
    col = skin * (1.0 - dark)
    y_bot = geo.brow_y - 0.09 * b
    top = -geo.b_up + 0.06 * b
    for k in range(count):
      y = y_bot - k * 0.065 * b
      if y < top:
        break
      half = 0.55 * a * math.sqrt(max(0.05, 1.0 - (y / geo.b_up) ** 2))
      xs = np.linspace(-half, half, 9)
      ys = y + 0.05 * b * (xs / half) ** 2 + 0.01 * b * rng.normal(size=9)
      pen.line(np.stack([xs, ys], axis=1), col, 0.007 + 0.006 * lines)
    if face['expression'] == 'angry' or age > 60:
      for side in (-1.0, 1.0):
        x = side * 0.08 * a
        pen.line([[x, geo.brow_y - 0.02 * b], [x * 0.8, geo.brow_y + 0.1 * b]],
                 col, 0.005)
  # Crow's feet from 36.
  crow = _clip01((age - 36.0) / 56.0)
  if crow > 0:
    col = skin * (1.0 - 0.1 - 0.35 * crow)
    for side in (-1.0, 1.0):
      x0 = side * (geo.eye_dx + geo.ew * 1.15)
      for k in (-1, 0, 1):
        length = (0.05 + 0.09 * crow) * a
        pen.line([[x0, geo.eye_y + k * 0.03 * b],
                  [x0 + side * length, geo.eye_y + k * 0.08 * b]],
                 col, 0.004 + 0.003 * crow)
  # Bags under the eyes from 45.
  bags = _clip01((age - 45.0) / 50.0)
  if bags > 0:
    col = skin * (1.0 - 0.1 - 0.3 * bags)
    for side in (-1.0, 1.0):
      x = side * geo.eye_dx
      pen.line(_ellipse(x, geo.eye_y + geo.eh * 0.8, geo.ew * 0.9,
                        geo.eh + 0.06 * b, 9, 0.15 * math.pi, 0.85 * math.pi),
               col, 0.005)
  # Sagging: jowl and marionette lines, a double chin.
  if geo.sag > 0:
    col = skin * (1.0 - 0.1 - 0.35 * geo.sag)
    width = 0.005 + 0.004 * geo.sag
    for side in (-1.0, 1.0):
      pen.line(_bezier((side * geo.mw * 1.1, geo.mouth_y + 0.05 * b),
                       (side * geo.mw * 1.25, geo.mouth_y + 0.25 * b),
                       (side * geo.mw * 1.05, 0.88 * b), 8), col, width)
      pen.line(_bezier((side * 0.92 * a, 0.2 * b), (side * 0.8 * a, 0.6 * b),
                       (side * 0.62 * a, 0.78 * b), 8), col, width)
      # Cheek creases, one more every ~12 years after 60.
      for k in range(int(max(0.0, (age - 58.0) / 12.0))):
        x = side * (0.5 + 0.1 * k) * a
        pen.line(_bezier((x, geo.nose_bottom - 0.05 * b),
                         (x + side * 0.06 * a, geo.mouth_y),
                         (x, geo.mouth_y + 0.2 * b), 6), col, 0.5 * width)
  if face['chubby'] > 0.6 and age > 40:
    pen.line(_bezier((-0.3 * a, 1.02 * b), (0.0, 1.16 * b),
                     (0.3 * a, 1.02 * b), 8), skin * 0.8, 0.006)
  # Age spots from 60.
  spots = int(max(0.0, (age - 60.0) / 5.0))
  for _ in range(spots):
    x, y = rng.uniform(-0.6, 0.6) * a, rng.uniform(-0.5, 0.3) * b
    r = rng.uniform(0.02, 0.035) * a
    pen.ellipse(x, y, r, r, skin * 0.78, 8)


def _draw_beard(pen: _Pen, face: dict, geo: _Geo) -> None:
  style = face['beard']
  if style == 'none':
    return
  a, b, skin = geo.a, geo.b, geo.skin
  beard = geo.hair * 0.85
  nb, my, mw = geo.nose_bottom, geo.mouth_y, geo.mw
  if style in ('stubble', 'full'):
    y0 = geo.eye_y + 0.5 * (nb - geo.eye_y)
    lower = geo.outline[:48]
    rim = lower[lower[:, 1] >= y0]
    inner = np.array([[-0.78 * a, y0], [-0.45 * a, nb - 0.02 * b],
                      [-0.15 * a, nb + 0.04 * b], [0.15 * a, nb + 0.04 * b],
                      [0.45 * a, nb - 0.02 * b], [0.78 * a, y0]])
    mix = 0.35 if style == 'stubble' else 0.9
    pen.poly(np.concatenate([rim, inner]), skin * (1 - mix) + beard * mix)
    return
  if style == 'goatee':
    top = my - 2.0 * geo.lip
    bottom = 0.98 * b
    pen.ellipse(0.0, 0.5 * (top + bottom), mw * 1.1, 0.5 * (bottom - top),
                beard, 24)
  xs = np.linspace(-1.15, 1.15, 11) * mw
  top = np.full_like(xs, nb + 0.04 * b)
  bottom = my - 0.3 * geo.lip + 0.1 * b * (xs / mw) ** 2
  pen.poly(np.concatenate([np.stack([xs, top], 1),
                           np.stack([xs, bottom], 1)[::-1]]), beard)


def _disc_between(cx: float, cy: float, r: float, xs: np.ndarray,
                  upper: np.ndarray, lower: np.ndarray,
                  n: int = 13) -> Optional[np.ndarray]:
  """A disc clipped between two curves y=upper(x), y=lower(x) (x ascending).

  Returns:
    Polygon points, or None if less than a sliver is visible.
  """
  x = cx + np.linspace(-r, r, n)
  half = np.sqrt(np.maximum(0.0, r * r - (x - cx) ** 2))
  top = np.maximum(cy - half, np.interp(x, xs, upper))
  bottom = np.minimum(cy + half, np.interp(x, xs, lower))
  keep = bottom > top
  if keep.sum() < 3:
    return None
  x, top, bottom = x[keep], top[keep], bottom[keep]
  return np.concatenate([np.stack([x, top], 1),
                         np.stack([x, bottom], 1)[::-1]])


def _draw_eyes(pen: _Pen, face: dict, geo: _Geo) -> None:
  expr = face['expression']
  ew = geo.ew
  eh = geo.eh * _EYE_OPEN[expr]
  # Smiling cheeks push the lower lid up.
  low = 0.5 if expr == 'happy' else 0.8
  xs = np.linspace(-1.0, 1.0, 15)
  up = -eh * (1.0 - xs ** 2) ** 0.7
  lo = eh * low * (1.0 - xs ** 2) ** 0.9
  lash = (25, 18, 18)
  young = 1.0 - geo.growth
  for side in (-1.0, 1.0):
    cx, cy = side * geo.eye_dx, geo.eye_y
    tilt = -0.06 * ew * xs * side  # Outer corners slightly up.
    px = cx + xs * ew
    if face['makeup']:
      shadow = geo.skin * 0.55 + np.array([110.0, 80.0, 140.0]) * 0.45
      pen.poly(np.concatenate([
          np.stack([px, cy + up + tilt - 0.35 * ew], 1),
          np.stack([px, cy + up + tilt], 1)[::-1]]), shadow)
    white = np.concatenate([np.stack([px, cy + up + tilt], 1),
                            np.stack([px, cy + lo + tilt], 1)[::-1]])
    pen.poly(white, (240, 238, 232))
    # Iris and pupil: discs clipped to the lids.
    ri = ew * (0.5 + 0.08 * young)
    iris = _disc_between(cx, cy, ri, px, cy + up + tilt, cy + lo + tilt)
    if iris is not None:
      pen.poly(iris, face['eye_rgb'])
      pupil = _disc_between(cx, cy, 0.45 * ri, px, cy + up + tilt,
                            cy + lo + tilt)
      if pupil is not None:
        pen.poly(pupil, (10, 8, 8))
      hl = ri * (0.18 + 0.1 * young)
      if eh > 0.4 * ri:
        pen.ellipse(cx + 0.3 * ri, cy - 0.3 * ri, hl, hl, (250, 250, 250), 8)
    lash_w = 0.006 + (0.004 if face['gender'] == 0 else 0.0)
    pen.line(np.stack([px, cy + up + tilt], 1), lash, lash_w)
    pen.line(np.stack([px, cy + lo + tilt], 1), geo.skin * 0.7, 0.003)
    if face['age'] > 45:
      # Heavy upper lid fold.
      fold = _clip01((face['age'] - 45.0) / 40.0)
      pen.line(np.stack([px * 0.95 + cx * 0.05,
                         cy + up * 1.2 - 0.1 * ew + tilt], 1)[2:-1],
               geo.skin * (0.85 - 0.2 * fold), 0.004)


def _draw_brows(pen: _Pen, face: dict, geo: _Geo) -> None:
  expr = face['expression']
  all_dy, in_dy, out_dy = (v * geo.b for v in _BROW[expr])
  arch = (0.02 + 0.05 * face['brow_arch']) * geo.b
  if expr == 'surprised':
    arch += 0.03 * geo.b
  t = np.linspace(0.0, 1.0, 7)
  x_in = geo.eye_dx - 0.95 * geo.ew
  x_out = geo.eye_dx + 1.15 * geo.ew
  if expr in ('fearful', 'angry'):
    x_in -= 0.1 * geo.ew  # Pulled together.
  xs = x_in + t * (x_out - x_in)
  ys = (geo.brow_y + all_dy + in_dy * (1 - t) + out_dy * t
        - arch * np.sin(math.pi * np.minimum(1.0, t * 1.15)))
  # Brows grey with the hair but stay darker.
  natural = np.asarray(face['hair_rgb'], dtype=float)
  colour = (natural * 0.7 * (1 - face['hair_grey']) +
            np.full(3, 200.0) * face['hair_grey'])
  if face['skin_group'] < 2 and face['hair_natural'] == 'Blond_Hair':
    colour = colour * 0.8
  width = face['brow_thickness'] * geo.a
  for side in (-1.0, 1.0):
    pen.line(np.stack([side * xs, ys], 1), colour, width)


def _draw_nose(pen: _Pen, face: dict, geo: _Geo) -> None:
  nb, nw, b = geo.nose_bottom, geo.nose_w, geo.b
  shade = geo.skin * 0.78
  pen.line(_bezier((0.15 * nw, geo.eye_y + 0.1 * b),
                   (0.35 * nw, nb - 0.2 * b), (0.4 * nw, nb - 0.08 * b), 8),
           geo.skin * 0.88, 0.004)
  tip = 0.05 * b * (0.5 + face['nose_point'])
  pen.line(_bezier((-nw, nb - 0.05 * b), (0.0, nb + tip), (nw, nb - 0.05 * b),
                   10), shade, 0.006)
  for side in (-1.0, 1.0):
    pen.ellipse(side * 0.45 * nw, nb - 0.02 * b, 0.18 * nw, 0.025 * b,
                geo.skin * 0.5, 10)
    pen.line(_bezier((side * 0.9 * nw, nb - 0.15 * b),
                     (side * 1.15 * nw, nb - 0.05 * b),
                     (side * 0.8 * nw, nb - 0.02 * b), 6), shade, 0.005)
  if face['expression'] == 'disgusted':
    # Wrinkled nose bridge.
    for k in range(3):
      y = geo.eye_y + (0.08 + 0.05 * k) * b
      pen.line([[-0.3 * nw, y], [0.3 * nw, y - 0.01 * b]], shade, 0.004)


# curve (corners up), opening, width, upper share of opening, teeth rows.
_MOUTH = {
    'angry': (-0.06, 0.4, 1.0, 0.5, 2),
    'disgusted': (-0.15, 0.0, 0.85, 0.85, 1),
    'fearful': (-0.14, 0.6, 1.2, 0.3, 1),
    'happy': (0.5, 0.0, 1.2, 0.12, 1),
    'neutral': (0.02, 0.0, 1.0, 0.3, 0),
    'sad': (-0.4, 0.0, 0.95, 0.3, 0),
    'surprised': (0.0, 1.1, 0.6, 0.45, 0),
}


def _draw_mouth(pen: _Pen, face: dict, geo: _Geo) -> None:
  expr = face['expression']
  curve, opening, width, upper_share, teeth = _MOUTH[expr]
  if face['mouth_open'] and opening == 0.0:
    opening = {'happy': 0.45, 'disgusted': 0.3}.get(expr, 0.15)
  elif not face['mouth_open']:
    opening = 0.0
  mw = geo.mw * width
  xs = np.linspace(-1.0, 1.0, 17)
  base = geo.mouth_y - curve * geo.mw * xs ** 2
  if expr == 'disgusted':
    base = base - 0.08 * geo.b * np.maximum(xs, 0.0)  # One-sided sneer.
  if face['lipstick']:
    palette = ((190, 30, 50), (200, 70, 110), (120, 30, 60))
    lips = np.asarray(palette[face['detail_seed'] % 3], dtype=float)
  else:
    lips = geo.skin * np.array([0.9, 0.62, 0.62]) + np.array([20.0, 0.0, 0.0])
  x = xs * mw
  env = (1.0 - xs ** 2)
  lip = geo.lip * (0.7 if expr == 'angry' else 1.0)
  height = opening * geo.mw * 0.9
  y_up = base - height * upper_share * env ** 0.7
  y_lo = base + height * (1.0 - upper_share) * env ** 0.7
  if opening > 0:
    pen.poly(np.concatenate([np.stack([x, y_up], 1),
                             np.stack([x, y_lo], 1)[::-1]]), (70, 22, 30))
    if teeth:
      t_lo = y_up + (y_lo - y_up) * (0.45 if teeth == 1 else 1.0)
      pen.poly(np.concatenate([np.stack([x, y_up], 1)[1:-1],
                               np.stack([x, t_lo], 1)[-2:0:-1]]),
               (238, 234, 222))
      if teeth == 2:
        pen.line(np.stack([x, 0.5 * (y_up + y_lo)], 1)[2:-2], (150, 140, 130),
                 0.003)
  # Cupid's bow: the upper lip dips in the middle.
  bow = 1.0 - 0.35 * np.exp(-(xs / 0.2) ** 2)
  upper_lip = np.concatenate([np.stack([x, y_up - lip * env ** 0.5 * bow], 1),
                              np.stack([x, y_up], 1)[::-1]])
  lower_lip = np.concatenate([np.stack([x, y_lo], 1),
                              np.stack([x, y_lo + lip * 1.25 * env ** 0.6],
                                       1)[::-1]])
  pen.poly(upper_lip, lips * 0.88)
  pen.poly(lower_lip, lips)
  if opening == 0:
    pen.line(np.stack([x, base], 1), lips * 0.4, 0.009)
  if expr == 'happy':
    # Dimples at the corners of a smile.
    for side in (-1.0, 1.0):
      cx = side * (mw + 0.02 * geo.a)
      cy = geo.mouth_y - curve * geo.mw
      pen.line([[cx, cy - 0.05 * geo.b], [cx + side * 0.02 * geo.a,
                                           cy + 0.04 * geo.b]],
               geo.skin * 0.75, 0.005)


def _draw_bangs(pen: _Pen, face: dict, geo: _Geo) -> None:
  cy, rx, ry = geo.skull
  a, b = geo.a, geo.b
  xf = 0.92 * a
  t_l = 2.0 * math.pi - math.acos(-xf / rx)
  t_r = 3.0 * math.pi - t_l
  arc = _ellipse(0.0, cy, rx, ry, 20, t_l, t_r)
  y_f = geo.brow_y - 0.08 * b
  xs = np.linspace(xf, -xf, 15)
  zig = y_f - 0.05 * b * (np.arange(15) % 2)
  fringe = np.concatenate([arc, np.stack([xs, zig], 1)])
  pen.poly(fringe, geo.hair)
  strand = geo.hair * 0.72
  for k in range(1, 14, 2):
    pen.line([[xs[k] * 0.8, -geo.b_up - 0.1 * b], [xs[k], zig[k] - 0.01 * b]],
             strand, 0.003)


def _draw_hair_strands(pen: _Pen, face: dict, geo: _Geo,
                       rng: np.random.Generator) -> None:
  """Partings and strands on the cap: straight or wavy."""
  if face['recede'] > 0.5 or face['age'] < 2:
    return
  cy, rx, ry = geo.skull
  wavy = face['hair_wavy']
  colour = geo.hair * 0.7 + 8.0
  part = rx * rng.uniform(-0.4, 0.4)
  top = (part, cy - ry * 0.92)
  for k in range(8):
    side = -1.0 if k % 2 else 1.0
    reach = 0.4 + 0.15 * (k // 2)
    end = (side * rx * min(0.97, reach + 0.3), cy - ry * (0.55 - 0.35 * reach))
    ctrl = (side * rx * reach, cy - ry * 0.95)
    pts = _bezier(top, ctrl, end, 10)
    if wavy > 0.5:
      pts = pts.copy()
      pts[:, 1] += 0.025 * geo.b * wavy * np.sin(np.linspace(0, 4 * math.pi,
                                                              10))
    pen.line(pts, colour, 0.004)


def _draw_glasses(pen: _Pen, face: dict, geo: _Geo) -> None:
  colour = face['glasses_rgb']
  ew = geo.ew
  width = 0.011
  rx, ry = ew * 1.55, ew * 1.15
  for side in (-1.0, 1.0):
    cx = side * geo.eye_dx
    if face['glasses_round']:
      rim = _ellipse(cx, geo.eye_y, rx, ry, 28)
    else:
      t = np.linspace(0.0, 2.0 * math.pi, 28)
      c, s = np.cos(t), np.sin(t)
      rim = np.stack([cx + rx * np.sign(c) * np.abs(c) ** 0.5,
                      geo.eye_y + ry * np.sign(s) * np.abs(s) ** 0.5], 1)
    pen.line(np.concatenate([rim, rim[:1]]), colour, width)
    pen.line([[cx + side * rx, geo.eye_y - 0.3 * ry],
              [side * 1.0 * geo.a, geo.eye_y - 0.2 * ry]], colour, width * 0.8)
  bridge = geo.eye_dx - rx
  pen.line(_bezier((-bridge, geo.eye_y - 0.2 * ry), (0.0, geo.eye_y - 0.5 * ry),
                   (bridge, geo.eye_y - 0.2 * ry), 6), colour, width * 0.8)


def render_face(
    face: dict, size: int = 128, rng: Optional[np.random.Generator] = None
) -> np.ndarray:
  """Draws a face.

  Args:
    face: label dict from sample_face.
    size: output height and width in pixels.
    rng: generator for pixel noise; defaults to one seeded by
      face['noise_seed'], so the image is a function of the face alone.

  Returns:
    uint8 array [size, size, 3].
  """
  if rng is None:
    rng = np.random.default_rng(face['noise_seed'])
  detail = np.random.default_rng([face['detail_seed'], face['noise_seed']])
  big = 2 * size  # Drawn at 2x, then box-filtered down: cheap anti-aliasing.
  img = Image.new('RGB', (big, big), _rgb(face['bg_rgb']))
  geo = _geometry(face)
  pen = _Pen(ImageDraw.Draw(img), big, 0.5 + face['shift'][0],
             0.47 + face['shift'][1], _HEAD_SCALE * face['scale'],
             face['rotation'])
  _draw_body(pen, face, geo)
  _draw_back_hair(pen, face, geo)
  _draw_neck(pen, face, geo)
  _draw_head(pen, face, geo)
  _draw_cheeks(pen, face, geo)
  _draw_age_lines(pen, face, geo, detail)
  _draw_beard(pen, face, geo)
  _draw_eyes(pen, face, geo)
  _draw_nose(pen, face, geo)
  _draw_mouth(pen, face, geo)
  if face['bangs']:
    _draw_bangs(pen, face, geo)
  _draw_hair_strands(pen, face, geo, detail)
  _draw_brows(pen, face, geo)
  if face['eyeglasses']:
    _draw_glasses(pen, face, geo)
  img = img.reduce(2)
  if face['blur'] > 0:
    img = img.filter(ImageFilter.GaussianBlur(face['blur'] * size / 128.0))
  # Contrast around mid-grey, then brightness, then noise: uniform noise
  # with the requested standard deviation is several times cheaper than
  # Gaussian noise and just as good a nuisance.
  gain = face['contrast'] * face['brightness']
  offset = 128.0 * (1.0 - face['contrast']) * face['brightness'] + 0.5
  noise = rng.random((size, size, 3), dtype=np.float32)
  out = np.asarray(img, dtype=np.float32) * gain
  out += noise * (face['noise'] * math.sqrt(12.0)) + (
      offset - 0.5 * math.sqrt(12.0) * face['noise'])
  return np.clip(out, 0.0, 255.0, out=out).astype(np.uint8)


def _relative(face: dict, name: str) -> float:
  """Position of a trait inside its gender's range, 0..1."""
  lo, hi = _trait_range(name, face['gender'])
  return (face[name] - lo) / (hi - lo)


def celeba_attributes(face: dict) -> np.ndarray:
  """The 40 CelebA attributes of a face.

  Args:
    face: label dict from sample_face.

  Returns:
    int8 [40] in {-1, +1}, in CELEBA_ATTRIBUTES order. Exactly one of the
    four hair colours is +1; Wearing_Hat is always -1 (no hats are drawn);
    Attractive is an undrawn identity trait.
  """
  age = face['age']
  beard = face['beard']
  hair = face['hair_colour']
  on = {
      '5_o_Clock_Shadow': beard == 'stubble',
      'Arched_Eyebrows': face['brow_arch'] > 0.6,
      'Attractive': face['attractive'] > 0.5,
      'Bags_Under_Eyes': age >= 55,
      'Bald': face['bald'],
      'Bangs': face['bangs'],
      'Big_Lips': _relative(face, 'lip_thickness') > 0.7,
      'Big_Nose': _relative(face, 'nose_width') > 0.7,
      'Black_Hair': hair == 'Black_Hair',
      'Blond_Hair': hair == 'Blond_Hair',
      'Blurry': face['blur'] > 0,
      'Brown_Hair': hair == 'Brown_Hair',
      'Bushy_Eyebrows': _relative(face, 'brow_thickness') > 0.7,
      'Chubby': face['chubby'] > 0.75,
      'Double_Chin': face['chubby'] > 0.6 and age > 40,
      'Eyeglasses': face['eyeglasses'],
      'Goatee': beard == 'goatee',
      'Gray_Hair': hair == 'Gray_Hair',
      'Heavy_Makeup': face['makeup'],
      'High_Cheekbones': face['cheekbones'] > 0.6,
      'Male': face['gender'] == 1,
      'Mouth_Slightly_Open': face['mouth_open'],
      'Mustache': beard in ('mustache', 'full'),
      'Narrow_Eyes': face['eye_open'] < 0.85,
      'No_Beard': beard in ('none', 'stubble'),
      'Oval_Face': face['jaw'] < 2.35 and face['chubby'] < 0.5,
      'Pale_Skin': face['skin_group'] == 0 and face['skin_light'] > 0.5,
      'Pointy_Nose': face['nose_point'] > 0.7,
      'Receding_Hairline': 0.3 <= face['recede'] < 0.8,
      'Rosy_Cheeks': face['rosy'],
      'Sideburns': face['sideburns'] and face['recede'] < 0.8,
      'Smiling': face['smile'],
      'Straight_Hair': face['hair_wavy'] < 0.4 and face['recede'] < 0.5,
      'Wavy_Hair': face['hair_wavy'] > 0.6 and face['recede'] < 0.5,
      'Wearing_Earrings': face['earrings'],
      'Wearing_Hat': False,
      'Wearing_Lipstick': face['lipstick'],
      'Wearing_Necklace': face['necklace'],
      'Wearing_Necktie': face['necktie'],
      'Young': age < 40,
  }
  return np.array([1 if on[name] else -1 for name in CELEBA_ATTRIBUTES],
                  dtype=np.int8)


# ----------------------------------------------------------------------------
# Data set writers.
# ----------------------------------------------------------------------------

# Separate random streams per layout so that, e.g., the CelebA and age sets
# written with the same seed hold different people.
_STREAM = {'age_csv': 1, 'celeba': 2, 'rafd': 3, 'fiw': 4}
# Worker processes pay off from a few hundred images (each takes ~1 s to
# start).
_MIN_POOL_IMAGES = 400
_MAX_WORKERS = 8
# First index of the streams for splits and pair lists (beyond any image
# index, which SeedSequence needs to be non-negative).
_AUX = 2**31


def _rng(seed: int, layout: str, *index: int) -> np.random.Generator:
  return np.random.default_rng([seed, _STREAM[layout], *index])


def _save(array: np.ndarray, path: str) -> None:
  img = Image.fromarray(array)
  if path.endswith('.png'):
    # The pixel noise leaves little for LZ77 matching: run-length + Huffman
    # coding is ~30% faster than level 1 and as small.
    img.save(path, compress_level=1, compress_type=zlib.Z_RLE)
  else:
    img.save(path, quality=95)


def _pool_workers(num_images: int) -> int:
  """Worker processes worth starting for num_images images (1: none)."""
  if num_images < _MIN_POOL_IMAGES or not sys.executable:
    return 1
  try:
    cpus = len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    cpus = os.cpu_count() or 1
  return max(1, min(cpus, _MAX_WORKERS))


def _work(job_file: str) -> None:
  """Worker process entry: draws and writes the jobs pickled in job_file."""
  with open(job_file, 'rb') as f:
    jobs = pickle.load(f)
  for face, size, rng, path in jobs:
    _save(render_face(face, size, rng), path)


class _Renderer:
  """Draws and writes images, in worker processes when there are many.

  Faces are sampled in the calling process, so the data set does not depend
  on the number of workers: each job carries its face and the Generator
  state for the pixel noise. Workers are fresh interpreters started with
  subprocess rather than multiprocessing: forking would copy the locked
  state of threads the caller may run (JAX does), and multiprocessing's
  spawn re-runs the caller's main script, which breaks scripts without a
  __main__ guard. With one worker, images are drawn here and encoded on a
  background thread (PIL releases the GIL while compressing). Use as a
  context manager; errors surface at the latest on exit.
  """

  def __init__(self, num_images: int):
    self._workers = _pool_workers(num_images)
    self._jobs = []
    self._pending = collections.deque()
    self._saver = (concurrent.futures.ThreadPoolExecutor(1)
                   if self._workers == 1 else None)

  def add(self, face: dict, size: int, rng: np.random.Generator,
          path: str) -> None:
    """Queues render_face(face, size, rng) -> path; do not reuse rng."""
    if self._saver is None:
      self._jobs.append((face, size, rng, path))
      return
    image = render_face(face, size, rng)
    self._pending.append(self._saver.submit(_save, image, path))
    while len(self._pending) > 32:
      self._pending.popleft().result()

  def __enter__(self) -> '_Renderer':
    return self

  def __exit__(self, exc_type, *unused) -> None:
    if self._saver is not None:
      try:
        while self._pending:
          self._pending.popleft().result()
      finally:
        self._saver.shutdown(wait=True, cancel_futures=True)
    elif exc_type is None and self._jobs:
      self._run_workers()

  def _run_workers(self) -> None:
    # The worker imports this module by name from the same root.
    root = os.path.abspath(__file__)
    for _ in __name__.split('.'):
      root = os.path.dirname(root)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (root, env.get('PYTHONPATH')) if p)
    code = f'import sys; import {__name__} as m; m._work(sys.argv[1])'
    with tempfile.TemporaryDirectory() as tmp:
      procs = []
      for w in range(self._workers):
        job_file = os.path.join(tmp, f'jobs{w}.pkl')
        with open(job_file, 'wb') as f:
          # Interleaved, so that every worker gets a similar mix of faces.
          pickle.dump(self._jobs[w::self._workers], f)
        log = open(os.path.join(tmp, f'log{w}.txt'), 'w+')
        procs.append((subprocess.Popen(
            [sys.executable, '-c', code, job_file], env=env,
            stdout=log, stderr=subprocess.STDOUT), log))
      failures = []
      for proc, log in procs:
        if proc.wait() != 0:
          log.seek(0)
          failures.append(log.read()[-2000:])
        log.close()
      if failures:
        raise RuntimeError('Synthetic image worker failed:\n' + failures[0])


def _split_counts(num: int, fractions: Sequence[float]) -> list[int]:
  """Counts per split; every later split gets at least one item if num >= 3."""
  later = [int(round(f * num)) for f in fractions[1:]]
  if num >= len(fractions):
    later = [max(1, n) for n in later]
  return [num - sum(later)] + later


def write_age_csv(
    out: str,
    num: int = 4000,
    size: int = 128,
    seed: int = 0,
    age_range: Sequence[float] = (0, 100),
) -> dict:
  """Writes an age-regression set (one new person per image).

  Layout: out/images/000000.png ...; out/{train,valid,test}.csv (80/10/10)
  with header `path,age,gender`, paths relative to out, integer ages drawn
  uniformly from age_range (both ends included).

  Args:
    out: output folder.
    num: number of images.
    size: image size in pixels.
    seed: random seed.
    age_range: (lowest, highest) age.

  Returns:
    Summary dict with the counts per split.
  """
  lo, hi = int(age_range[0]), int(age_range[1])
  if not 0 <= lo <= hi:
    raise ValueError(f'Bad age_range {age_range}.')
  os.makedirs(os.path.join(out, 'images'), exist_ok=True)
  rows = []
  with _Renderer(num) as renderer:
    for i in range(num):
      rng = _rng(seed, 'age_csv', i)
      age = int(rng.integers(lo, hi, endpoint=True))
      face = sample_face(rng, age=float(age))
      rel = f'images/{i:06d}.png'
      renderer.add(face, size, rng, os.path.join(out, rel))
      rows.append((rel, age, face['gender']))
  order = _rng(seed, 'age_csv', _AUX, 0).permutation(num)
  counts = _split_counts(num, (0.8, 0.1, 0.1))
  summary = {'layout': 'age_csv', 'num': num}
  start = 0
  for split, count in zip(('train', 'valid', 'test'), counts):
    chosen = sorted(order[start:start + count].tolist())
    start += count
    with open(os.path.join(out, f'{split}.csv'), 'w', newline='') as f:
      writer = csv.writer(f, lineterminator='\n')
      writer.writerow(('path', 'age', 'gender'))
      writer.writerows(rows[i] for i in chosen)
    summary[split] = count
  return summary


def _celeba_age(rng: np.random.Generator) -> float:
  # Celebrities: mostly young adults, some older, very few children.
  if rng.random() < 0.75:
    return round(float(rng.uniform(16.0, 45.0)), 1)
  return round(float(rng.uniform(45.0, 85.0)), 1)


def write_celeba(
    out: str, num: int = 2000, size: int = 128, seed: int = 0
) -> dict:
  """Writes a CelebA-like set in the official file layout.

  Files: out/img_align_celeba/000001.jpg ...; out/list_attr_celeba.txt (count
  line, names line, then `000001.jpg  1 -1 ...`); out/list_eval_partition.txt
  (`000001.jpg 0`; 0 train, 1 val, 2 test, 80/10/10 in file order, as in the
  official split); out/identity_CelebA.txt (`000001.jpg 1`). About five
  images per identity, in consecutive files.

  Args:
    out: output folder.
    num: number of images.
    size: image size in pixels.
    seed: random seed.

  Returns:
    Summary dict with the counts per partition.
  """
  image_dir = os.path.join(out, 'img_align_celeba')
  os.makedirs(image_dir, exist_ok=True)
  num_ids = max(1, num // 5)
  attr_lines, ident_lines, identity, current = [], [], None, -1
  with _Renderer(num) as renderer:
    for i in range(num):
      person = i * num_ids // num
      if person != current:
        identity = sample_identity(_rng(seed, 'celeba', 1, person))
        current = person
      rng = _rng(seed, 'celeba', 0, i)
      face = sample_face(rng, identity, age=_celeba_age(rng))
      name = f'{i + 1:06d}.jpg'
      renderer.add(face, size, rng, os.path.join(image_dir, name))
      values = ' '.join(f'{v:2d}' for v in celeba_attributes(face))
      attr_lines.append(f'{name} {values}\n')
      ident_lines.append(f'{name} {person + 1}\n')
  with open(os.path.join(out, 'list_attr_celeba.txt'), 'w') as f:
    f.write(f'{num}\n')
    f.write(' '.join(CELEBA_ATTRIBUTES) + '\n')
    f.writelines(attr_lines)
  counts = _split_counts(num, (0.8, 0.1, 0.1))
  with open(os.path.join(out, 'list_eval_partition.txt'), 'w') as f:
    i = 0
    for part, count in enumerate(counts):
      for _ in range(count):
        f.write(f'{i + 1:06d}.jpg {part}\n')
        i += 1
  with open(os.path.join(out, 'identity_CelebA.txt'), 'w') as f:
    f.writelines(ident_lines)
  return {'layout': 'celeba', 'num': num, 'identities': num_ids,
          'train': counts[0], 'val': counts[1], 'test': counts[2]}


def write_rafd(
    out: str, num: int = 700, size: int = 128, seed: int = 0
) -> dict:
  """Writes a RaFD-like expression set.

  Every person is photographed with all 7 EXPRESSIONS, so the classes are
  balanced; people are split 90/10 into out/train/<expression>/<id>.png and
  out/test/<expression>/<id>.png (no person in both), with <id> =
  <person>_<shot>.

  Args:
    out: output folder.
    num: number of images (rounded down to a multiple of 7, at least 7).
    size: image size in pixels.
    seed: random seed.

  Returns:
    Summary dict with the image counts per split.
  """
  people = max(1, num // len(EXPRESSIONS))
  test_people = 0 if people < 2 else max(1, int(round(0.1 * people)))
  test = set(_rng(seed, 'rafd', _AUX, 0).permutation(people)[:test_people]
             .tolist())
  for split in ('train', 'test'):
    for expression in EXPRESSIONS:
      os.makedirs(os.path.join(out, split, expression), exist_ok=True)
  counts = {'train': 0, 'test': 0}
  with _Renderer(people * len(EXPRESSIONS)) as renderer:
    for person in range(people):
      rng = _rng(seed, 'rafd', person)
      identity = sample_identity(rng)
      age = round(float(rng.uniform(8.0, 70.0)), 1)
      split = 'test' if person in test else 'train'
      for shot, expression in enumerate(EXPRESSIONS):
        shot_rng = _rng(seed, 'rafd', person, shot)
        # RaFD is posed and mostly without glasses: keep the face readable.
        face = sample_face(shot_rng, identity, age=age, expression=expression,
                           eyeglasses=bool(person % 10 == 9), blur=0.0)
        path = os.path.join(out, split, expression,
                            f'{person:04d}_{shot}.png')
        renderer.add(face, size, shot_rng, path)
        counts[split] += 1
  return {'layout': 'rafd', 'num': people * len(EXPRESSIONS),
          'people': people, **counts}


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
    members.append(_Member('', 'grandfather',
                           sample_identity(rng, gender=1, skin_group=skin),
                           float(rng.uniform(66.0, 88.0))))
    members.append(_Member('', 'grandmother',
                           sample_identity(rng, gender=0, skin_group=skin),
                           float(rng.uniform(64.0, 86.0))))
  for gender, role in ((1, 'father'), (0, 'mother')):
    parent_skin = int(rng.integers(4)) if mixed and gender == 0 else skin
    if gp_side == gender:
      identity = inherit_identity(rng, [members[0].identity,
                                        members[1].identity], gender=gender)
      age = min(members[0].age, members[1].age) - float(rng.uniform(22, 32))
      members.append(_Member('', role, identity, age, (0, 1)))
    else:
      identity = sample_identity(rng, gender=gender, skin_group=parent_skin)
      members.append(_Member('', role, identity,
                             float(rng.uniform(30.0, 52.0))))
  father, mother = len(members) - 2, len(members) - 1
  youngest_parent = min(members[father].age, members[mother].age)
  for _ in range(int(rng.integers(1, 5))):
    gender = int(rng.integers(2))
    identity = inherit_identity(
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
      _Renderer(num_families * 15) as renderer:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(('family', 'mid', 'gender', 'skin_group', 'role'))
    for fam in range(num_families):
      fid = f'F{fam + 1:04d}'
      rng = _rng(seed, 'fiw', fam)
      members = _make_family(rng)
      for k, member in enumerate(members):
        folder = os.path.join(image_root, fid, member.mid)
        os.makedirs(folder, exist_ok=True)
        writer.writerow((fid, member.mid, member.gender,
                         member.identity['skin_group'], member.role))
        for shot in range(int(rng.integers(2, 5))):
          shot_rng = _rng(seed, 'fiw', fam, k, shot)
          spread = 4.0 if member.role in ('son', 'daughter') else 8.0
          age = min(98.0, max(1.0, member.age + shot_rng.uniform(-1, 1)
                              * spread))
          face = sample_face(shot_rng, member.identity, age=round(age, 1))
          picture += 1
          rel = f'{fid}/{member.mid}/P{picture:05d}_face0.jpg'
          renderer.add(face, size, shot_rng, os.path.join(image_root, rel))
          member.images.append(rel)
      families.append(members)

  split_rng = _rng(seed, 'fiw', _AUX, 0)
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
    rng = _rng(seed, 'fiw', _AUX, 1 + list(splits).index(split))
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


_WRITERS: dict[str, Callable[..., dict]] = {
    'age_csv': write_age_csv,
    'celeba': write_celeba,
    'rafd': write_rafd,
    'fiw': write_fiw,
}
# What each layout writes, so that a rewrite removes stale files.
_OUTPUTS = {
    'age_csv': ('images', 'train.csv', 'valid.csv', 'test.csv'),
    'celeba': ('img_align_celeba', 'list_attr_celeba.txt',
               'list_eval_partition.txt', 'identity_CelebA.txt'),
    'rafd': ('train', 'test'),
    'fiw': ('images', 'txt', 'families.csv'),
}


def write(layout: str, out: str, **kwargs) -> dict:
  """Writes a synthetic data set.

  Args:
    layout: one of LAYOUTS: 'age_csv', 'celeba', 'rafd' or 'fiw'.
    out: output folder.
    **kwargs: arguments of the layout's write_* function.

  Returns:
    The writer's summary dict.

  Raises:
    ValueError: unknown layout.
  """
  if layout not in _WRITERS:
    raise ValueError(
        f'Unknown layout {layout!r}; expected one of {", ".join(LAYOUTS)}.')
  return _WRITERS[layout](out, **kwargs)


def _jsonable(value: Any) -> Any:
  if isinstance(value, (tuple, list)):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  return value


def ensure(layout: str, out: str, **kwargs) -> str:
  """Writes the data set unless out already holds it.

  out/SYNTHETIC_DONE.json records the layout, the full argument set (defaults
  filled in) and the generator version; it is written last, so an
  interrupted generation is redone. A rewrite first removes what the layout
  writes, so no stale images stay behind.

  Args:
    layout: one of LAYOUTS.
    out: output folder.
    **kwargs: arguments of the layout's write_* function.

  Returns:
    out.
  """
  if layout not in _WRITERS:
    raise ValueError(
        f'Unknown layout {layout!r}; expected one of {", ".join(LAYOUTS)}.')
  bound = inspect.signature(_WRITERS[layout]).bind(out, **kwargs)
  bound.apply_defaults()
  args = _jsonable({k: v for k, v in bound.arguments.items() if k != 'out'})
  record = {'layout': layout, 'kwargs': args, 'version': _VERSION}
  marker = os.path.join(out, MARKER)
  if os.path.isfile(marker):
    try:
      with open(marker) as f:
        done = json.load(f)
    except (OSError, ValueError):
      done = {}
    if {k: done.get(k) for k in record} == record:
      logging.info('Synthetic %s data in %s is up to date (%s).', layout, out,
                   args)
      return out
    logging.info('Synthetic data in %s was made with %s; regenerating.', out,
                 {k: done.get(k) for k in record})
    os.remove(marker)
  for name in _OUTPUTS[layout]:
    path = os.path.join(out, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)
  logging.info('Writing synthetic %s data to %s (%s).', layout, out, args)
  os.makedirs(out, exist_ok=True)
  summary = write(layout, out, **kwargs)
  record['summary'] = summary
  with open(marker + '.tmp', 'w') as f:
    json.dump(record, f, indent=1, sort_keys=True)
  os.replace(marker + '.tmp', marker)
  logging.info('Wrote synthetic %s data to %s: %s', layout, out, summary)
  return out
