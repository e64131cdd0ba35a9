"""Feature Pyramid Network: C2..C5 -> P2..P6 (strides 4..64).

Lateral 1x1 convs, top-down nearest-neighbour x2 upsampling and addition,
3x3 output convs; P6 is P5 subsampled by 2 (a max-pool with kernel 1 and
stride 2, as torchvision's LastLevelMaxPool and the authors' code).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from zsi_jax.modeling.layers import Conv1x1, Conv3x3, ModuleDef


def upsample_to(x, hw):
  """Nearest x2 upsampling cropped to ``hw`` (odd sizes round up on the way down)."""
  x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  return x[:, :hw[0], :hw[1]]


class FPN(nn.Module):
  """FPN neck.

  Attributes:
    channels: output width of every level.
    conv1x1, conv3x3: the lateral and output convolution layers.
    dtype: computation dtype.
  """
  channels: int
  conv1x1: ModuleDef = Conv1x1
  conv3x3: ModuleDef = Conv3x3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]):
    """features: (C2, C3, C4, C5) -> (P2, P3, P4, P5, P6), each [B, H_l, W_l, channels]."""
    init = nn.initializers.xavier_uniform()
    laterals = [self.conv1x1(self.channels, kernel_init=init, dtype=self.dtype,
                             name=f'lateral{i + 2}')(c) for i, c in enumerate(features)]
    for i in range(len(laterals) - 1, 0, -1):
      laterals[i - 1] = laterals[i - 1] + upsample_to(laterals[i], laterals[i - 1].shape[1:3])
    outs = [self.conv3x3(self.channels, kernel_init=init, dtype=self.dtype,
                         name=f'output{i + 2}')(x) for i, x in enumerate(laterals)]
    outs.append(outs[-1][:, ::2, ::2])
    return tuple(outs)
