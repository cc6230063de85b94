"""MTCNN's three networks (Zhang et al., 2016) as Flax modules.

P-Net proposes faces on every 12x12 window of an image pyramid, R-Net
re-scores 24x24 crops of its proposals and O-Net 48x48 crops, adding five
landmarks. The layer tables are the paper's (Caffe) networks, whose released
weights every MTCNN port carries; `facejax.data.faces.mtcnn` loads them and
runs the cascade.

Two properties of the released weights shape the code:
- pooling rounds the output size up (Caffe's ceil mode), so a window that
  hangs over the right or bottom edge sees only the pixels inside;
- the dense layers read the last feature map in (width, height, channel)
  order, a trace of the original Matlab code's column-major arrays.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models import layers


def ceil_max_pool(x, window: int, stride: int):
  """Max pooling with Caffe's ceil-mode output size (pads the end with -inf)."""
  pads = []
  for n in x.shape[1:3]:
    out = math.ceil((n - window) / stride) + 1
    pads.append((0, (out - 1) * stride + window - n))
  return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


def _flatten_width_first(x):
  """[B, H, W, C] -> [B, W*H*C] in the order the released dense layers read."""
  return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


class PNet(nn.Module):
  """Proposal network: fully convolutional, one output cell per 12x12 window
  at stride 2.

  `valid_hw` ([B, 2] int, optional) gives each image's true height and width
  when a batch is zero-padded to a common size: the first feature map is cut
  to -inf past it, so the ceil-mode pool sees what it would see on the image
  alone and every cell inside the image scores exactly as unpadded.
  """

  @nn.compact
  def __call__(self, x, valid_hw=None):
    x = layers.PReLU(name="prelu1")(nn.Conv(10, (3, 3), padding="VALID",
                                     name="conv1")(x))
    if valid_hw is not None:
      rows = jnp.arange(x.shape[1])[None, :, None]
      cols = jnp.arange(x.shape[2])[None, None, :]
      inside = ((rows < valid_hw[:, 0, None, None] - 2)
                & (cols < valid_hw[:, 1, None, None] - 2))
      x = jnp.where(inside[..., None], x, -jnp.inf)
    x = ceil_max_pool(x, 2, 2)
    x = layers.PReLU(name="prelu2")(nn.Conv(16, (3, 3), padding="VALID",
                                     name="conv2")(x))
    x = layers.PReLU(name="prelu3")(nn.Conv(32, (3, 3), padding="VALID",
                                     name="conv3")(x))
    prob = jax.nn.softmax(nn.Conv(2, (1, 1), name="conv4_1")(x), axis=-1)
    offsets = nn.Conv(4, (1, 1), name="conv4_2")(x)
    return prob[..., 1], offsets


class RNet(nn.Module):
  """Refinement network on 24x24 crops: face probability and box offsets."""

  @nn.compact
  def __call__(self, x):
    x = layers.PReLU(name="prelu1")(nn.Conv(28, (3, 3), padding="VALID",
                                     name="conv1")(x))
    x = ceil_max_pool(x, 3, 2)
    x = layers.PReLU(name="prelu2")(nn.Conv(48, (3, 3), padding="VALID",
                                     name="conv2")(x))
    x = ceil_max_pool(x, 3, 2)
    x = layers.PReLU(name="prelu3")(nn.Conv(64, (2, 2), padding="VALID",
                                     name="conv3")(x))
    x = layers.PReLU(name="prelu4")(nn.Dense(128, name="dense4")(
        _flatten_width_first(x)))
    prob = jax.nn.softmax(nn.Dense(2, name="dense5_1")(x), axis=-1)
    return prob[:, 1], nn.Dense(4, name="dense5_2")(x)


class ONet(nn.Module):
  """Output network on 48x48 crops: probability, box offsets and landmarks.

  Landmarks come as [x1..x5, y1..y5], each a fraction of the crop's width or
  height, in the order left eye, right eye, nose, left and right mouth
  corner (left and right as seen in the image).
  """

  @nn.compact
  def __call__(self, x):
    x = layers.PReLU(name="prelu1")(nn.Conv(32, (3, 3), padding="VALID",
                                     name="conv1")(x))
    x = ceil_max_pool(x, 3, 2)
    x = layers.PReLU(name="prelu2")(nn.Conv(64, (3, 3), padding="VALID",
                                     name="conv2")(x))
    x = ceil_max_pool(x, 3, 2)
    x = layers.PReLU(name="prelu3")(nn.Conv(64, (3, 3), padding="VALID",
                                     name="conv3")(x))
    x = ceil_max_pool(x, 2, 2)
    x = layers.PReLU(name="prelu4")(nn.Conv(128, (2, 2), padding="VALID",
                                     name="conv4")(x))
    x = layers.PReLU(name="prelu5")(nn.Dense(256, name="dense5")(
        _flatten_width_first(x)))
    prob = jax.nn.softmax(nn.Dense(2, name="dense6_1")(x), axis=-1)
    offsets = nn.Dense(4, name="dense6_2")(x)
    landmarks = nn.Dense(10, name="dense6_3")(x)
    return prob[:, 1], offsets, landmarks
