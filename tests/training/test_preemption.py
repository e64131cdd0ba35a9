"""Signals become a request to stop after the step in flight; a second one
while stopping is reported and ignored; the handlers are restored after."""
import os
import signal

from zsi_jax.training import preemption


def test_signals_are_noted_not_fatal(capsys):
  before = signal.getsignal(signal.SIGTERM)
  with preemption.StopSignals() as stop:
    assert stop.agreed() == 0
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.received == signal.SIGTERM and stop.agreed() == signal.SIGTERM
    os.kill(os.getpid(), signal.SIGINT)          # no KeyboardInterrupt: ignored
    assert stop.received == signal.SIGTERM
  err = capsys.readouterr().err
  assert 'SIGTERM received: stopping after the step in flight' in err
  assert 'SIGINT again: already stopping' in err
  assert signal.getsignal(signal.SIGTERM) is before


def test_preempted_message_and_status():
  e = preemption.Preempted(6, signal.SIGTERM, 'gs://b/run/checkpoints')
  assert str(e) == ('preempted (SIGTERM) at step 6; checkpoint 6 saved in gs://b/run/checkpoints; '
                    'run the same command to resume')
  assert e.status == 143
