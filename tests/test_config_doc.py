"""docs/CONFIG.md is what tools/config_doc.py makes of the config schema, and the
schema covers every default and nothing else."""
import os
import subprocess
import sys

from zsi_jax import config_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_doc_is_current():
  r = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'config_doc.py'), '--check'],
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stderr


def test_every_setting_has_a_meaning_and_its_default_is_allowed():
  from zsi_jax.config_check import validate
  validate(config_defaults.base_config())
  from zsi_jax.config_check import _flatten
  names = [name for name, _ in config_defaults.keys()]
  assert sorted(names) == sorted(_flatten(config_defaults.base_config().to_dict()))
  for name, key in config_defaults.keys():
    assert key.doc and '\n' not in key.doc, name
