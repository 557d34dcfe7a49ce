"""The one `log`: progress lines on stdout, from process 0 only (the processes compute the same).

When stdout is not a terminal (CI, SLURM logs, a pipe), jobs print sparse lines
(plain_output): a few epochs per program, one line per IRP round.
AUTOSPARSE_PLAIN_OUTPUT=1 / 0 forces either.
"""
import os
import sys

import jax


def log(message):
  if jax.process_index() == 0:
    print(message, flush=True)


def fmt_time(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"


def plain_output():
  forced = os.environ.get("AUTOSPARSE_PLAIN_OUTPUT")
  if forced in ("0", "1"):
    return forced == "1"
  return not sys.stdout.isatty()
