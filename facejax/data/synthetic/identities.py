"""Synthetic identities and faces: who is drawn, and every label they carry.

An identity holds the traits a person keeps across photos (face shape,
eyes, nose, mouth, skin group, hair and eye colour); a face adds what one
photo shows (age, expression, accessories, pose, lighting). Children
inherit their parents' traits (`inherit_identity`). `celeba_attributes`
reads the 40 CelebA labels off a face. Pure numpy: picklable and cheap to
import for the writers' worker processes.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


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


BEARD_STYLES = ('none', 'stubble', 'mustache', 'goatee', 'full')


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


_FACE_FIELDS = (
    'age', 'hair_grey', 'hair_colour', 'recede', 'bald', 'expression',
    'smile', 'mouth_open', 'bangs', 'beard', 'eyeglasses', 'glasses_round',
    'glasses_rgb', 'earrings', 'lipstick', 'makeup', 'necklace', 'necktie',
    'rosy', 'blur', 'bg_rgb', 'cloth_rgb', 'shift', 'scale', 'rotation',
    'brightness', 'contrast', 'noise', 'noise_seed',
)


def clip01(x: float) -> float:
  return min(1.0, max(0.0, x))


def _floats(c) -> list[float]:
  return [round(float(v), 2) for v in c]


def trait_range(name: str, gender: int) -> tuple[float, float]:
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
    lo, hi = trait_range(name, gender)
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
      lo, hi = trait_range(name, parent['gender'])
      pos += w * (parent[name] - lo) / (hi - lo)
    pos = clip01(pos + _INHERIT_NOISE * float(rng.normal()))
    lo, hi = trait_range(name, gender)
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
    lo, hi = trait_range(name, identity['gender'])
    pos = (identity[name] - lo) / (hi - lo)
    lo, hi = trait_range(name, gender)
    out[name] = round(lo + (hi - lo) * pos, 4)
  _gendered(out, np.random.default_rng([identity['detail_seed'], gender]))
  return out


def _hair_grey(age: float, onset: float) -> float:
  # Greys from ~33 and keeps whitening up to ~90 so that the strongest cue at
  # low resolution stays informative over most of the adult range; 0.5 (the
  # Gray_Hair label) is reached at ~55.
  return clip01((age - 33.0 - onset) / 57.0) ** 0.75


def _recede(age: float, gender: int, balding: float) -> float:
  if gender:
    return balding * clip01((age - 40.0) / 35.0)
  return 0.3 * balding * clip01((age - 55.0) / 40.0)


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


def relative(face: dict, name: str) -> float:
  """Position of a trait inside its gender's range, 0..1."""
  lo, hi = trait_range(name, face['gender'])
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
      'Big_Lips': relative(face, 'lip_thickness') > 0.7,
      'Big_Nose': relative(face, 'nose_width') > 0.7,
      'Black_Hair': hair == 'Black_Hair',
      'Blond_Hair': hair == 'Blond_Hair',
      'Blurry': face['blur'] > 0,
      'Brown_Hair': hair == 'Brown_Hair',
      'Bushy_Eyebrows': relative(face, 'brow_thickness') > 0.7,
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
