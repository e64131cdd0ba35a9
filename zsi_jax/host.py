"""What machine a measurement ran on: CPU model, family and flags (``lscpu``).

Recorded with every benchmark and every experiment run, because XLA rounds
differently on different CPUs (a deterministic training run gives other
numbers on another host) and speed depends on the CPU's vector units. The
model name alone is not enough: "AMD EPYC" covers several generations.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import subprocess
from typing import Dict

import jax


def describe() -> Dict[str, object]:
  """dict(cores, model, family, model_number, stepping, flags); 'unknown' where lscpu fails."""
  host: Dict[str, object] = dict(cores=os.cpu_count(), model='unknown', family='unknown',
                                 model_number='unknown', stepping='unknown', flags='')
  try:
    lines = subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines()
  except OSError:
    return host
  fields = {k.strip(): v.strip() for k, v in (l.split(':', 1) for l in lines if ':' in l)}
  host.update(model=fields.get('Model name', 'unknown'), family=fields.get('CPU family', 'unknown'),
              model_number=fields.get('Model', 'unknown'),
              stepping=fields.get('Stepping', 'unknown'), flags=fields.get('Flags', ''))
  return host


def short_name(host: Dict[str, object]) -> str:
  """E.g. 'AMD EPYC (family 26, model 2)'."""
  return f'{host.get("model", "unknown")} (family {host.get("family", "?")}, ' \
         f'model {host.get("model_number", "?")})'


def release_freed_heap() -> bool:
  """Hands the C heap's freed pages back to the OS (glibc ``malloc_trim``).

  Returns False where there is no glibc (macOS, musl): nothing is done there.
  """
  trim = _malloc_trim()
  if trim is None:
    return False
  trim(0)
  return True


@functools.lru_cache(maxsize=None)
def _glibc(name: str, *argtypes):
  """glibc's function ``name`` with these argument types, loaded once; None
  without glibc."""
  try:
    function = getattr(ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6'), name)
  except (OSError, AttributeError):
    return None
  function.argtypes = list(argtypes)
  return function


def _malloc_trim():
  return _glibc('malloc_trim', ctypes.c_size_t)


def _mallopt():
  return _glibc('mallopt', ctypes.c_int, ctypes.c_int)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def reuse_freed_memory() -> bool:
  """Keeps the memory a computation frees for the next one, instead of handing it
  back to the OS (glibc ``mallopt``; call it before JAX starts its backend).
  An opt-in (``bench_step.py --reuse_freed_memory``).

  XLA's CPU runtime allocates each call's buffers anew and frees them after:
  the R50-FPN train step's 1.6 GB arena of intermediate values is mapped from
  the OS at every step and unmapped after it, so every step touches 400
  thousand fresh 4 KiB pages (each a page fault, about 1.6 us on a KVM guest)
  that the kernel must zero. With one heap for all threads, no allocation
  mapped on its own and no trimming of the heap's top, the next step's arena
  reuses the same pages (docs/PERFORMANCE.md measures it). The heap's freed
  memory still goes back to the OS where :func:`release_freed_heap` runs
  (after each compilation). Not the default of the entry points: one arena
  makes the threads wait for each other, and ZSI-Shapes training (small
  buffers, input pipeline threads) ran 30% slower with it. For the CPU
  only (an accelerator's buffers are not on this heap). Returns False
  without glibc (nothing is done).
  """
  mallopt = _mallopt()
  if mallopt is None:
    return False
  # One arena: XLA's worker threads would otherwise get arenas of their own,
  # whose large allocations glibc maps from the OS whatever M_MMAP_MAX says.
  return all(mallopt(param, value) == 1 for param, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))


_RELEASING = []


def release_heap_after_compiles():
  """Runs :func:`release_freed_heap` after every XLA compilation (once per process).

  XLA frees its working memory after compiling, but glibc keeps the pages:
  0.8 GB for the R50-FPN train step, which then sits under the step's own
  buffers and raises the process's peak by as much (docs/PERFORMANCE.md).
  """
  if _RELEASING:
    return
  def listener(name, secs, **kwargs):
    if name == '/jax/core/compile/backend_compile_duration':
      release_freed_heap()
  jax.monitoring.register_event_duration_secs_listener(listener)
  _RELEASING.append(listener)
