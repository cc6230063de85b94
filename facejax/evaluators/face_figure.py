"""A picture of detection and alignment: each photo with its boxes and
landmarks, and beside it every face's crop for each alignment template."""

from typing import Sequence

import numpy as np

from facejax.data.faces import align
from facejax.evaluators import reports

_MARK_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00")


def draw(images: Sequence[np.ndarray], detections, out_path: str,
         titles: Sequence[str] = (),
         templates: Sequence[str] = ("arcface_112", "sphereface_96x112",
                                     "ffhq", "box")) -> None:
  """Writes the figure to `out_path` (PNG): one row per photo."""
  plt = reports.pyplot()
  rows = len(images)
  faces_max = max([len(d) for d in detections] + [1])
  cols = 1 + faces_max * len(templates)
  fig = plt.figure(figsize=(3.2 + 1.3 * (cols - 1), 3.2 * rows))
  grid = fig.add_gridspec(rows, cols, width_ratios=[2.5] + [1] * (cols - 1))
  for r, (image, faces) in enumerate(zip(images, detections)):
    ax = fig.add_subplot(grid[r, 0])
    ax.imshow(image)
    ax.set_title(titles[r] if r < len(titles) else f"{len(faces)} face(s)",
                 fontsize=9)
    for k, face in enumerate(faces):
      x0, y0, x1, y1 = face.box
      ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                 color="yellow", linewidth=1.5))
      ax.text(x0, y0 - 4, f"{k}: {face.score:.3f}", color="yellow",
              fontsize=7, va="bottom")
      if face.landmarks is not None:
        for point, colour in zip(face.landmarks, _MARK_COLOURS):
          ax.plot(*point, "o", color=colour, markersize=3)
    ax.axis("off")
    for k, face in enumerate(faces):
      for t, template in enumerate(templates):
        ax = fig.add_subplot(grid[r, 1 + k * len(templates) + t])
        crop = align.crop(image, template, 112, face.box, face.landmarks)
        ax.imshow(crop)
        if face.landmarks is not None and template in ("arcface_112",
                                                       "sphereface_96x112"):
          for point, colour in zip(align.template_points(template, 112),
                                   _MARK_COLOURS):
            ax.plot(*point, "+", color=colour, markersize=5)
        ax.set_title(f"face {k}\n{template}", fontsize=7)
        ax.axis("off")
  reports.save_figure(fig, out_path, dpi=110)
