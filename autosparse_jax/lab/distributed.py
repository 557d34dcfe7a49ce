"""Multi-process runs: jax.distributed start-up, config agreement, host copies of global arrays.

config.distributed.initialize:
  "no"    never (one process).
  "yes"   always: jax.distributed.initialize() with the AUTOSPARSE_* variables below
          when set, else JAX's own cluster detection (SLURM, Open MPI, ...).
  "auto"  when the launch environment asks for it: AUTOSPARSE_COORDINATOR is set
          (launch/local_multiprocess.py), or SLURM/Open MPI started several tasks
          (SLURM_STEP_NUM_TASKS / OMPI_COMM_WORLD_SIZE > 1).
Per-process values come from the environment, not the config (which must be the
same on every process): AUTOSPARSE_COORDINATOR=host:port, AUTOSPARSE_NUM_PROCESSES,
AUTOSPARSE_PROCESS_ID.
"""
import hashlib
import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from autosparse_jax.lab import preemption
from autosparse_jax.lab.config_tools import config_to_dict, flatten
from autosparse_jax.errors import ConfigError, unknown_name_message

MODES = ("auto", "yes", "no")
ENV_COORDINATOR, ENV_NUM, ENV_ID = "AUTOSPARSE_COORDINATOR", "AUTOSPARSE_NUM_PROCESSES", "AUTOSPARSE_PROCESS_ID"
# May differ between processes (e.g. a node-local copy of the data).
PER_PROCESS_FIELDS = ("data.data_dir",)


def _env_int(name):
  value = os.environ.get(name, "")
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"environment variable {name}={value!r} must be an integer.") from None


def wanted(mode, environ=os.environ):
  """Whether `mode` (config.distributed.initialize) asks for jax.distributed here."""
  if mode not in MODES:
    raise ConfigError(unknown_name_message("config.distributed.initialize", mode, MODES))
  if mode != "auto":
    return mode == "yes"
  if environ.get(ENV_COORDINATOR):
    return True
  for name in ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):  # Set by srun / mpirun only.
    if environ.get(name, "1").isdigit() and int(environ.get(name, "1")) > 1:
      return True
  return False


def initialize(config):
  """Starts jax.distributed when config/environment ask for it (before any other JAX call)."""
  settings = config.get("distributed") or {}  # Configs without the group (ccc): "auto".
  timeout = int(settings.get("timeout_s", 300))
  if not wanted(settings.get("initialize", "auto")):
    return False
  if jax.distributed.is_initialized():
    return True
  if os.environ.get(ENV_COORDINATOR):
    missing = [n for n in (ENV_NUM, ENV_ID) if not os.environ.get(n)]
    if missing:
      raise ConfigError(f"{ENV_COORDINATOR} is set but {', '.join(missing)} are not: set all three "
                        "(launch/local_multiprocess.py does).")
    jax.distributed.initialize(coordinator_address=os.environ[ENV_COORDINATOR],
                               num_processes=_env_int(ENV_NUM), process_id=_env_int(ENV_ID),
                               initialization_timeout=timeout)
  else:
    jax.distributed.initialize(initialization_timeout=timeout)
  # jax.distributed installs its own SIGTERM handler (its preemption notifier, for Orbax's sync
  # points): it would swallow the signal, and the job would train on until SIGKILL. Ours go back
  # on top; preemption.requested() all-gathers them, so every process stops after the same chunk.
  preemption.reinstall()
  return True


def is_writer():
  """Only process 0 writes metrics, results and other files (Orbax coordinates its own)."""
  return jax.process_index() == 0


def config_json(config):
  flat = flatten(config_to_dict(config))
  return json.dumps({k: v for k, v in flat.items() if k not in PER_PROCESS_FIELDS}, sort_keys=True)


def check_config_agreement(config):
  """Raises ConfigError on every process when the processes' configs differ."""
  if jax.process_count() == 1:
    return
  mine = config_json(config)
  digest = np.frombuffer(hashlib.sha256(mine.encode()).digest()[:8], np.int64)
  digests = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1)
  differ = [i for i in range(len(digests)) if digests[i] != digests[0]]
  if not differ:
    return
  # Process 0's config, sent to all, so the differing processes can name the fields.
  size = multihost_utils.broadcast_one_to_all(np.asarray(len(mine.encode()), np.int64))
  buf = np.zeros(int(size), np.uint8)
  if jax.process_index() == 0:
    buf[:] = np.frombuffer(mine.encode(), np.uint8)
  first = json.loads(bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf))).decode())
  fields = sorted(k for k in set(first) | set(json.loads(mine))
                  if first.get(k) != json.loads(mine).get(k))
  detail = (f"; here (process {jax.process_index()}) {', '.join(fields[:5])} differ"
            if fields else "")
  raise ConfigError(f"the {jax.process_count()} processes were given different configs: process(es) "
                    f"{differ} differ from process 0{detail}. Start every process with the same "
                    "--config and --config.* overrides.")


def to_host(tree):
  """numpy copies of (possibly multi-process) global arrays, the same on every process."""
  def fetch(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(fetch, tree)
