"""A job's workdir: one writer at a time; config.json, metrics.jsonl, results.json, written safely.

- One process writes a workdir: WorkdirLock, an exclusive OS file lock on WORKDIR/.lock taken
  before anything is written (the kernel drops it when its holder dies, SIGKILL included).
- A workdir holding a run with a different config is refused, naming the fields; a config.json
  written before a field was renamed (schema.RENAMED) is compared under the new names.
- A finished run (results.json present, same config) is not run again.
- Every file goes through artefacts.py: written atomically, read back with a one-line error
  naming a damaged file and its fix; an earlier unfinished run's metrics are kept aside.
"""
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time

import numpy as np
import tensorboardX

from autosparse_jax import artefacts, dynamic_sparsity, structure as structure_lib
from autosparse_jax.lab import schema
from autosparse_jax.artefacts import read_jsonl  # noqa: F401  (the jobs' and tests' import)
from autosparse_jax.lab.config_tools import config_to_dict, flatten
from autosparse_jax.console import log
from autosparse_jax.lab.distributed import is_writer as process_is_writer
from autosparse_jax.errors import ConfigError

CONFIG, METRICS, RESULTS, LOCK = "config.json", "metrics.jsonl", "results.json", ".lock"
# Fields that change how a job runs or logs, not what it computes (the mesh changes
# only the order of float sums; a run may resume on other hardware).
RUNTIME_ONLY_FIELDS = ("data.data_dir", "mesh.seeds", "mesh.data", "mesh.shard_train_set",
                       "distributed.initialize", "distributed.timeout_s", "workdir_lock")
# config.workdir_lock: what to do where the filesystem has no working locks (some NFS mounts).
# refuse (the default: two writers silently corrupt a run, and a requeued job racing its own
# predecessor is common on clusters) | warn (say so once and run unlocked).
LOCK_POLICIES = ("refuse", "warn")
RESTART_FIX = "Run again with --restart to move this workdir aside and start anew."


# Fields added since a workdir may have been written, with the value that computes what it computed
# then (a config.json without them resumes), and old spellings of the same setting.
ADDED_FIELDS = {"prune.structure": "unstructured", "prune.group_reduce": "sum", "export": "",
                "prune.kernel_layout": list(structure_lib.DEFAULT_KERNEL_LAYOUT),
                "prune.structure_fallback": structure_lib.DEFAULT_STRUCTURE_FALLBACK,
                **{f"sparse_training.{k}": v for k, v in dynamic_sparsity.config_defaults().items()}}
SAME_SETTING = {("prune.prunable", r"(^|/)kernel$", "default")}  # The jobs' models: the same leaves.


TENSORBOARD = "tensorboard"
EPOCH_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


def tensorboard_layout(record):
  """[(run, tag, step, value)] of a metrics.jsonl record: what TensorBoard shows of it.

  One run (a subdirectory of WORKDIR/tensorboard) per network, named by what differs between
  networks, and tags named by the metric, so that TensorBoard draws every criterion (and seed)
  on one chart per metric:
    train, IRP          seed_<s>                     train_loss ... test_accuracy (IRP: over the
                                                     run's global step, all levels on one curve)
    prune, sweep        <criterion or variant>/seed_<s>, and <criterion>/seed_mean with several
                        seeds; tags <metric>/sparsity_<p> (one chart per metric and sparsity)
    every job           run "schedule": learning_rate (one tag, over the same step)
    IRP rounds          seed_<s>: irp/density, irp/test_accuracy over the round
    autos_train         run "scorer": train_loss, held_out_loss over the epoch
  """
  out = []
  step = record.get("global_step", record.get("step"))
  if "epoch" in record and isinstance(record.get("test_accuracy"), list):
    tag = record.get("tag", "")
    names = record.get("networks") or [f"network_{i}" for i in range(len(record["test_accuracy"]))]
    groups = {}
    for i, name in enumerate(names):
      if "@" not in name and "@" in tag:  # The prune job: the tag is criterion@sparsity.
        name = f"{tag}/{name}"
      head, at, rest = name.partition("@")
      sparsity, _, seed = rest.partition("/")
      run, suffix = (f"{head}/{seed}", f"/sparsity_{sparsity}") if at else (name, "")
      groups.setdefault((head, suffix), []).append(i)
      out += [(run, f"{key}{suffix}", step, float(record[key][i])) for key in EPOCH_METRICS]
    for (head, suffix), members in groups.items():
      if suffix and len(members) > 1:
        out += [(f"{head}/seed_mean", f"{key}{suffix}", step, float(np.mean([record[key][i] for i in members])))
                for key in EPOCH_METRICS]
    if "learning_rate" in record:
      out.append(("schedule", "learning_rate", step, float(record["learning_rate"])))
  elif "epoch" in record and isinstance(record.get("train_loss"), (int, float)):  # autos_train's scorer.
    out += [("scorer", key, record["epoch"], float(record[key])) for key in ("train_loss", "held_out_loss")
            if isinstance(record.get(key), (int, float))]
  if record.get("event") == "round_done" and record.get("round") is not None:
    names = record.get("networks") or [f"network_{i}" for i in range(len(record["density"]))]
    for name, density, accuracy in zip(names, record["density"], record["test_accuracy"] or []):
      out += [(name, "irp/density", record["round"], float(density)),
              (name, "irp/test_accuracy", record["round"], float(accuracy))]
  return out


def config_differences(saved, current):
  """[(field, saved value, new value)] over the union of fields, runtime-only ones skipped."""
  a, b = flatten(saved), flatten(current)
  missing = object()
  diffs = []
  for field in sorted(set(a) | set(b)):
    if field in RUNTIME_ONLY_FIELDS:
      continue
    old, new = a.get(field, missing), b.get(field, missing)
    if old is missing and field in ADDED_FIELDS and new == ADDED_FIELDS[field]:
      continue
    if any((field, old, new) == same for same in SAME_SETTING):
      continue
    if old != new:
      diffs.append((field, "<absent>" if old is missing else old, "<absent>" if new is missing else new))
  return diffs


write_json_atomic = artefacts.write_json


class WorkdirBusy(ConfigError):
  """Another process holds the workdir's lock (exit 2)."""


def _holder(lock_path):
  """'pid 123 on host h since 2026-12-04 15:40:01' of the lock file, as its holder wrote it."""
  try:
    with open(lock_path) as f:
      info = json.loads(f.read() or "{}")
    return f"pid {info['pid']} on host {info['host']} since {info['since']}"
  except (OSError, ValueError, KeyError, TypeError):
    return "a process that has not written its name yet"


class WorkdirLock:
  """An exclusive lock on WORKDIR/.lock (fcntl.flock) for as long as a job runs in WORKDIR.

  The lock file records the holder's pid, host, start time and command for the message a
  second process gets. flock is released by the kernel when the holder's process ends,
  however it ends, so a SIGKILLed run leaves nothing stale: the next run takes the lock
  and resumes. Taken by the process that writes (process 0 of several; jobs.run checks
  that the others see it).
  """

  def __init__(self, path, policy="refuse"):
    self.path = os.path.abspath(os.path.expanduser(path))
    self.lock_path = os.path.join(self.path, LOCK)
    self.policy = policy
    self.fd = None
    self.created = False  # This lock made the workdir: release() removes it if nothing else was written.

  def acquire(self):
    check_path(self.path)
    try:
      self.created = not os.path.exists(self.path)
      os.makedirs(self.path, exist_ok=True)
      fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise ConfigError(f"--workdir={self.path} cannot be created or locked ({e.strerror or e}): choose "
                        "another --workdir.") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise WorkdirBusy(f"--workdir={self.path} is in use by another run ({_holder(self.lock_path)}): wait for "
                        "it to finish, or stop it (a stopped or killed run releases the workdir, and the same "
                        "command then resumes it); or choose another --workdir.") from None
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        raise
      if self.policy == "warn":
        log(f"warning: {self.path} is on a filesystem without working file locks ({e.strerror}); running "
            "unlocked (config.workdir_lock='warn'): make sure no other run writes this workdir.")
        return self
      raise ConfigError(f"--workdir={self.path} is on a filesystem without working file locks ({e.strerror}), "
                        "so this run cannot make sure it is the only writer. Use a workdir on a local or "
                        "lock-capable filesystem, or set --config.workdir_lock=warn to run unlocked.") from None
    self.fd = fd
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "since": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:500]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    return self

  def release(self):
    if self.fd is not None:
      if self.created and os.listdir(self.path) == [LOCK]:  # A run refused before writing: leave no trace.
        os.remove(self.lock_path)
        os.rmdir(self.path)
      fcntl.flock(self.fd, fcntl.LOCK_UN)
      os.close(self.fd)
      self.fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def check_unlocked(path):
  """WorkdirBusy if a live process holds `path`'s lock (--restart must not move a running workdir)."""
  lock_path = os.path.join(os.path.abspath(os.path.expanduser(path)), LOCK)
  if not os.path.exists(lock_path):
    return
  fd = os.open(lock_path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    raise WorkdirBusy(f"--workdir={path} is in use by another run ({_holder(lock_path)}): --restart does not move a "
                      "running workdir. Stop that run first, or choose another --workdir.") from None
  except OSError:
    pass  # No working locks here: nothing to check.
  finally:
    os.close(fd)


def check_path(path):
  """--workdir must be a directory (or not exist yet) that this process can create and write."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--workdir={path} is a file, not a directory: choose a directory (it is created).")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f"--workdir={path}: {existing} is a file, so the directory cannot be created there.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir={path}: {existing} is not writable by this user: choose another --workdir.")


def read_json(path, fix=RESTART_FIX, required=None):
  return artefacts.read_json(path, fix, required)


class Workdir:
  """Checks `path` against `config` (read-only); `.finished`: results.json already holds the answer.

  is_writer=None: this process writes iff it is process 0 (several processes, one workdir).
  """

  def __init__(self, path, config, is_writer=None):
    self.path = os.path.abspath(os.path.expanduser(path))
    check_path(self.path)
    if is_writer is None:
      is_writer = process_is_writer()
    self.is_writer = is_writer
    self.config = config_to_dict(config)
    config_path = os.path.join(self.path, CONFIG)
    if os.path.exists(config_path):
      saved, renamed = schema.upgrade_renamed(read_json(
          config_path, "It is the config of the run in this workdir: " + RESTART_FIX, required={"job": str}))
      if renamed:  # Written by an earlier release: compared under the new names (and rewritten so).
        log(f"{config_path} uses renamed fields ({', '.join(renamed)}): read under their new names.")
      diffs = config_differences(saved, self.config)
      if diffs:
        shown = "; ".join(f"{f}: {old!r} -> {new!r}" for f, old, new in diffs[:10])
        more = f" (and {len(diffs) - 10} more)" if len(diffs) > 10 else ""
        raise ConfigError(
            f"--workdir={self.path} holds a run with a different config ({shown}{more}). "
            "Nothing was changed there: choose a new --workdir for the new config, or add --restart "
            "to move the earlier run aside (to WORKDIR.previous.<time>) and start anew.")
    self.finished = os.path.exists(os.path.join(self.path, RESULTS))

  def start(self, resuming=False):
    """Claims the workdir for this config (after the job's inputs were checked).

    resuming=True (a job continuing from its checkpoints) keeps appending to
    metrics.jsonl; otherwise an earlier unfinished run's metrics are set aside.
    """
    if self.is_writer and not self.finished:
      try:
        os.makedirs(self.path, exist_ok=True)
      except OSError as e:
        raise ConfigError(f"--workdir={self.path} cannot be created ({e.strerror or e}): choose another "
                          "--workdir.") from None
      write_json_atomic(os.path.join(self.path, CONFIG), self.config)
      if not resuming:
        self.set_aside_metrics()

  def set_aside_metrics(self):
    """An unfinished earlier run's metrics.jsonl -> metrics.<time>.jsonl (kept, not truncated)."""
    path = os.path.join(self.path, METRICS)
    if self.is_writer and os.path.exists(path):
      os.replace(path, os.path.join(self.path, f"metrics.{time.strftime('%Y%m%d-%H%M%S')}.jsonl"))

  def log_metrics(self, record):
    """Appends a record to metrics.jsonl (the source of truth) and its scalars to TensorBoard."""
    if self.is_writer:
      with open(os.path.join(self.path, METRICS), "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
      if self.config.get("tensorboard", True):
        self._tensorboard(record)

  def _tensorboard(self, record):
    """Each network its own TensorBoard run (tensorboard_layout), so TensorBoard overlays them."""
    writers = self.__dict__.setdefault("_writers", {})
    for run, tag, step, value in tensorboard_layout(record):
      if run not in writers:
        writers[run] = tensorboardX.SummaryWriter(os.path.join(self.path, TENSORBOARD, run), flush_secs=10)
      writers[run].add_scalar(tag, value, step)
    for writer in writers.values():
      writer.flush()

  def append_jsonl(self, name, records):
    """Appends records as JSON lines to `name` (flushed and synced: finished work survives a kill)."""
    if self.is_writer:
      artefacts.append_jsonl(os.path.join(self.path, name), records)

  def write_jsonl(self, name, records):
    """Replaces `name` with these JSON lines, atomically."""
    if self.is_writer:
      artefacts.write_jsonl(os.path.join(self.path, name), records)

  def write_results(self, results):
    if self.is_writer:
      write_json_atomic(os.path.join(self.path, RESULTS), results)

  def results(self):
    path = os.path.join(self.path, RESULTS)
    return read_json(path, f"Move it aside (mv {path} {path}.damaged) and run the same command again (work the "
                     "job has kept is not redone), or run again with --restart to start anew.",
                     required={"job": str})

  def finished_results(self):
    """results.json of this config's finished run (said on stdout), or None: jobs return it as is."""
    if not self.finished:
      return None
    results = self.results()  # Read (and checked) before saying anything about it.
    log(f"{self.path} already holds results.json for this config; not running again.")
    return results
