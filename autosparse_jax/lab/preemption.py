"""Graceful preemption: on SIGTERM (or another configured signal) a job finishes its current chunk
of training steps, writes a checkpoint, logs where it stopped and exits with EXIT_CODE.

Clusters announce preemption with a signal and a grace period (SLURM --signal, spot
instances). The CLI installs the handler (install); training loops ask `requested()` after
every chunk. With several processes, requested() is the OR over all processes (an
all-gather), so every process stops after the same chunk. The re-run of the same
command resumes from that checkpoint, bit-identical to an uninterrupted run.
"""
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; launch/slurm_*.sbatch requeue on it.
SIGNALS = ("TERM", "USR1", "INT")
_RECEIVED = []  # The signals received by this process (set by the handler).


class Preempted(Exception):
  """Raised after the checkpoint of a preempted job is written."""


_INSTALLED = []  # The signal names of the last install().


def install(names=("TERM",)):
  """Handlers for these signals (names without SIG): record the signal; training stops at the next chunk."""
  _INSTALLED[:] = list(names)
  for name in names:
    signal.signal(getattr(signal, f"SIG{name}"), lambda signum, frame: _RECEIVED.append(signum))


def reinstall():
  """install() again (after a library replaced the handlers: jax.distributed.initialize does)."""
  if _INSTALLED:
    install(tuple(_INSTALLED))


def requested():
  """Whether any process received a preemption signal (the same answer on every process)."""
  mine = bool(_RECEIVED)
  if jax.process_count() == 1:
    return mine
  return bool(np.max(multihost_utils.process_allgather(np.asarray(int(mine), np.int32))))


def reset():
  _RECEIVED.clear()
