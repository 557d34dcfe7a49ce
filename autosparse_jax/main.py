"""Entry point: python -m autosparse_jax.main --config=configs/NAME.py[:arg] --workdir=DIR.

Fields are overridden with --config.field=value. The job is chosen by config.job.
Bad input ends with a one-line message naming the field and the fix (exit 2).
Several processes (launch/): each runs this same command; see distributed.py.
"""
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from autosparse_jax.data.raw import RawDataError
from autosparse_jax.errors import ConfigError, NumericalError
from autosparse_jax.jobs import run

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, metrics.jsonl, results.json.")
_RESTART = flags.DEFINE_bool(
    "restart", False, "Start a new run in --workdir even if it holds another run: the old workdir is "
    "moved (never deleted) to WORKDIR.previous.<time> first.")
flags.mark_flags_as_required(["config", "workdir"])


def set_aside_workdir(workdir):
  """Moves an existing workdir to WORKDIR.previous.<time>; returns the new path (or None)."""
  path = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.exists(path):
    return None
  aside = f"{path}.previous.{time.strftime('%Y%m%d-%H%M%S')}"
  os.replace(path, aside)
  print(f"--restart: moved the earlier run in {path} to {aside}", flush=True)
  return aside


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # Orbax/TFDS INFO logs drown the job's progress lines.
    logging.set_verbosity(logging.WARNING)
  try:
    if _RESTART.value:
      set_aside_workdir(_WORKDIR.value)
    run(_CONFIG.value, _WORKDIR.value)
  except (ConfigError, RawDataError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except NumericalError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)


if __name__ == "__main__":
  app.run(main)
