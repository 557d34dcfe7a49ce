"""The jobs by name (config.job): each a module with validate(config) and run(config, workdir).

validate runs in-process before any compute and before the workdir is touched;
run returns the results dict (also written to WORKDIR/results.json). A job's
module is imported only when it is used, so its dependencies load only then.
main.py is the CLI around `run`.
"""
import importlib

from autosparse_jax import distributed, schema
from autosparse_jax.errors import ConfigError, unknown_name_message

JOBS = {name: f"autosparse_jax.jobs.{name}" for name in schema.ALL}  # config.job -> its module.


def job_module(name, field="config.job"):
  if name not in JOBS:
    raise ConfigError(unknown_name_message(field, name, tuple(JOBS)))
  return importlib.import_module(JOBS[name])


def import_plugins(config):
  """Imports config.imports: the user's modules that register criteria (asj.register_criterion)."""
  for name in config.get("imports", ()) or ():
    try:
      importlib.import_module(name)
    except ImportError as e:
      raise ConfigError(f"config.imports names {name!r}, which cannot be imported ({e}). Give importable "
                        "module names (on PYTHONPATH), e.g. --config.imports='(\"my_package.criteria\",)'.")


def validate(config):
  """The job's checks of `config` (ConfigError naming the field), without compute or files."""
  import_plugins(config)
  module = job_module(config.get("job"))
  schema.check(config)
  module.validate(config)


def run(config, workdir):
  """Validates `config`, then runs its job in `workdir`; returns the results dict."""
  import_plugins(config)
  module = job_module(config.get("job"))
  if distributed.initialize(config):  # Several processes: before any other JAX call.
    distributed.check_config_agreement(config)
  schema.check(config)
  module.validate(config)
  return module.run(config, workdir)
