"""ResNet backbone (torchvision layout, "v1.5": stride on the 3x3 conv), NHWC.

Returns C2..C5 (strides 4, 8, 16, 32). Normalisation:
- 'frozen_bn': BatchNorm with fixed statistics (eval mode always; the affine
  scale/bias stay trainable, as mmdetection's ``norm_eval=True``). The
  statistics live in ``batch_stats`` and are never updated. It is computed as
  the one multiply-add it is (:class:`FrozenBatchNorm`).
- 'batch_norm': trainable BatchNorm with batch statistics in training.
- 'group_norm': GroupNorm (for training from scratch with small batches).
Frozen stages (mmdetection's ``frozen_stages``): 1 freezes the stem and the
first stage. Their outputs pass through ``stop_gradient`` and
:func:`trainable_mask` tells the optimiser to give them no update or state.
"""
from __future__ import annotations

from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from zsi_jax.modeling.layers import Conv1x1, Conv3x3, ModuleDef

NORMS = ('frozen_bn', 'batch_norm', 'group_norm')   # see the module docstring
STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                152: (3, 8, 36, 3)}


def make_norm(kind: str, train: bool, dtype, name: str):
  """The normalisation layer of ``kind`` (see module docstring)."""
  if kind == 'frozen_bn':
    return FrozenBatchNorm(dtype=dtype, name=name)
  if kind == 'batch_norm':
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        name=name)
  if kind == 'group_norm':
    return _GroupNorm(dtype=dtype, name=name)
  raise ValueError(f'backbone norm must be one of {NORMS}, got {kind!r}')


class FrozenBatchNorm(nn.Module):
  """BatchNorm in eval mode, ``(x - mean) / sqrt(var + eps) * scale + bias``,
  computed as ``x * a + b`` with ``a = scale / sqrt(var + eps)`` and ``b = bias -
  mean * a`` folded on the channel vectors.

  The same variables as ``nn.BatchNorm`` (params ``scale``/``bias``,
  ``batch_stats`` ``mean``/``var``), so checkpoints and converted weights load
  either way. One multiply-add per element: its gradient keeps only ``x``,
  where ``nn.BatchNorm`` keeps ``x - mean`` beside the convolution output that
  produced ``x`` (about 0.2 GB of the R50-FPN train step at 512x512, batch 2;
  docs/PERFORMANCE.md).
  """
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """x: [..., C] -> [..., C] in ``dtype``; the arithmetic in float32 as ``nn.BatchNorm``."""
    c = x.shape[-1]
    mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32)).value
    var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32)).value
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    a = scale * jax.lax.rsqrt(var + self.epsilon)
    return (x * a + (bias - mean * a)).astype(self.dtype)


class _GroupNorm(nn.Module):
  """GroupNorm with 32 groups, fewer when a tiny width leaves fewer channels per group."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if c % g == 0 and c // g >= 2 or g == 1)
    return nn.GroupNorm(num_groups=groups, epsilon=1e-5, dtype=self.dtype, name='gn')(x)


_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _strided_conv(features, kernel, stride, dtype, name):
  """The stem and the strided 3x3 convolutions: plain ``nn.Conv``."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=[(pad, pad), (pad, pad)], use_bias=False, dtype=dtype,
                 kernel_init=_INIT, name=name)


class _Block(nn.Module):
  """Fields shared by the residual blocks; ``conv`` picks a convolution's form."""
  features: int
  stride: int
  norm: str
  conv1x1: ModuleDef
  conv3x3: ModuleDef
  dtype: Any = jnp.float32

  def conv(self, features, kernel, stride, name):
    if kernel == 1:
      return self.conv1x1(features, stride=stride, use_bias=False, kernel_init=_INIT,
                          dtype=self.dtype, name=name)
    if stride == 1:
      return self.conv3x3(features, use_bias=False, kernel_init=_INIT, dtype=self.dtype,
                          name=name)
    return _strided_conv(features, kernel, stride, self.dtype, name)

  def norm_layer(self, train, name):
    return make_norm(self.norm, train, self.dtype, name)


class BasicBlock(_Block):
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    y = self.conv(self.features, 3, self.stride, 'conv1')(x)
    y = nn.relu(self.norm_layer(train, 'bn1')(y))
    y = self.conv(self.features, 3, 1, 'conv2')(y)
    y = self.norm_layer(train, 'bn2')(y)
    if x.shape[-1] != self.features or self.stride != 1:
      x = self.conv(self.features, 1, self.stride, 'downsample_conv')(x)
      x = self.norm_layer(train, 'downsample_bn')(x)
    return nn.relu(x + y)


class Bottleneck(_Block):
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    out = self.features * 4
    y = self.conv(self.features, 1, 1, 'conv1')(x)
    y = nn.relu(self.norm_layer(train, 'bn1')(y))
    y = self.conv(self.features, 3, self.stride, 'conv2')(y)
    y = nn.relu(self.norm_layer(train, 'bn2')(y))
    y = self.conv(out, 1, 1, 'conv3')(y)
    y = self.norm_layer(train, 'bn3')(y)
    if x.shape[-1] != out or self.stride != 1:
      x = self.conv(out, 1, self.stride, 'downsample_conv')(x)
      x = self.norm_layer(train, 'downsample_bn')(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet returning ``(C2, C3, C4, C5)``.

  Attributes:
    depth: 18, 34, 50, 101 or 152.
    width: width multiplier (1.0 = 64 stem channels); small values give tiny
      CPU models.
    norm: one of ``NORMS``.
    frozen_stages: 0 none; 1 stem + stage 1; up to 4.
    conv1x1, conv3x3: the 1x1 and the stride-1 3x3 convolution layers
      (``layers.Conv1x1``/``Conv3x3`` with a chosen computation); the stem
      and the strided 3x3 convolutions are ``nn.Conv``.
    dtype: computation dtype (parameters stay float32).
  """
  depth: int
  width: float
  norm: str
  frozen_stages: int
  conv1x1: ModuleDef = Conv1x1
  conv3x3: ModuleDef = Conv3x3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x: [B, H, W, 3] -> tuple of 4 maps [B, ceil(H/s), ceil(W/s), C_s], s = 4..32."""
    if self.depth not in STAGE_BLOCKS:
      raise ValueError(f'ResNet depth must be one of {sorted(STAGE_BLOCKS)}, got {self.depth}')
    block = BasicBlock if self.depth < 50 else Bottleneck
    base = max(8, int(round(64 * self.width)))
    x = x.astype(self.dtype)
    x = _strided_conv(base, 7, 2, self.dtype, 'stem_conv')(x)
    x = nn.relu(make_norm(self.norm, train, self.dtype, 'stem_bn')(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    outs = []
    for stage, n in enumerate(STAGE_BLOCKS[self.depth]):
      for i in range(n):
        stride = 2 if (i == 0 and stage > 0) else 1
        x = block(base * 2 ** stage, stride, self.norm, self.conv1x1, self.conv3x3, self.dtype,
                  name=f'layer{stage + 1}_{i}')(x, train)
      if stage + 1 <= self.frozen_stages:
        # Frozen: no gradient flows into this stage or anything before it.
        x = jax.lax.stop_gradient(x)
      outs.append(x)
    return tuple(outs)


def trainable_mask(backbone_params: Dict[str, Any], frozen_stages: int) -> Dict[str, Any]:
  """Pytree of bools over the backbone params: False for the stem and frozen stages."""
  def frozen(name):
    if name.startswith('stem'):
      return frozen_stages >= 1
    if name.startswith('layer'):
      return int(name[5:].split('_')[0]) <= frozen_stages
    return False
  return {k: jax.tree_util.tree_map(lambda _: not frozen(k), v) for k, v in backbone_params.items()}
