"""The jobs by name (config.job) and `run(config, workdir)`; main.py is the CLI around it.

Imports are deferred so that a job's dependencies load only when it runs.
"""
from autosparse_jax.errors import ConfigError, unknown_name_message


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


def _sweep(config, workdir):
  from autosparse_jax.sweep import run_sweep
  return run_sweep(config, workdir)


def _pipeline(config, workdir):
  from autosparse_jax.pipeline import run_pipeline
  return run_pipeline(config, workdir)


JOBS = {"train": _train, "prune": _prune, "irp": _irp, "ccc": _ccc, "autos_train": _autos_train,
        "sweep": _sweep, "pipeline": _pipeline}


def run(config, workdir):
  if config.job not in JOBS:
    raise ConfigError(unknown_name_message("config.job", config.job, tuple(JOBS)))
  from autosparse_jax import distributed
  if distributed.initialize(config):  # Several processes: before any other JAX call.
    distributed.check_config_agreement(config)
  return JOBS[config.job](config, workdir)
