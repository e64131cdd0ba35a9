"""The pod rehearsal (tools/pod_rehearsal.py) passes every check: a bucket
workdir and dataset, 2 processes x 2 CPU devices with grain workers, SIGTERM
to one process mid-run, a restart equal to an uninterrupted run bit for bit,
and distributed evaluation equal to one process."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_pod_rehearsal(tmp_path):
  report = tmp_path / 'report.json'
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop('XLA_FLAGS', None)
  r = subprocess.run([sys.executable, 'tools/pod_rehearsal.py', '--report', str(report)],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
  assert report.exists(), r.stdout[-3000:] + r.stderr[-3000:]
  result = json.loads(report.read_text())
  failed = [name for name, ok in result['checks'].items() if not ok]
  assert not failed and r.returncode == 0, (failed, r.stdout[-5000:])
  assert len(result['checks']) == 11
  facts = result['facts']
  step = facts['preempted_at_steps'][0]
  # The preemption's checkpoint, and the periodic one (every 8 steps) if it was reached.
  assert facts['checkpoints_after'] == sorted({step} | ({8} if step >= 8 else set()))
  assert facts['images'] == {'zsi': 4, 'gzsi': 4}
  assert facts['periodic_eval_steps'] == [6, 12]
  assert min(facts['detections'].values()) > 0   # the equality compares real detections
  print(r.stdout)   # the report, for -s
