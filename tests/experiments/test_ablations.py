"""experiments/ablations.py: the rule that calls a direction, the tables, reuse of finished runs."""
import fcntl
import json
import os
import re
import statistics
import threading
import time

import numpy as np
import pytest

from experiments import ablations
from zsi_jax import jsonio


def test_direction_is_called_only_beyond_the_seeds_spread():
  call = ablations.call_direction
  assert call([0.90], [0.80], 5.0) == 'not called (one seed)'
  # Means differ by 1 point, but the reference's seeds spread by 4: not called.
  assert call([0.90, 0.91, 0.92], [0.86, 0.90, 0.94], 5.0).startswith('within seed spread (+1.0)')
  # 5 points apart with a spread of 1: called, and compared with the paper's sign.
  up, ref = [0.94, 0.95, 0.96], [0.89, 0.90, 0.91]
  assert call(up, ref, 3.0) == '+5.0; agrees'
  assert call(up, ref, -3.0) == '+5.0; **disagrees**'
  assert call(ref, up, -3.0) == '-5.0; agrees'
  assert call(up, ref, None) == '+5.0; no paper number'
  assert call(up, ref, 0.05) == '+5.0; paper: no change'
  # Identical seeds (no spread) still need half a point.
  assert call([0.903, 0.903], [0.900, 0.900], 1.0).startswith('within seed spread')
  assert call([0.907, 0.907], [0.900, 0.900], 1.0) == '+0.7; agrees'


def _metrics(r05, seen_map=0.3):
  """Fake metrics of one run: every recall ``r05``, mAPs fixed."""
  kind = {f'recall@100_iou{t}': r05 for t in ('0.4', '0.5', '0.6')}
  kind['map@0.5'] = 0.5
  gz = dict(kind, **{'seen_recall@100': r05, 'seen_map@0.5': seen_map, 'unseen_recall@100': r05,
                     'unseen_map@0.5': 0.4, 'hm_recall@100': r05, 'hm_map@0.5': 0.35})
  return {'zsi': {'box': dict(kind), 'mask': dict(kind), 'train_seconds': 60.0,
                  'command': 'python train.py --config configs/shapes.py'},
          'gzsi': {'box': dict(gz), 'mask': dict(gz)}}


def test_tables_show_mean_sd_and_called_directions(tmp_path):
  seeds = [0, 1, 2]
  ref = {s: _metrics(v) for s, v in zip(seeds, (0.80, 0.81, 0.82))}
  res = {'default': {'zsd_smh_e': ref,
                     'smh_decoder': {s: _metrics(v) for s, v in zip(seeds, (0.90, 0.91, 0.92))},
                     'det_decoder': {s: _metrics(v) for s, v in zip(seeds, (0.80, 0.82, 0.81))},
                     'full': ref},
         'hard': {'full': {0: _metrics(0.6)}}}
  out = tmp_path / 'RESULTS.md'
  ablations.write_results(res, seeds, 1000, 500, str(out))
  text = out.read_text()
  assert '## Default preset' in text and '## Hard preset' in text
  rows = {line.split('|')[1].strip(): line for line in text.splitlines()
          if line.startswith('| ') and 'decoder' in line}
  sd = 100 * statistics.stdev([0.90, 0.91, 0.92])
  assert f'| 91.0 ± {sd:.1f} |' in rows['+ SMH decoder']
  assert rows['+ SMH decoder'].rstrip().endswith('+10.0; agrees |')      # paper: +3.2
  assert 'within seed spread' in rows['+ Det decoder']
  assert 'Not run yet: + BA-RPN & Sync-bg (full).' in text
  # The hard preset's single seed is shown without a spread.
  hard = text[text.index('## Hard preset'):]
  assert re.search(r'\| ZSI \(mask\) \| 60\.0 \| 60\.0 \| 60\.0 \| 50\.0 \|', hard)


def test_finished_runs_are_reused_without_training(tmp_path, monkeypatch):
  monkeypatch.setattr(ablations, 'RESULTS_DIR', str(tmp_path))
  for setting in ('zsi', 'gzsi'):
    path = ablations.metrics_path('hard', 'onehot', 2, 500, setting)
    jsonio.write_json(path, _metrics(0.1)[setting])
  assert path.startswith(str(tmp_path / 'hard'))

  def no_run(*args, **kwargs):
    raise AssertionError('a finished run was started again')
  monkeypatch.setattr(ablations.subprocess, 'run', no_run)
  got = ablations.run_variant('hard', 'onehot', 2, 500, str(tmp_path / 'runs'), print)
  assert got['zsi']['mask']['recall@100_iou0.5'] == 0.1
  # An unfinished one is started.
  with pytest.raises(AssertionError, match='started again'):
    ablations.run_variant('hard', 'random', 2, 500, str(tmp_path / 'runs'), print)


def test_evaluation_only_variant_trains_its_checkpoint_only_when_missing(tmp_path, monkeypatch):
  # full_projected scores full_ref's checkpoint; a new checkout has no run folder.
  monkeypatch.setattr(ablations, 'RESULTS_DIR', str(tmp_path / 'results'))
  runs = str(tmp_path / 'runs')
  workdir = ablations.run_dir(runs, 'hard', 'full_projected', 1, 500)
  assert workdir == ablations.run_dir(runs, 'hard', 'full_ref', 1, 500)
  commands = []

  def fake_check(cmd, log_file):
    commands.append(cmd[1])
    if cmd[1] == 'train.py':
      with open(f'{workdir}/config.json', 'w') as f:
        f.write('{}')
    else:
      for setting in ('zsi', 'gzsi'):
        jsonio.write_json(f'{workdir}/eval/{setting}_metrics.json', _metrics(0.2)[setting])
  monkeypatch.setattr(ablations, '_check', fake_check)
  os.makedirs(workdir)
  ablations.run_variant('hard', 'full_projected', 1, 500, runs, print)
  assert commands == ['train.py', 'eval.py']
  # With the checkpoint there (and the metrics removed), only evaluation runs.
  os.remove(ablations.metrics_path('hard', 'full_projected', 1, 500, 'zsi'))
  commands.clear()
  ablations.run_variant('hard', 'full_projected', 1, 500, runs, print)
  assert commands == ['eval.py']


def test_sweeps_side_by_side_wait_for_a_run_in_use(tmp_path, monkeypatch):
  # A sweep that finds another holding the run folder waits, then reuses its
  # metrics instead of training the same folder at the same time.
  monkeypatch.setattr(ablations, 'RESULTS_DIR', str(tmp_path / 'results'))
  runs = str(tmp_path / 'runs')
  started = []
  monkeypatch.setattr(ablations, '_check', lambda cmd, log_file: started.append(cmd[1]))
  workdir = ablations.run_dir(runs, 'hard', 'zsd_smh_e', 2, 500)
  os.makedirs(os.path.dirname(workdir))
  other = open(workdir + '.lock', 'w')                 # the other sweep's hold
  fcntl.flock(other, fcntl.LOCK_EX)
  waiting = []
  result = {}
  thread = threading.Thread(target=lambda: result.update(
      ablations.run_variant('hard', 'zsd_smh_e', 2, 500, runs, waiting.append)))
  thread.start()
  deadline = time.time() + 10
  while not waiting and time.time() < deadline:
    time.sleep(0.05)
  assert waiting and 'in use by another sweep' in waiting[0]
  assert not started and thread.is_alive()
  for setting in ('zsi', 'gzsi'):                      # the other sweep finishes the run
    jsonio.write_json(ablations.metrics_path('hard', 'zsd_smh_e', 2, 500, setting),
                      _metrics(0.3)[setting])
  fcntl.flock(other, fcntl.LOCK_UN)
  other.close()
  thread.join(10)
  assert not thread.is_alive() and not started
  assert result['zsi']['mask']['recall@100_iou0.5'] == 0.3


def test_verdict_counts_each_kind_of_call():
  line = ablations.verdict_line(['+5.0; agrees', '-2.0; **disagrees**', 'within seed spread (+0.1)',
                                 '+1.0; paper: no change', '+3.0; agrees'])
  assert line == ('of 5 rows, 2 agree with the paper, 1 disagree, 1 move where the paper saw no '
                  "change, 1 within the seeds' spread.")
