"""Resuming a workdir: the config compared before anything is compiled or
written, shape mismatches reported as such, every step logged once, a quiet
console with a closing summary."""
import json
import os
import re
import shutil

from tests.scripts import run_script


def _copy(trained, tmp_path):
  data, workdir = trained
  copy = str(tmp_path / 'w')
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns('eval', 'predictions', '*.png',
                                                               'model.zsi'))
  return data, copy


def _train(data, workdir, *overrides):
  return run_script(['train.py', '--config', 'tests/tiny_config.py', '--workdir', workdir,
                     f'--config.data.root={data}', '--config.checkpoint_every=3',
                     '--config.eval_every=3', '--config.eval_images=2', *overrides], check=False)


def _snapshot(workdir):
  """Every file of the workdir but the log, with its bytes."""
  out = {}
  for folder, _, files in os.walk(workdir):
    for f in files:
      path = os.path.join(folder, f)
      if f not in ('train.log', 'console.txt'):
        out[os.path.relpath(path, workdir)] = open(path, 'rb').read()
  return out


def _error_line(r):
  lines = [l for l in r.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, r.stderr[-3000:]
  return lines[0]


def test_a_changed_model_setting_is_refused_before_anything_changes(trained, tmp_path):
  data, workdir = _copy(trained, tmp_path)
  before = _snapshot(workdir)
  r = _train(data, workdir, '--config.total_steps=6', '--config.model.fpn_channels=32',
             '--config.model.mask_head.channels=8')
  assert r.returncode == 1
  line = _error_line(r)
  assert 'model.fpn_channels = 16 there, 32 now' in line
  assert 'model.mask_head.channels = 16 there, 8 now' in line
  assert 'compiling the train step' not in r.stderr and '%|' not in r.stderr
  assert len(r.stderr.splitlines()) <= 4
  assert _snapshot(workdir) == before          # no .damaged checkpoint, config.json as it was


def test_a_checkpoint_that_does_not_fit_is_a_config_mismatch_not_damage(trained, tmp_path):
  # Without config.json to compare with, the checkpoint's shapes tell.
  data, workdir = _copy(trained, tmp_path)
  os.remove(os.path.join(workdir, 'config.json'))
  checkpoints = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  r = _train(data, workdir, '--config.total_steps=6', '--config.model.fpn_channels=32')
  assert r.returncode == 1
  line = _error_line(r)
  assert 'does not fit the model' in line and re.search(r'\(\d+(, \d+)*\) saved, \(', line)
  assert 'config differs' in line
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == checkpoints


def test_total_steps_already_reached_is_nothing_to_do(trained, tmp_path):
  data, workdir = _copy(trained, tmp_path)
  before = _snapshot(workdir)
  r = _train(data, workdir, '--config.total_steps=2')
  assert r.returncode == 0, r.stderr[-2000:]
  assert 'trained to step 3, at or beyond total_steps=2: nothing to train' in r.stderr
  assert 'compiling the train step' not in r.stderr
  assert _snapshot(workdir) == before


def test_resume_logs_every_step_once_and_says_what_it_accepted(trained, tmp_path):
  data, workdir = _copy(trained, tmp_path)
  # A run that logged steps 4 and 5 and was killed before checkpointing them.
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write(json.dumps({'step': 4, 'total': 9.0, 'lost': 1}) + '\n')
    f.write(json.dumps({'step': 5, 'total': 9.0, 'lost': 1}) + '\n{"step": 6, "to')
  r = _train(data, workdir, '--config.total_steps=5', '--config.log_every=1')
  assert r.returncode == 0, r.stderr[-3000:]
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert not any('lost' in row for row in rows)
  steps = [row['step'] for row in rows if 'total' in row]
  assert steps == sorted(set(steps)) and steps[-3:] == [3, 4, 5]
  assert 'resuming with total_steps = 5 (was 3)' in r.stderr
  # A quiet console: no absl prefixes; the ETA starts after compilation; a closing summary.
  assert not [l for l in r.stderr.splitlines() if re.match(r'[IWEF]\d{4} ', l)], r.stderr
  assert r.stderr.index('compiling the train step') < r.stderr.index('%|')
  ckpt = os.path.join(workdir, 'checkpoints')
  assert f'trained to step 5; checkpoint 5 in {ckpt}' in r.stdout
  assert f'python eval.py --workdir {workdir}' in r.stdout
