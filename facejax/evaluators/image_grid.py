"""PNG image grids with column/row labels (sample sheets of the GAN tasks).

  image_grid.save_grid("grid.png", rows, col_labels=["input", "20", "30"])

`rows` is a list of rows, each a list of uint8 RGB images [H, W, 3] of one
size (or float images in [0, 1]). Labels are drawn with Pillow's default
bitmap font above the columns / left of the rows, so no font file is
needed.
"""

import os
import textwrap
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facejax.data import transforms

_LABEL_HEIGHT = 14  # pixels of the header row (default font is ~11 px)
_CHAR_WIDTH = 7     # per character of a row label


def to_uint8(image: np.ndarray) -> np.ndarray:
  """uint8 as is; float images are taken to be in [0, 1] and clipped."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image
  return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def make_grid(rows: Sequence[Sequence[np.ndarray]],
              col_labels: Sequence[str] | None = None,
              row_labels: Sequence[str] | None = None,
              pad: int = 2, background: int = 255) -> Image.Image:
  """The grid as a PIL image.

  Args:
    rows: rows of images, all the same [H, W, 3] shape.
    col_labels: one label per column, drawn above it (optional).
    row_labels: one label per row, drawn left of it (optional).
    pad: pixels between cells and around the grid.
    background: grey level of the padding.

  Returns:
    An RGB PIL image of size (left + cols * (W + pad) + pad,
    top + rows * (H + pad) + pad), with top = 14 (plus 11 per extra line
    of a column label wrapped to the cell width) if col_labels else 0 and
    left = 7 * longest row label + pad if row_labels else 0.
  """
  if not rows or not rows[0]:
    raise ValueError("make_grid: no images")
  n_cols = max(len(r) for r in rows)
  h, w = np.asarray(rows[0][0]).shape[:2]
  for r, row in enumerate(rows):
    for c, image in enumerate(row):
      if np.asarray(image).shape[:2] != (h, w):
        raise ValueError(f"make_grid: image ({r}, {c}) has shape "
                         f"{np.asarray(image).shape}, expected {(h, w, 3)}")
  for name, labels, n in (("col_labels", col_labels, n_cols),
                          ("row_labels", row_labels, len(rows))):
    if labels is not None and len(labels) != n:
      raise ValueError(f"make_grid: {len(labels)} {name} for {n} "
                       f"{name.split('_')[0]}s")
  # Column labels wrap to the cell's width (never cut, never overlapping
  # the next column): the header grows a line per extra line of text.
  font = ImageFont.load_default()
  wrapped = [_wrap(str(label), w + pad, font) for label in (col_labels or ())]
  lines = max((len(x) for x in wrapped), default=1)
  top = _LABEL_HEIGHT + (lines - 1) * 11 if col_labels else 0
  left = (_CHAR_WIDTH * max(len(s) for s in row_labels) + pad
          if row_labels else 0)
  width = left + n_cols * (w + pad) + pad
  height = top + len(rows) * (h + pad) + pad
  canvas = Image.new("RGB", (width, height), (background,) * 3)
  draw = ImageDraw.Draw(canvas)
  for c, label_lines in enumerate(wrapped):
    for k, line in enumerate(label_lines):
      draw.text((left + pad + c * (w + pad), 1 + 11 * k), line,
                fill=(0, 0, 0), font=font)
  for r, row in enumerate(rows):
    y = top + pad + r * (h + pad)
    if row_labels:
      draw.text((1, y + h // 2 - 6), str(row_labels[r]), fill=(0, 0, 0),
                font=font)
    for c, image in enumerate(row):
      image = to_uint8(image)
      if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
      canvas.paste(Image.fromarray(image[..., :3]),
                   (left + pad + c * (w + pad), y))
  return canvas


def make_signed_grid(rows: Sequence[Sequence[np.ndarray]],
                     col_labels: Sequence[str] | None = None,
                     row_labels: Sequence[str] | None = None) -> Image.Image:
  """`make_grid` of float images in [-1, 1] (the GANs' output range)."""
  return make_grid(
      [[transforms.denormalize(x, "unit") for x in row] for row in rows],
      col_labels=col_labels, row_labels=row_labels)


def _wrap(text: str, width_px: int, font) -> list[str]:
  """`text` in as few lines as fit `width_px` each (long words broken)."""
  measure = lambda line: font.getlength(line)
  for chars in range(max(len(text), 1), 0, -1):
    lines = textwrap.wrap(text, chars, break_long_words=True) or [""]
    if all(measure(line) <= width_px for line in lines):
      return lines
  return list(text)


def save_grid(path: str, rows: Sequence[Sequence[np.ndarray]],
              col_labels: Sequence[str] | None = None,
              row_labels: Sequence[str] | None = None,
              pad: int = 2) -> tuple[int, int]:
  """Writes the grid as PNG (folders created); returns (width, height)."""
  grid = make_grid(rows, col_labels, row_labels, pad)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  grid.save(path, format="PNG")
  return grid.size
