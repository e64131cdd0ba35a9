"""torchvision ResNet weights -> our ResNet: equal C2..C5 feature maps."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from zsi_jax.modeling import convert
from zsi_jax.modeling.resnet import ResNet


def torch_features(model, x):
  x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
  outs = []
  for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
    x = layer(x)
    outs.append(x.permute(0, 2, 3, 1).detach().numpy())
  return outs


def randomised(model):
  g = torch.Generator().manual_seed(0)
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
      m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
      m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
      m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
  return model.eval()


@pytest.mark.parametrize('depth,ctor', [(50, torchvision.models.resnet50),
                                        (18, torchvision.models.resnet18)])
def test_converted_features_match_torchvision(depth, ctor, tmp_path):
  torch.manual_seed(0)
  tv = randomised(ctor(weights=None))
  x = torch.randn(1, 3, 96, 128)
  ref = torch_features(tv, x)
  sd = {k: v.numpy() for k, v in tv.state_dict().items()}
  path = tmp_path / 'w.npz'
  np.savez(path, **sd)
  net = ResNet(depth=depth, width=1.0, norm='frozen_bn', frozen_stages=0)
  params, stats = convert.torchvision_resnet_to_flax(convert.load_state_dict(str(path)), depth)
  ours = net.apply({'params': params, 'batch_stats': stats},
                   jnp.asarray(x.permute(0, 2, 3, 1).numpy()))
  for o, r in zip(ours, ref):
    assert o.shape == r.shape
    err = np.abs(np.asarray(o) - r).max() / np.abs(r).max()
    assert err < 1e-4, err


def test_pth_file_and_clear_errors(tmp_path):
  tv = torchvision.models.resnet18(weights=None)
  path = tmp_path / 'r18.pth'
  torch.save(tv.state_dict(), path)
  sd = convert.load_state_dict(str(path))
  params, _ = convert.torchvision_resnet_to_flax(sd, 18)
  assert params['stem_conv']['kernel'].shape == (7, 7, 3, 64)
  del sd['layer2.0.conv1.weight']
  with pytest.raises(KeyError, match='layer2.0.conv1.weight'):
    convert.torchvision_resnet_to_flax(sd, 18)
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    convert.load_state_dict(str(tmp_path / 'nope.pth'))
  net = ResNet(depth=18, width=0.5, norm='frozen_bn', frozen_stages=0)
  small = net.init(__import__('jax').random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))['params']
  with pytest.raises(ValueError, match='conv1.weight'):
    convert.torchvision_resnet_to_flax(convert.load_state_dict(str(path)), 18, small)
