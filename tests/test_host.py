"""zsi_jax.host against /proc/cpuinfo (Linux), an independent record of the same CPU."""
import os

import pytest

from zsi_jax import host


@pytest.mark.skipif(not os.path.exists('/proc/cpuinfo'), reason='needs /proc/cpuinfo')
def test_describe_matches_proc_cpuinfo():
  fields = {}
  for line in open('/proc/cpuinfo'):
    if ':' in line:
      k, v = line.split(':', 1)
      fields.setdefault(k.strip(), v.strip())
  h = host.describe()
  if h['model'] == 'unknown':
    pytest.skip('lscpu is not installed')
  assert h['model'] == fields['model name']
  assert str(h['family']) == fields['cpu family'] and str(h['model_number']) == fields['model']
  assert set(fields['flags'].split()) <= set(h['flags'].split()) | {''}
  assert host.short_name(h) == f"{fields['model name']} (family {fields['cpu family']}, " \
                               f"model {fields['model']})"
