"""A pod rehearsal on one machine: what a TPU pod slice or GPU cluster run goes
through, with real components on loopback.

python tools/pod_rehearsal.py [--bucket gs://BUCKET/PREFIX] [--report FILE]

1. A tiny ZSI-Shapes dataset goes to the bucket, and its TFDS dataset is
   built into the bucket (data_prep/make_tfds.py --out gs://...).
2. Two processes x two CPU devices (jax.distributed over 127.0.0.1, grain
   with a worker process each) train into a gs:// workdir without
   interruption, with a distributed seen-class evaluation every 6 steps:
   the reference.
3. The same run again; once it is a few steps in, one process alone gets
   SIGTERM (a preemption notice). Both must stop after the same step, save
   that step's checkpoint, print the preemption line and exit with 143,
   leaving no process (grain workers included) behind.
4. Both are started again with the same command and finish; the final
   parameters and the periodic evaluations must equal the reference's.
5. eval.py --distributed (both processes) scores ZSI and GZSI; the
   detections and metrics must equal a one-process evaluation's exactly (the
   score threshold is 0, so an untrained model's detections count too).

Without --bucket a GCS emulator is started on 127.0.0.1 (tools/gcs_emulator.py).
Prints a short report (and writes it as JSON with --report); exits 1 if any
check fails. Takes a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tools.gcs_emulator import Emulator, free_port  # noqa: E402

STEPS = 12                # 3 epochs of 8 images at batch 2 (4 steps per epoch)
CHECKPOINT_EVERY = 8      # the preemption lands between checkpoints
SIGNAL_AFTER_STEP = 2     # SIGTERM once process 0 reports this step
EVAL_EVERY = 6            # periodic evaluation, distributed over both processes


class Process:
  """One process of a multi-process command, its output collected as it comes."""

  def __init__(self, args: List[str], env: Dict[str, str]):
    self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    self.output = ''
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for chunk in iter(lambda: self.proc.stdout.read1(4096), b''):
      self.output += chunk.decode(errors='replace')

  def wait(self, timeout=900) -> int:
    code = self.proc.wait(timeout)
    self._reader.join(10)
    return code

  def step_reported(self) -> int:
    """The last step tqdm's progress bar showed ('train: ... | 3/12 ...')."""
    found = re.findall(r'\| *(\d+)/\d+ ', self.output)
    return int(found[-1]) if found else 0

  def leftovers(self, wait: float = 10.0) -> int:
    """Processes still in this process's session (grain workers) after it ended."""
    deadline = time.time() + wait
    while time.time() < deadline:
      try:
        os.killpg(self.proc.pid, 0)
      except ProcessLookupError:
        return 0
      time.sleep(0.25)
    out = subprocess.run(['ps', '-o', 'pid=', '-s', str(self.proc.pid)], capture_output=True,
                         text=True).stdout.split()
    return len(out)


def launch(script: str, flags: List[str], env: Dict[str, str], n: int = 2) -> List[Process]:
  port = free_port()
  return [Process([sys.executable, script] + flags +
                  ['--distributed', f'--coordinator_address=127.0.0.1:{port}',
                   f'--num_processes={n}', f'--process_id={i}'], env) for i in range(n)]


def periodic_evals(workdir: str) -> Dict[int, dict]:
  """step -> the eval/* scalars that process 0 logged in metrics.jsonl."""
  from zsi_jax.training.metrics import read_metrics
  return {m['step']: {k: v for k, v in m.items() if k.startswith('eval/')}
          for m in read_metrics(workdir) if any(k.startswith('eval/') for k in m)}


def params(workdir: str, step: int):
  """The parameters of a checkpoint (written by 2 x 2 devices) in this one process."""
  from zsi_jax import checkpoint
  return checkpoint.restore_variables(workdir, step)[0]['params']


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--bucket', default='', help='gs://BUCKET/PREFIX (default: an emulator)')
  p.add_argument('--report', default='', help='also write the report here (JSON)')
  a = p.parse_args()
  emulator = None
  if not a.bucket:
    emulator = Emulator(bucket='rehearsal').start()
    os.environ.update(emulator.env)
    a.bucket = 'gs://rehearsal/pod'
  try:
    report = rehearse(a.bucket.rstrip('/'))
  finally:
    if emulator is not None:
      emulator.stop()
  print(format_report(report))
  if a.report:
    with open(a.report, 'w') as f:
      json.dump(report, f, indent=1)
  sys.exit(0 if all(report['checks'].values()) else 1)


def rehearse(bucket: str) -> dict:
  import numpy as np

  from zsi_jax import storage
  from zsi_jax.data import shapes
  t0 = time.time()
  checks, facts = {}, {}
  local = tempfile.mkdtemp(prefix='zsi_rehearsal_')
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
             XLA_FLAGS='--xla_force_host_platform_device_count=2',
             ZSI_CACHE_DIR=os.path.join(local, 'cache'),
             JAX_COMPILATION_CACHE_DIR=os.path.join(local, 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')

  # 1. The dataset and its TFDS form in the bucket.
  shapes.generate(os.path.join(local, 'shapes'),
                  shapes.ShapesConfig(image_size=64, num_train=8, num_val=2, num_test=4,
                                      min_radius=8, max_radius=14, vector_dim=16),
                  log=lambda *_: None)
  data, tfds_dir = f'{bucket}/shapes', f'{bucket}/shapes_tfds'
  storage.copy_tree(os.path.join(local, 'shapes'), data)
  r = subprocess.run([sys.executable, 'data_prep/make_tfds.py', '--root', data, '--out', tfds_dir,
                      '--splits', 'train,val,test_zsi,test_gzsi'], cwd=ROOT, env=env,
                     capture_output=True, text=True)
  checks['tfds dataset built into the bucket'] = r.returncode == 0
  if r.returncode:
    facts['make_tfds'] = r.stdout[-2000:] + r.stderr[-2000:]
    return dict(checks=checks, facts=facts, seconds=time.time() - t0)

  train = ['train.py', '--config', 'tests/tiny_config.py', f'--config.data.root={data}',
           '--config.data.pipeline=grain', f'--config.data.tfds_dir={tfds_dir}',
           '--config.data.workers=1', '--config.data.batch_size=4',
           f'--config.total_steps={STEPS}', f'--config.checkpoint_every={CHECKPOINT_EVERY}',
           '--config.keep_checkpoints=10', f'--config.eval_every={EVAL_EVERY}',
           '--config.eval_images=2', '--config.model.test.score_threshold=0.0']
  straight, run = f'{bucket}/straight', f'{bucket}/run'

  # 2. The reference: no interruption.
  procs = launch(train[0], train[1:] + ['--workdir', straight], env)
  codes = [q.wait() for q in procs]
  checks['uninterrupted 2-process run'] = codes == [0, 0]
  if codes != [0, 0]:
    facts['straight_output'] = procs[0].output[-3000:] + procs[1].output[-3000:]
    return dict(checks=checks, facts=facts, seconds=time.time() - t0)

  # 3. Preemption: SIGTERM to process 1 alone, a few steps in.
  procs = launch(train[0], train[1:] + ['--workdir', run], env)
  while procs[0].proc.poll() is None and procs[0].step_reported() < SIGNAL_AFTER_STEP:
    time.sleep(0.05)
  facts['sigterm_sent_after_step'] = procs[0].step_reported()
  procs[1].proc.send_signal(signal.SIGTERM)
  codes = [q.wait() for q in procs]
  lines = [re.findall(r'^preempted \(SIGTERM\) at step (\d+); checkpoint (\d+) saved in (\S+); '
                      r'run the same command to resume$', q.output, re.M) for q in procs]
  steps = sorted(int(n) for n in storage.listdir(f'{run}/checkpoints') if n.isdigit())
  stopped = [int(found[0][0]) if found else None for found in lines]
  facts.update(preempted_exit_codes=codes, preempted_at_steps=stopped, checkpoints_after=steps,
               leftover_processes=[q.leftovers() for q in procs])
  checks['both processes stop after the same step'] = (stopped[0] is not None and
                                                      stopped[0] == stopped[1])
  checks['exit status 143 (128 + SIGTERM) on both'] = codes == [143, 143]
  checks['the stopping step is saved'] = stopped[0] in steps and stopped[0] < STEPS
  checks['no process left behind'] = facts['leftover_processes'] == [0, 0]

  # 4. The same command again finishes the run, equal to the reference.
  procs = launch(train[0], train[1:] + ['--workdir', run], env)
  codes = [q.wait() for q in procs]
  checks['resumed run finishes'] = codes == [0, 0] and f'resumed from step {stopped[0]}' in \
      procs[0].output
  if codes == [0, 0]:
    import jax
    a, b = params(straight, STEPS), params(run, STEPS)
    checks['resumed parameters equal the uninterrupted run bit for bit'] = all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    evals = [periodic_evals(w) for w in (straight, run)]
    facts['periodic_eval_steps'] = sorted(evals[0])
    checks['periodic evaluation on both processes, equal after the restart'] = (
        sorted(evals[0]) == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY)) and
        evals[0] == evals[1])

  # 5. Evaluation: one process, then two processes (two devices each, one image
  # per device and step: each process compiles the same program, from the cache).
  ev = ['eval.py', '--workdir', run, '--split', 'zsi,gzsi', '--batch_per_device', '1']
  single_env = env
  def outputs():
    return {s: (json.loads(storage.read_text(f'{run}/eval/{s}_metrics.json')),
                json.loads(storage.read_text(f'{run}/eval/{s}_results.json')))
            for s in ('zsi', 'gzsi')}
  r = subprocess.run([sys.executable] + ev, cwd=ROOT, env=single_env, capture_output=True,
                     text=True)
  single = outputs() if r.returncode == 0 else {}
  procs = launch(ev[0], ev[1:], env)
  codes = [q.wait() for q in procs]
  multi = outputs() if codes == [0, 0] else {}
  checks['distributed evaluation runs'] = bool(single) and bool(multi)
  strip = lambda m: {k: v for k, v in m.items() if not k.startswith('seconds')}
  checks['distributed detections and metrics equal one process exactly'] = (
      bool(single) and bool(multi) and all(
          strip(single[s][0]) == strip(multi[s][0]) and single[s][1] == multi[s][1]
          for s in single))
  multi = {s: m for s, (m, _) in multi.items()}
  facts['metrics'] = {s: {kind: {k: round(100 * multi[s][kind][k], 2)
                                 for k in ('recall@100_iou0.5', 'map@0.5')}
                          for kind in ('box', 'mask')} for s in multi}
  facts['images'] = {s: multi[s]['images'] for s in multi}
  facts['detections'] = {s: multi[s]['detections'] for s in multi}
  return dict(checks=checks, facts=facts, seconds=round(time.time() - t0, 1), bucket=bucket)


def format_report(report: dict) -> str:
  lines = [f'pod rehearsal: 2 processes x 2 CPU devices, workdir in {report.get("bucket")}, '
           f'{report["seconds"]:.0f} s']
  for name, ok in report['checks'].items():
    lines.append(f'  [{"ok" if ok else "FAILED"}] {name}')
  f = report['facts']
  if 'preempted_at_steps' in f:
    lines.append(f'  SIGTERM to process 1 after process 0 showed step {f["sigterm_sent_after_step"]}'
                 f'; stopped at steps {f["preempted_at_steps"]}, exit codes '
                 f'{f["preempted_exit_codes"]}; checkpoints then: {f["checkpoints_after"]}')
  equal = report['checks'].get('distributed detections and metrics equal one process exactly')
  for s, m in f.get('metrics', {}).items():
    box, mask = m['box'], m['mask']
    lines.append(f'  {s.upper()} ({f["images"][s]} images, {f["detections"][s]} detections): '
                 f'box R@0.5 {box["recall@100_iou0.5"]:.1f} mAP {box["map@0.5"]:.1f}; mask R@0.5 '
                 f'{mask["recall@100_iou0.5"]:.1f} mAP {mask["map@0.5"]:.1f}'
                 + (' (equal on 1 and 2 processes)' if equal else ''))
  for k in ('make_tfds', 'straight_output'):
    if k in f:
      lines.append(f[k])
  return '\n'.join(lines)


if __name__ == '__main__':
  main()
