"""The jobs by name (config.job) and `run(config, workdir)`; main.py is the CLI around it.

A job is a function (config, workdir) -> results dict. Its module is imported
only when it runs, so a job's dependencies load only then.
"""
import importlib

from autosparse_jax.errors import ConfigError, unknown_name_message

JOBS = {  # name -> (module, function)
    "train": ("autosparse_jax.train_job", "train_and_evaluate"),
    "prune": ("autosparse_jax.prune_job", "prune_and_train"),
    "irp": ("autosparse_jax.irp", "run_irp"),
    "ccc": ("autosparse_jax.ccc", "ccc_job"),
    "autos_train": ("autosparse_jax.autos.training", "train_scorer"),
    "sweep": ("autosparse_jax.sweep", "run_sweep"),
    "pipeline": ("autosparse_jax.pipeline", "run_pipeline"),
}


def run(config, workdir):
  if config.job not in JOBS:
    raise ConfigError(unknown_name_message("config.job", config.job, tuple(JOBS)))
  from autosparse_jax import distributed
  if distributed.initialize(config):  # Several processes: before any other JAX call.
    distributed.check_config_agreement(config)
  module, function = JOBS[config.job]
  return getattr(importlib.import_module(module), function)(config, workdir)
