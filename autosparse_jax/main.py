"""Entry point: python -m autosparse_jax.main --config=configs/NAME.py[:arg] --workdir=DIR.

Fields are overridden with --config.field=value. The job is chosen by config.job.
Bad input ends with a one-line message naming the field and the fix (exit 2).
Several processes (launch/): each runs this same command; see distributed.py.
"""
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from autosparse_jax.data.raw import RawDataError
from autosparse_jax.errors import ConfigError, NumericalError, unknown_name_message

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


def _train(config, workdir):
  from autosparse_jax.train_job import train_and_evaluate
  return train_and_evaluate(config, workdir)


def _prune(config, workdir):
  from autosparse_jax.prune_job import prune_and_train
  return prune_and_train(config, workdir)


def _irp(config, workdir):
  from autosparse_jax.irp import run_irp
  return run_irp(config, workdir)


def _ccc(config, workdir):
  from autosparse_jax.ccc import ccc_job
  return ccc_job(config, workdir)


def _autos_train(config, workdir):
  from autosparse_jax.autos.training import train_scorer
  return train_scorer(config, workdir)


JOBS = {"train": _train, "prune": _prune, "irp": _irp, "ccc": _ccc, "autos_train": _autos_train}


def run(config, workdir):
  if config.job not in JOBS:
    raise ConfigError(unknown_name_message("config.job", config.job, tuple(JOBS)))
  from autosparse_jax import distributed
  if distributed.initialize(config):  # Several processes: before any other JAX call.
    distributed.check_config_agreement(config)
  return JOBS[config.job](config, workdir)


def main(argv):
  del argv
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
