"""Face crops made the way each model's training faces were made.

`data.align` (and every CLI's --align) names one of `TEMPLATES`:
- 'arcface_112': a similarity transform of the five landmarks onto
  insightface's 112x112 template, the crops SwinFace was trained on (MS1MV2,
  RAF-DB and CelebA aligned by insightface's recipe);
- 'sphereface_96x112': the same five points onto SphereFace's 96x112 (width x
  height) template, which is ArcFace's shifted 8 px left;
- 'caricature': SphereFace's points centred in a square and shrunk to 0.7
  about its centre, so the crop keeps hair and face outline: the
  caricature translator's frontalised WebCaricature faces;
- 'ffhq': FFHQ's crop (Karras et al.), the age transformer's training faces:
  an oriented square from the eye and mouth centres, eye-to-eye and
  eye-to-mouth distances fixing its size, resampled to the model's size;
- 'box': the detector's box grown by a margin on each side into a square
  (DEX's 40%) -- the age estimators', StarGAN's and the caricature
  translator's crops, which used no landmarks;
- 'none': the photo as given (already aligned; the model's own
  preprocessing resizes it).

Transforms are estimated with scikit-image (`SimilarityTransform`) and
applied with OpenCV (`warpAffine`, bilinear, edges replicated).
"""

from typing import Optional

import cv2
import numpy as np
from skimage import transform as sk_transform

from facejax.data.faces import haar

TEMPLATES = ("arcface_112", "sphereface_96x112", "caricature", "ffhq", "box",
             "none")

# insightface's five reference points for 112x112 crops: left eye, right
# eye, nose tip, left and right mouth corner (as seen in the image).
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014],
                        [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], np.float64)
# SphereFace's 96x112 template: the same points 8 px to the left.
SPHEREFACE_96X112 = ARCFACE_112 - np.array([8.0, 0.0])
_OUTPUT_SIZE = {"arcface_112": (112, 112), "sphereface_96x112": (96, 112),
                "caricature": (112, 112)}


def caricature_points(size: int, zoom: float = 0.7) -> np.ndarray:
  """SphereFace's points centred in a size x size square, shrunk by `zoom`
  about its centre (zoom 1: the tight SphereFace crop, padded)."""
  points = SPHEREFACE_96X112 + np.array([8.0, 0.0])  # 96 wide -> centred
  points = 56.0 + (points - 56.0) * zoom
  return points * (size / 112.0)


def template_points(template: str, size: Optional[int] = None) -> np.ndarray:
  """The five target points of a landmark template, scaled to `size` px."""
  if template == "caricature":
    return caricature_points(size or 112)
  points = {"arcface_112": ARCFACE_112,
            "sphereface_96x112": SPHEREFACE_96X112}[template]
  if size is not None:
    points = points * (size / 112.0)
  return points


def output_size(template: str, size: int) -> tuple[int, int]:
  """(width, height) of a crop; `size` is the model's input side."""
  if template == "sphereface_96x112":
    return round(size * 96 / 112), size
  return size, size


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
  """FFHQ's oriented crop square, its corners [4, 2], from five landmarks.

  FFHQ derives it from the eye centres and the mouth corners: the square is
  centred 10% of the way from the eyes' midpoint to the mouth's, aligned
  with the eye-to-eye direction (tilted by the eye-mouth axis) and 2x the
  eye distance or 1.8x the eye-to-mouth distance wide, whichever is larger.
  """
  eye_left, eye_right = landmarks[0], landmarks[1]
  mouth = (landmarks[3] + landmarks[4]) / 2
  eye_mid = (eye_left + eye_right) / 2
  eye_to_eye = eye_right - eye_left
  eye_to_mouth = mouth - eye_mid
  x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
  x /= np.hypot(*x)
  x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
  y = np.array([-x[1], x[0]])
  centre = eye_mid + eye_to_mouth * 0.1
  return np.stack([centre - x - y, centre - x + y, centre + x + y,
                   centre + x - y])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """The least-squares similarity transform src -> dst, as a 2x3 matrix."""
  src = np.asarray(src, np.float64)
  dst = np.asarray(dst, np.float64)
  if hasattr(sk_transform.SimilarityTransform, "from_estimate"):  # >= 0.26
    tform = sk_transform.SimilarityTransform.from_estimate(src, dst)
    ok = bool(tform)
  else:
    tform = sk_transform.SimilarityTransform()
    ok = tform.estimate(src, dst)
  if not ok:
    raise ValueError("landmarks are degenerate (all on one point)")
  return tform.params[:2]


def align_matrix(template: str, landmarks: np.ndarray, size: int
                 ) -> np.ndarray:
  """The 2x3 photo -> crop transform of a landmark template."""
  if template in _OUTPUT_SIZE:
    return similarity(landmarks, template_points(template, size))
  if template == "ffhq":
    corners = np.array([[0, 0], [0, size], [size, size], [size, 0]],
                       np.float64)
    return similarity(ffhq_quad(np.asarray(landmarks, np.float64)), corners)
  raise ValueError(f"{template!r} is not a landmark template")


def crop(image: np.ndarray, template: str, size: int,
         box=None, landmarks=None, margin: float = 0.4) -> np.ndarray:
  """A face crop of `image` (uint8 RGB) as `template` prescribes.

  Landmark templates need `landmarks` ([5, 2]); when a detector gave none
  (Haar), they fall back to the 'box' crop. 'box' needs `box`; 'none' needs
  neither.
  """
  if template not in TEMPLATES:
    raise ValueError(f"unknown alignment {template!r}; choose one of "
                     f"{', '.join(TEMPLATES)}")
  if template == "none":
    return image
  if template == "box" or landmarks is None:
    if box is None:
      raise ValueError(f"alignment {template!r} needs a face box")
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    face = haar.crop_face(image, (x0, y0, x1, y1), margin=margin)
    return cv2.resize(face, output_size("box", size), interpolation=(
        cv2.INTER_AREA if face.shape[0] > size else cv2.INTER_LINEAR))
  matrix = align_matrix(template, np.asarray(landmarks, np.float64), size)
  return cv2.warpAffine(image, matrix, output_size(template, size),
                        flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
