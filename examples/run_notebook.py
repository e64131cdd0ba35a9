"""Re-executes examples/segment_unseen_classes.ipynb in place, outputs included.

python examples/run_notebook.py [--default_workdir runs/shapes] [--hard_workdir runs/shapes_hard]

A workdir without a finished checkpoint is trained first (configs/shapes.py
on that preset's ZSI-Shapes, generated if missing), so on a fresh clone this
one command gives the notebook's pictures from the current code.
"""
import argparse
import json
import os
import subprocess
import sys

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'examples', 'segment_unseen_classes.ipynb')
sys.path.insert(0, ROOT)

from zsi_jax.data import shapes  # noqa: E402



def trained(workdir: str) -> bool:
  """Whether the workdir holds the checkpoint of its config's last step."""
  config = os.path.join(workdir, 'config.json')
  if not os.path.exists(config):
    return False
  with open(config) as f:
    steps = json.load(f)['total_steps']
  return os.path.isdir(os.path.join(workdir, 'checkpoints', str(steps)))


def ensure_trained(preset: str, workdir: str):
  if trained(workdir):
    return
  data = os.path.join('data', 'generated', shapes.PRESETS[preset].name)
  if not os.path.exists(os.path.join(data, 'split.json')):
    subprocess.run([sys.executable, 'data_prep/make_shapes.py', '--preset', preset, '--out', data],
                   cwd=ROOT, check=True)
  subprocess.run([sys.executable, 'train.py', '--config', 'configs/shapes.py', '--workdir', workdir,
                  f'--config.data.root={data}'], cwd=ROOT, check=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--default_workdir', default='runs/shapes')
  p.add_argument('--hard_workdir', default='runs/shapes_hard')
  a = p.parse_args()
  workdirs = {'default': a.default_workdir, 'hard': a.hard_workdir}
  for preset, workdir in workdirs.items():
    ensure_trained(preset, os.path.join(ROOT, workdir) if not os.path.isabs(workdir) else workdir)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  os.environ['ZSI_WORKDIRS'] = ','.join(f'{k}={v}' for k, v in workdirs.items())
  nbclient.NotebookClient(nb, timeout=900, kernel_name='python3',
                          resources={'metadata': {'path': ROOT}}).execute()
  nbformat.write(nb, NOTEBOOK)
  print(f'wrote {NOTEBOOK}')


if __name__ == '__main__':
  main()
