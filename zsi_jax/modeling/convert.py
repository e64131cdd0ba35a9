"""Imports torchvision ResNet weights into :class:`zsi_jax.modeling.resnet.ResNet`.

Reads a state dict from ``.pth`` (needs torch), ``.npz`` or ``.safetensors``
(needs the safetensors package) and returns Flax ``params`` and
``batch_stats`` for the backbone. Conv kernels go from OIHW to HWIO; BatchNorm
weight/bias become scale/bias, running mean/var the (frozen) statistics.
The classifier (``fc.*``) and ``num_batches_tracked`` are not used.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Mapping, Tuple

import numpy as np

from zsi_jax import storage
from zsi_jax.modeling.resnet import STAGE_BLOCKS

_IGNORED = re.compile(r'^fc\.|num_batches_tracked$')


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
  """A state dict as NumPy arrays from .pth / .pt, .npz or .safetensors (a local
  path, or a URL copied to this host's cache first)."""
  if not storage.exists(path):
    raise FileNotFoundError(f'weight file not found: {path}')
  ext = os.path.splitext(path)[1].lower()
  path = storage.local_copy(path)
  if ext in ('.pth', '.pt'):
    try:
      import torch
    except ImportError:
      raise ImportError(f'{path}: reading .pth needs torch; convert it to .npz or '
                        '.safetensors on a machine with torch') from None
    sd = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(sd, dict) and 'state_dict' in sd:
      sd = sd['state_dict']
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}
  if ext == '.npz':
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  if ext == '.safetensors':
    try:
      from safetensors.numpy import load_file
    except ImportError:
      raise ImportError(f'{path}: reading .safetensors needs the safetensors package') from None
    return dict(load_file(path))
  raise ValueError(f'{path}: unknown weight format {ext!r} (use .pth, .npz or .safetensors)')


def _bn(prefix):
  return {'scale': f'{prefix}.weight', 'bias': f'{prefix}.bias'}, {
      'mean': f'{prefix}.running_mean', 'var': f'{prefix}.running_var'}


def _layout(depth: int):
  """(flax module path -> {leaf: torch key}) for params and batch_stats."""
  params, stats = {}, {}
  params['stem_conv'] = {'kernel': 'conv1.weight'}
  params['stem_bn'], stats['stem_bn'] = _bn('bn1')
  convs = 2 if depth < 50 else 3
  for s, n in enumerate(STAGE_BLOCKS[depth]):
    for i in range(n):
      t, f = f'layer{s + 1}.{i}', f'layer{s + 1}_{i}'
      block_p, block_s = {}, {}
      for c in range(1, convs + 1):
        block_p[f'conv{c}'] = {'kernel': f'{t}.conv{c}.weight'}
        block_p[f'bn{c}'], block_s[f'bn{c}'] = _bn(f'{t}.bn{c}')
      if i == 0 and (s > 0 or depth >= 50):  # basic blocks of stage 1 keep their width
        block_p['downsample_conv'] = {'kernel': f'{t}.downsample.0.weight'}
        block_p['downsample_bn'], block_s['downsample_bn'] = _bn(f'{t}.downsample.1')
      params[f], stats[f] = block_p, block_s
  return params, stats


def torchvision_resnet_to_flax(state_dict: Mapping[str, np.ndarray], depth: int,
                               expected_params=None) -> Tuple[dict, dict]:
  """Converts a torchvision ResNet state dict.

  Args:
    state_dict: torch key -> array.
    depth: 18/34/50/101/152.
    expected_params: optional Flax params of the target ResNet to check shapes
      against (a mismatch names the key and both shapes).
  Returns:
    (params, batch_stats) nested dicts for the ResNet module.
  """
  layout_p, layout_s = _layout(depth)
  used = set()

  def fetch(key, leaf, where):
    if key not in state_dict:
      return None
    used.add(key)
    v = np.asarray(state_dict[key], np.float32)
    if leaf == 'kernel':
      v = v.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if where is not None:
      exp = np.shape(where)
      if exp != v.shape:
        raise ValueError(f'{key}: shape {v.shape} after conversion, the model expects {exp}')
    return v

  missing = []

  def build(layout, expected):
    """Mirrors the nested layout, replacing each torch key by its converted array."""
    out = {}
    for name, sub in layout.items():
      ref = expected.get(name) if isinstance(expected, dict) else None
      if isinstance(sub, dict):
        out[name] = build(sub, ref)
        continue
      v = fetch(sub, name, ref if expected_params is not None else None)
      if v is None:
        missing.append(sub)
      else:
        out[name] = v
    return out

  params = build(layout_p, expected_params)
  stats = build(layout_s, None)
  unexpected = sorted(k for k in state_dict if k not in used and not _IGNORED.search(k))
  if missing or unexpected:
    raise KeyError(f'ResNet-{depth} conversion: missing keys {missing[:10]}'
                   f'{" ..." if len(missing) > 10 else ""}; unexpected keys {unexpected[:10]}'
                   f'{" ..." if len(unexpected) > 10 else ""}')
  return params, stats


def load_backbone_into(variables: Mapping, path: str, depth: int) -> dict:
  """Returns ``variables`` with the ResNet backbone replaced by a torchvision file's weights.

  The ResNet must be the torchvision layout (width 1.0, BatchNorm); shapes are
  checked against the model's own backbone parameters, and a mismatch names the
  torch key. Frozen-BN statistics go into ``batch_stats``.
  """
  variables = {k: dict(v) for k, v in variables.items()}
  if 'backbone' not in variables.get('params', {}):
    raise KeyError('the model variables have no params/backbone to load weights into')
  params, stats = torchvision_resnet_to_flax(load_state_dict(path), depth,
                                             expected_params=variables['params']['backbone'])
  variables['params']['backbone'] = params
  if 'batch_stats' in variables and 'backbone' in variables['batch_stats']:
    variables['batch_stats']['backbone'] = stats
  return variables
