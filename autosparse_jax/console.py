"""The one `log`: progress lines on stdout, from process 0 only (the processes compute the same).

Three modes: on a terminal, live progress bars (rich: one per stage of a job, e.g.
all of IRP's rounds or all of a sweep's programs, with its rate and time left, and
one for a pipeline's stages) and no per-epoch lines (metrics.jsonl has every epoch);
when stdout is not a terminal (CI, SLURM logs, a pipe), sparse lines (plain_output):
a few epochs per program, one line per IRP round. AUTOSPARSE_PLAIN_OUTPUT=1 forces
the sparse lines, =0 every progress line without bars (what the kill tests read).
"""
import os
import sys

import jax


_BARS = {}  # The live rich.progress.Progress of this process, when bars are on.


def log(message):
  if jax.process_index() == 0:
    if "progress" in _BARS:
      _BARS["progress"].console.print(message, highlight=False, markup=False)
    else:
      print(message, flush=True)


def bars_on():
  return os.environ.get("AUTOSPARSE_PLAIN_OUTPUT") is None and sys.stdout.isatty() and jax.process_index() == 0


def bar(description, total, completed=0):
  """A progress bar (its id), or None when bars are off."""
  if not bars_on():
    return None
  if "progress" not in _BARS:
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    _BARS["progress"] = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
    _BARS["progress"].start()
  return _BARS["progress"].add_task(description, total=total, completed=completed, rate="")


def advance(task, completed, rate="", description=None):
  if task is not None and "progress" in _BARS:
    extra = {} if description is None else {"description": description}
    _BARS["progress"].update(task, completed=completed, rate=rate, **extra)


def done(task):
  """Removes a finished bar (the last one stops the display)."""
  if task is None or "progress" not in _BARS:
    return
  progress = _BARS["progress"]
  progress.remove_task(task)
  if not progress.tasks:
    progress.stop()
    del _BARS["progress"]


def clear():
  """Stops the live display and removes it from the screen (before a last line: Ctrl-C, an error)."""
  progress = _BARS.pop("progress", None)
  if progress is not None:
    progress.live.transient = True
    progress.stop()


def fmt_time(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"


def plain_output():
  forced = os.environ.get("AUTOSPARSE_PLAIN_OUTPUT")
  if forced in ("0", "1"):
    return forced == "1"
  return not sys.stdout.isatty()
