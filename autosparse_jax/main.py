"""Entry point: python -m autosparse_jax.main --config=configs/NAME.py[:arg] --workdir=DIR.

Fields are overridden with --config.field=value. The job is chosen by config.job.
Bad input ends with a one-line message naming the field and the fix (exit 2).
"""
import sys

from absl import app, flags
from ml_collections import config_flags

from autosparse_jax.data.raw import RawDataError
from autosparse_jax.errors import ConfigError, unknown_name_message

_CONFIG = config_flags.DEFINE_config_file("config", None, "ml_collections config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, metrics.jsonl, results.json.")
flags.mark_flags_as_required(["config", "workdir"])


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
  return JOBS[config.job](config, workdir)


def main(argv):
  del argv
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except (ConfigError, RawDataError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
