"""Layers shared by the heads."""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def _resolve_impl(impl: str) -> str:
  if impl == 'auto':
    return 'gemm' if jax.default_backend() == 'cpu' else 'conv'
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
    impl: 'auto' (gemm on CPU, conv elsewhere), 'conv' or 'gemm'.
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
    if _resolve_impl(self.impl) == 'gemm':
      y = im2col3x3(x) @ kernel.reshape(9 * c, self.features)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + bias.astype(self.dtype)
