"""The path layer: local folders and (emulated) GCS buckets behave alike for
everything the project writes and reads; storage failures are one line."""
import errno
import os
import time

import pytest

from zsi_jax import storage
from zsi_jax.jsonio import read_json, write_json


@pytest.fixture(params=['local', 'gcs'])
def folder(request, tmp_path):
  if request.param == 'local':
    return str(tmp_path / 'w')
  gcs = request.getfixturevalue('gcs')
  return f'gs://{gcs.bucket}/storage_test/{request.node.originalname}_{time.time_ns()}'


def test_write_read_list_rename_remove(folder):
  path = storage.join(folder, 'a', 'b.json')
  write_json(path, {'x': [1, 2]})
  assert read_json(path) == {'x': [1, 2]}
  assert storage.isdir(storage.join(folder, 'a')) and not storage.isdir(path)
  assert storage.listdir(storage.join(folder, 'a')) == ['b.json']   # no temporary left
  storage.write_bytes(storage.join(folder, 'c.bin'), b'\x00\x01')
  assert sorted(storage.walk_files(folder)) == ['a/b.json', 'c.bin']
  storage.rename(storage.join(folder, 'c.bin'), storage.join(folder, 'd.bin'))
  assert storage.read_bytes(storage.join(folder, 'd.bin')) == b'\x00\x01'
  storage.remove(storage.join(folder, 'd.bin'))
  storage.remove(storage.join(folder, 'd.bin'))          # a missing file is fine
  assert not storage.exists(storage.join(folder, 'd.bin'))
  with pytest.raises(FileNotFoundError, match='thing not found: .*nope.json'):
    read_json(storage.join(folder, 'nope.json'), 'thing')


def test_append_file_continues_and_uploads_on_flush(folder):
  path = storage.join(folder, 'metrics.jsonl')
  f = storage.AppendFile(path, upload_every=3600)
  f.write('1\n')
  f.write('2\n')
  if storage.is_url(path):
    assert not storage.exists(path)                    # held until the next upload
  f.flush()
  assert storage.read_text(path) == '1\n2\n'
  f.close()
  g = storage.AppendFile(path, upload_every=0)         # a resumed run continues the file
  g.write('3\n')
  assert storage.read_text(path) == '1\n2\n3\n'
  g.close()


def test_local_copy_mirrors_a_folder_once(gcs, tmp_path, monkeypatch):
  monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / 'cache'))
  url = f'gs://{gcs.bucket}/mirror_src'
  storage.write_text(f'{url}/x.txt', 'x')
  storage.write_text(f'{url}/sub/y.txt', 'yy')
  local = storage.local_copy(url)
  assert local.startswith(str(tmp_path / 'cache'))
  assert open(os.path.join(local, 'sub', 'y.txt')).read() == 'yy'
  stamp = os.stat(os.path.join(local, 'x.txt')).st_mtime_ns
  assert storage.local_copy(url) == local                   # complete: reused, not copied
  assert os.stat(os.path.join(local, 'x.txt')).st_mtime_ns == stamp
  storage.write_text(f'{url}/sub/y.txt', 'yyy')              # changed in the bucket: copied anew
  assert open(os.path.join(storage.local_copy(url), 'sub', 'y.txt')).read() == 'yyy'
  assert storage.local_copy(str(tmp_path)) == str(tmp_path)  # local paths as they are


def test_check_writable_names_the_folder_and_the_cause(gcs, tmp_path, monkeypatch):
  storage.check_writable(str(tmp_path / 'new' / 'run'))
  storage.check_writable(f'gs://{gcs.bucket}/new/run')
  assert not storage.isdir(f'gs://{gcs.bucket}/new/run')       # the probe is gone
  with pytest.raises(OSError, match=r'^workdir gs://no-such-zsi-bucket/run: cannot write: '
                                    r'no such bucket'):
    storage.check_writable('gs://no-such-zsi-bucket/run', 'workdir')
  (tmp_path / 'file').write_text('')
  with pytest.raises(OSError, match=r'cannot write: .*Not a directory'):
    storage.check_writable(str(tmp_path / 'file' / 'run'))


@pytest.mark.parametrize('error,expected', [
    (OSError(errno.ENOSPC, 'No space left on device'), 'no space left on the device'),
    (PermissionError(errno.EACCES, 'Permission denied'), 'permission denied'),
    (OSError(errno.EROFS, 'Read-only file system'), 'read-only file system'),
    (RuntimeError('401 Anonymous caller does not have storage.objects.create access'),
     'no credentials for it'),
    (TimeoutError('no answer within 5 s (timed out)'), 'cannot be reached'),
])
def test_describe_error(error, expected):
  assert expected in storage.describe_error(error)
