"""Graceful stops: preemption (SIGTERM or another configured signal) and Ctrl-C (SIGINT).

Preemption: clusters announce it with a signal and a grace period (SLURM --signal, spot
instances). The job finishes its current chunk of training steps, writes a checkpoint,
logs where it stopped and exits with EXIT_CODE (75).

Ctrl-C (when SIGINT is not the preemption signal): the first press stops the job at the
same safe point with its checkpoint; the CLI clears the live display, prints one line
(`interrupted at epoch 3 of round 2: run the same command to resume`) and exits with
INTERRUPT_EXIT_CODE (130, the shell's code for SIGINT). A second press aborts at once
(KeyboardInterrupt): the rerun resumes from the last checkpoint written.

The CLI installs the handlers (install); training loops ask `requested()` after every
chunk. With several processes, requested() is the OR over all processes (an all-gather),
so every process stops after the same chunk. The rerun of the same command resumes from
that checkpoint, bit-identical to an uninterrupted run.
"""
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; launch/slurm_*.sbatch requeue on it.
INTERRUPT_EXIT_CODE = 130  # 128 + SIGINT: what a shell reports for a job stopped by Ctrl-C.
SIGNALS = ("TERM", "USR1", "INT")
_RECEIVED = []  # The signals received by this process (set by the handlers).


class Preempted(Exception):
  """Raised after the checkpoint of a stopped job is written (preempted or interrupted).

  step: the training step it stopped at; where: the safe point in words ("epoch 3 of round 2").
  """

  def __init__(self, step, where=""):
    super().__init__(step)
    self.step, self.where = step, where


_INSTALLED = []  # The signal names of the last install().


def install(names=("TERM",), interrupt=True):
  """Handlers for these signals (names without SIG): record the signal; training stops at the next chunk.

  interrupt: SIGINT (when not among `names`) stops at the next chunk too, a second SIGINT at once.
  """
  _INSTALLED[:] = list(names)
  for name in names:
    signal.signal(getattr(signal, f"SIG{name}"), lambda signum, frame: _RECEIVED.append(signum))
  if interrupt and "INT" not in names:
    signal.signal(signal.SIGINT, _on_interrupt)


def _on_interrupt(signum, frame):
  if signum in _RECEIVED:  # The second Ctrl-C: abort now.
    raise KeyboardInterrupt
  _RECEIVED.append(signum)


def reinstall():
  """install() again (after a library replaced the handlers: jax.distributed.initialize does)."""
  if _INSTALLED:
    install(tuple(_INSTALLED))


def requested():
  """Whether any process received a stop signal (the same answer on every process)."""
  mine = bool(_RECEIVED)
  if jax.process_count() == 1:
    return mine
  return bool(np.max(multihost_utils.process_allgather(np.asarray(int(mine), np.int32))))


def interrupted():
  """Whether this process was stopped by Ctrl-C (SIGINT not being the preemption signal)."""
  return signal.SIGINT in _RECEIVED and "INT" not in _INSTALLED


def reset():
  _RECEIVED.clear()
