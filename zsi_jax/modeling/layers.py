"""Layers shared by the heads."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def resolve_conv_impl(impl: str, training: bool = True) -> str:
  """``'conv'`` or ``'gemm'`` for a ``model.conv_impl`` setting.

  ``'auto'`` is im2col GEMM on the CPU when training (see ``Conv3x3``) and the
  convolution everywhere else: forward-only, XLA:CPU's convolution library is
  faster than im2col (147 vs 274 ms for the 128-RoI mask-head convolution).
  """
  if impl == 'auto':
    return 'gemm' if training and jax.default_backend() == 'cpu' else 'conv'
  if impl not in ('conv', 'gemm'):
    raise ValueError(f"conv_impl must be 'auto', 'conv' or 'gemm', got {impl!r}")
  return impl


def im2col3x3(x):
  """[N, H, W, C] -> [N, H, W, 9C]: each pixel's 3x3 neighbourhood (zero padded),
  ordered (dy, dx, c) like a [3, 3, C, O] kernel."""
  h, w = x.shape[1:3]
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)


class Conv3x3(nn.Module):
  """3x3 convolution, stride 1, zero padding 1; parameters as ``nn.Conv``'s.

  ``impl='gemm'`` computes it as im2col and one matmul. On XLA:CPU this is
  faster for the layers that dominate a train step: convolutions inside the
  branches of a ``lax.switch`` (the mask-RoI buckets of ZSIModel.losses) run
  as a generic loop about 100x slower than the convolution library, while
  matmuls keep their speed there; and the kernel gradient of a convolution on
  a large map with a small batch (the RPN and FPN output convs on P2) runs at
  a fraction of the GEMM rate (forward + backward on [2, 128, 128, 256]:
  1.66 s as a convolution, 1.06 s as im2col GEMM, 2 cores). im2col costs 9x
  the input in memory, so GPUs and TPUs use ``'conv'``.

  Attributes:
    features: output channels.
    impl: 'conv', 'gemm' or 'auto' (as ``resolve_conv_impl`` for training:
      gemm on the CPU, conv elsewhere; ``training.loop.build_model`` resolves
      it to conv for models built for inference).
  """
  features: int
  impl: str = 'auto'
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """[N, H, W, C] -> [N, H, W, features]."""
    c = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (3, 3, c, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if resolve_conv_impl(self.impl) == 'gemm':
      y = im2col3x3(x) @ kernel.reshape(9 * c, self.features)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + bias.astype(self.dtype)


class Conv1x1(nn.Module):
  """1x1 convolution with optional stride (no padding); parameters as ``nn.Conv``'s.

  ``impl='gemm'`` computes it as a matmul over channels (after subsampling for
  a stride). On XLA:CPU the kernel gradient of a 1x1 convolution is lowered to
  a convolution whose "batch" is the output channel, running at about 5
  GFLOP/s: the bottleneck, downsample, FPN lateral and RPN projection kernel
  gradients were a quarter of a ResNet-50-FPN train step. As a matmul the
  kernel gradient is one ``x^T g`` GEMM.

  Attributes:
    features: output channels.
    stride: spatial stride (1x1 kernels need no padding; output size
      ``ceil(H / stride)`` as ``nn.Conv`` with 'SAME' or zero padding).
    use_bias: add a bias (zeros at init).
    impl: 'auto', 'conv' or 'gemm' (see ``resolve_conv_impl``).
  """
  features: int
  stride: int = 1
  use_bias: bool = True
  impl: str = 'auto'
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """[N, H, W, C] -> [N, ceil(H/stride), ceil(W/stride), features]."""
    c = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (1, 1, c, self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if resolve_conv_impl(self.impl) == 'gemm':
      if self.stride > 1:
        x = x[:, ::self.stride, ::self.stride]
      y = x @ kernel.reshape(c, self.features)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (self.stride, self.stride), 'VALID',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32).astype(
          self.dtype)
    return y
