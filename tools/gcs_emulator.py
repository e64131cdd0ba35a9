"""A Google Cloud Storage emulator on 127.0.0.1 (the gcp-storage-emulator package),
for rehearsing bucket workdirs without a cloud account.

    with Emulator(bucket='zsi') as gcs:
      env = dict(os.environ, **gcs.env)   # gcsfs (so etils.epath) and orbax use it
      ... train.py --workdir gs://zsi/run ...

python tools/gcs_emulator.py [--port P] [--bucket B] runs one in the foreground
and prints the variables to export.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from typing import Dict, Optional


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Emulator:
  """An in-memory emulator process with one bucket; a context manager.

  ``env``: STORAGE_EMULATOR_HOST (read by gcsfs and google-cloud-storage) and
  TENSORSTORE_GCS_HTTP_URL (read by tensorstore, orbax's array store).
  """

  def __init__(self, bucket: str = 'zsi', port: Optional[int] = None):
    self.bucket = bucket
    self.port = port or free_port()
    self.url = f'http://127.0.0.1:{self.port}'
    self.env: Dict[str, str] = dict(STORAGE_EMULATOR_HOST=self.url,
                                    TENSORSTORE_GCS_HTTP_URL=self.url)
    self._proc: Optional[subprocess.Popen] = None

  def start(self):
    self._proc = subprocess.Popen(
        [sys.executable, '-m', 'gcp_storage_emulator', 'start', '--host', '127.0.0.1',
         '--port', str(self.port), '--in-memory', '--default-bucket', self.bucket],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
      if self._proc.poll() is not None:
        raise RuntimeError(f'the GCS emulator exited: {self._proc.stderr.read()[-500:]}')
      try:
        with socket.create_connection(('127.0.0.1', self.port), timeout=1):
          return self
      except OSError:
        time.sleep(0.2)
    self.stop()
    raise RuntimeError(f'the GCS emulator did not open port {self.port} within 30 s')

  def stop(self):
    if self._proc is not None and self._proc.poll() is None:
      self._proc.terminate()
      try:
        self._proc.wait(10)
      except subprocess.TimeoutExpired:
        self._proc.kill()
    self._proc = None

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()
    return False


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--port', type=int, default=0)
  p.add_argument('--bucket', default='zsi')
  a = p.parse_args()
  with Emulator(a.bucket, a.port or None) as gcs:
    for k, v in gcs.env.items():
      print(f'export {k}={v}')
    print(f'# bucket gs://{gcs.bucket}; Ctrl-C stops the emulator', flush=True)
    try:
      gcs._proc.wait()
    except KeyboardInterrupt:
      pass


if __name__ == '__main__':
  main()
