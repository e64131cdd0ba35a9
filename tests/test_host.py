"""zsi_jax.host against /proc/cpuinfo (Linux), an independent record of the same CPU; the
heap release against the process's resident memory; the reuse of freed memory
against the kernel's count of page faults."""
import ctypes
import ctypes.util
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
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


def _rss_mib():
  with open('/proc/self/status') as f:
    return next(int(l.split()[1]) for l in f if l.startswith('VmRSS')) / 1024


@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='needs /proc (Linux)')
def test_release_freed_heap_returns_freed_pages():
  # 300 MiB in 64 KiB blocks (below glibc's mmap threshold: on the heap),
  # written so they are resident, then freed except the last, which keeps
  # the heap from shrinking by itself: the pages stay in the process until
  # released.
  libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  if not hasattr(libc, 'malloc_trim'):
    pytest.skip('not glibc')
  libc.malloc.restype = ctypes.c_void_p
  libc.free.argtypes = [ctypes.c_void_p]
  blocks = [libc.malloc(64 * 1024) for _ in range(4800)]
  for b in blocks:
    ctypes.memset(b, 1, 64 * 1024)
  for b in blocks[:-1]:
    libc.free(b)
  before = _rss_mib()
  assert host.release_freed_heap()
  after = _rss_mib()
  libc.free(blocks[-1])
  assert before - after > 200, (before, after)


def test_heap_is_released_after_each_compilation(monkeypatch):
  calls = []
  monkeypatch.setattr(host, 'release_freed_heap', lambda: calls.append(1))
  host.release_heap_after_compiles()
  host.release_heap_after_compiles()          # once per process: one listener
  f = jax.jit(lambda x: x * 3 + 1)
  f(np.arange(7.0)).block_until_ready()
  assert len(calls) == 1
  f(np.arange(7.0)).block_until_ready()               # cached: no compilation
  assert len(calls) == 1
  f(np.arange(9.0)).block_until_ready()               # a new shape compiles again
  assert len(calls) == 2


# Allocates, writes and frees a 256 MiB block twice, each time in a new
# thread (as XLA's workers do), and prints the page faults of each write.
_FRESH_PAGES = textwrap.dedent("""
    import ctypes, ctypes.util, resource, sys, threading
    from zsi_jax import host
    if sys.argv[1] == 'reuse':
      assert host.reuse_freed_memory()
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    faults = []
    def write_fresh_block(size=256 * 2**20):
      block = libc.malloc(size)
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      ctypes.memset(block, 1, size)
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
      libc.free(block)
    for _ in range(2):
      worker = threading.Thread(target=write_fresh_block)
      worker.start()
      worker.join()
    print(*faults)
""")


def _fault_counts(mode):
  out = subprocess.run([sys.executable, '-c', _FRESH_PAGES, mode], capture_output=True,
                       text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  return [int(v) for v in out.stdout.split()]


@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='needs Linux (glibc)')
def test_reuse_freed_memory_writes_the_second_block_into_resident_pages():
  if host._mallopt() is None:
    pytest.skip('not glibc')
  # glibc's default: each large block is mapped anew, so both writes fault on
  # every page (65536 of 4 KiB; fewer where huge pages serve them).
  first, second = _fault_counts('default')
  assert second > first / 2 > 0, (first, second)
  # Reused: the first write faults its pages in, the second finds them resident.
  first, second = _fault_counts('reuse')
  assert first > 1000 and second < first / 20, (first, second)

