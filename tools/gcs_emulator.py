"""A Google Cloud Storage emulator on 127.0.0.1 (the gcp-storage-emulator package),
for rehearsing bucket workdirs without a cloud account.

Three behaviours of GCS that the package lacks and that orbax's OCDBT
checkpoints rely on (through tensorstore) are added here: a download names
the object's generation in the ``x-goog-generation`` header; an upload with
``ifGenerationMatch`` is refused (412) unless the object's generation matches
(0: the object must not exist); and connections are served side by side (the
package serves one at a time, so a client's idle connection stalls every
other), with the requests themselves still handled one at a time.

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
import tempfile
import threading
import time
from http import HTTPStatus
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
    self._log = None

  def start(self):
    # Its log goes to a file: a pipe nobody reads fills up and stalls the server.
    self._log = tempfile.TemporaryFile(mode='w+')
    self._proc = subprocess.Popen(
        [sys.executable, __file__, '--serve', '--port', str(self.port), '--bucket', self.bucket],
        stdout=subprocess.DEVNULL, stderr=self._log, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
      if self._proc.poll() is not None:
        self._log.seek(0)
        raise RuntimeError(f'the GCS emulator exited: {self._log.read()[-500:]}')
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
    if self._log is not None:
      self._log.close()
      self._log = None

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()
    return False


def serve(port: int, bucket: str):
  """Runs the emulator in this process, with the GCS behaviours described above."""
  import http.server

  from gcp_storage_emulator import server
  from gcp_storage_emulator.exceptions import NotFound
  from gcp_storage_emulator.handlers import objects
  download, insert = objects.download, objects.insert
  uploads = threading.Lock()
  http.server.HTTPServer = http.server.ThreadingHTTPServer
  handle, one_at_a_time = server.Router.handle, threading.Lock()

  def handle_alone(router, method):
    with one_at_a_time:
      return handle(router, method)
  server.Router.handle = handle_alone

  def generation(storage, bucket_name, object_id) -> str:
    try:
      return str(storage.get_file_obj(bucket_name, object_id).get('generation') or '0')
    except NotFound:
      return '0'

  def download_with_generation(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
      response['x-goog-generation'] = generation(storage, request.params['bucket_name'],
                                                 request.params['object_id'])

  def insert_if_generation_matches(request, response, storage, *args, **kwargs):
    wanted = request.query.get('ifGenerationMatch')
    with uploads:
      if wanted and 'name' in request.query:
        have = generation(storage, request.params['bucket_name'], request.query['name'][0])
        if have != wanted[0]:
          response.status = HTTPStatus.PRECONDITION_FAILED
          return
      return insert(request, response, storage, *args, **kwargs)

  # Late lookups (the router's fallback; objects.get's alt=media downloads) ...
  objects.insert, objects.download = insert_if_generation_matches, download_with_generation
  for _, methods in server.HANDLERS:                 # ... and the routing table
    for method, handler in list(methods.items()):
      if handler is download:
        methods[method] = download_with_generation
      elif handler is insert:
        methods[method] = insert_if_generation_matches
  server.create_server('127.0.0.1', port, in_memory=True, default_bucket=bucket).run()


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--port', type=int, default=0)
  p.add_argument('--bucket', default='zsi')
  p.add_argument('--serve', action='store_true', help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.serve:
    return serve(a.port, a.bucket)
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
