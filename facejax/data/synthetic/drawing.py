"""Drawing a synthetic face (a label dict) into an RGB image with PIL.

Face coordinates are in units of the canvas; `geometry` resolves a face's
traits into positions and colours, the `_draw_*` functions paint one part
each, and `render_face` composes them with the per-image nuisance
(background, pose, lighting, noise, blur).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter

from facejax.data.synthetic import identities


# Face coordinates are designed for a head about half the image tall; scaled
# up a little so that the face fills more of a small (32 px) input.
HEAD_SCALE = 1.12


def _lerp(a, b, t):
  return a + (b - a) * t


def _rgb(c) -> tuple[int, int, int]:
  r, g, b = c
  return (int(min(255.0, max(0.0, r)) + 0.5),
          int(min(255.0, max(0.0, g)) + 0.5),
          int(min(255.0, max(0.0, b)) + 0.5))


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


def geometry(face: dict) -> _Geo:
  age = face['age']
  # Linear in age (not eased) so that every year of childhood shows.
  growth = identities.clip01(age / 18.0)
  sag = identities.clip01((age - 45.0) / 55.0)
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
  dull = identities.clip01((age - 40.0) / 50.0)
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
    dark = 0.25 * identities.clip01((face['age'] - 50.0) / 35.0)
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
  thin = (0.3 * face['recede']
          + 0.6 * identities.clip01((3.0 - face['age']) / 3.0))
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
  fold = identities.clip01((age - 18.0) / 77.0)
  if fold > 0:
    col = skin * (1.0 - (0.08 + 0.4 * fold))
    for side in (-1.0, 1.0):
      pen.line(_bezier(
          (side * (geo.nose_w + 0.06 * a), geo.nose_bottom - 0.08 * b),
          (side * (geo.mw + 0.12 * a), geo.mouth_y - 0.12 * b),
          (side * (geo.mw + 0.08 * a), geo.mouth_y + 0.12 * b), 10),
               col, 0.005 + 0.006 * fold)
  # Forehead lines from 28: one more about every ten years, darker with age.
  lines = identities.clip01((age - 28.0) / 66.0)
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
  crow = identities.clip01((age - 36.0) / 56.0)
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
  bags = identities.clip01((age - 45.0) / 50.0)
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
      fold = identities.clip01((face['age'] - 45.0) / 40.0)
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
    face: label dict from identities.sample_face.
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
  geo = geometry(face)
  pen = _Pen(ImageDraw.Draw(img), big, 0.5 + face['shift'][0],
             0.47 + face['shift'][1], HEAD_SCALE * face['scale'],
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
