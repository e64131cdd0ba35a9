"""Stopping a run cleanly when it is asked to: preemption (SIGTERM) or Ctrl-C (SIGINT).

TPU pod slices, SLURM and Kubernetes send SIGTERM and wait a grace period
before they kill. On the first such signal :class:`StopSignals` only notes
it; the training loop finishes the step in flight, saves a checkpoint of that
step, waits for the save and raises :class:`Preempted`, whose one line says
where to resume from. Further signals while that happens are reported and
ignored (orbax writes each checkpoint to a temporary folder and renames it
when whole, so even a SIGKILL then leaves the previous checkpoint intact).

With several processes a signal may reach only some of them; each step the
processes exchange what they received (:meth:`StopSignals.agreed`), so all
stop after the same step and write that step's checkpoint together.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Dict

import numpy as np

from zsi_jax import cli

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(cli.Interrupted):
  """Training stopped on a signal after saving the checkpoint of ``step``."""

  def __init__(self, step: int, signum: int, checkpoint_dir: str):
    name = signal.Signals(signum).name
    super().__init__(f'preempted ({name}) at step {step}; checkpoint {step} saved in '
                     f'{checkpoint_dir}; run the same command to resume', 128 + signum)
    self.step, self.signum = step, signum


class StopSignals:
  """A context that turns SIGTERM and SIGINT into a request to stop after the current step.

  Outside the main thread (where Python cannot install handlers) it does
  nothing and never asks to stop.
  """

  def __init__(self):
    self.received = 0
    self._previous: Dict[int, object] = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()
    return False

  def _handle(self, signum, frame):
    del frame
    if self.received:
      print(f'{signal.Signals(signum).name} again: already stopping after the step in flight '
            'and saving its checkpoint; please wait', file=sys.stderr, flush=True)
      return
    self.received = signum
    print(f'{signal.Signals(signum).name} received: stopping after the step in flight and '
          'saving its checkpoint', file=sys.stderr, flush=True)

  def agreed(self) -> int:
    """The signal any process of the run received so far (0: none). With several
    processes this is a collective: every process must call it at the same step."""
    import jax
    if jax.process_count() == 1:
      return self.received
    from jax.experimental import multihost_utils
    every = multihost_utils.process_allgather(np.int32(self.received))
    nonzero = [int(s) for s in np.asarray(every).ravel() if s]
    return nonzero[0] if nonzero else 0
