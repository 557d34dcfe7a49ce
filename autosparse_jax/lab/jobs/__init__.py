"""The jobs by name (config.job): each a module with validate(config) and run(config, workdir).

validate runs in-process before any compute and before the workdir is touched;
run returns the results dict (also written to WORKDIR/results.json). A job's
module is imported only when it is used, so its dependencies load only then.
main.py is the CLI around `run`.
"""
import contextlib
import importlib
import os

import jax
import numpy as np

from autosparse_jax.lab import distributed, schema
from autosparse_jax.errors import ConfigError, unknown_name_message

JOBS = {name: f"autosparse_jax.lab.jobs.{name}" for name in schema.ALL}  # config.job -> its module.


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
  """Validates `config`, then runs its job in `workdir` holding its lock; returns the results dict."""
  import_plugins(config)
  module = job_module(config.get("job"))
  if distributed.initialize(config):  # Several processes: before any other JAX call.
    distributed.check_config_agreement(config)
  schema.check(config)
  module.validate(config)
  with workdir_lock(config, workdir):
    return module.run(config, workdir)


@contextlib.contextmanager
def workdir_lock(config, workdir):
  """One writer per workdir (workdir.WorkdirLock), taken by the writing process (process 0).

  With several processes, process 0 locks and every process then checks that it sees
  process 0's lock file: a workdir that is not on a filesystem they all share fails
  the run on every process, before anything is written.
  """
  from autosparse_jax.lab.workdir import LOCK, WorkdirLock
  lock = WorkdirLock(workdir, config.get("workdir_lock", "refuse"))
  if jax.process_count() == 1:
    with lock:
      yield
    return
  from jax.experimental import multihost_utils
  failure = None
  if distributed.is_writer():
    try:
      lock.acquire()
    except ConfigError as e:
      failure = e
  ok = np.asarray([failure is None], np.int32)
  if not bool(np.all(multihost_utils.process_allgather(ok))):
    raise failure or ConfigError(f"process 0 could not lock --workdir={workdir}: see its message.")
  seen = np.asarray([os.path.exists(os.path.join(os.path.abspath(workdir), LOCK))], np.int32)
  everyone = np.asarray(multihost_utils.process_allgather(seen)).reshape(-1)
  if not everyone.all():
    lock.release()
    blind = [int(i) for i in np.flatnonzero(everyone == 0)]
    raise ConfigError(f"process(es) {blind} cannot see {os.path.join(workdir, LOCK)}, which process 0 holds: "
                      "--workdir must be on a filesystem every process shares.")
  try:
    yield
  finally:
    lock.release()
