"""A job's workdir: config.json, metrics.jsonl, results.json, written safely.

- A workdir holding a run with a different config is refused, naming the fields; a config.json
  written before a field was renamed (schema.RENAMED) is compared under the new names.
- A finished run (results.json present, same config) is not run again.
- Files are written atomically (tmp + rename); an earlier unfinished run's
  metrics are kept aside, never truncated.
"""
import json
import os
import time

import tensorboardX

from autosparse_jax import schema
from autosparse_jax.config_tools import config_to_dict, flatten
from autosparse_jax.console import log
from autosparse_jax.distributed import is_writer as process_is_writer
from autosparse_jax.errors import ConfigError, OutputError

CONFIG, METRICS, RESULTS = "config.json", "metrics.jsonl", "results.json"
# Fields that change how a job runs or logs, not what it computes (the mesh changes
# only the order of float sums; a run may resume on other hardware).
RUNTIME_ONLY_FIELDS = ("data.data_dir", "mesh.seeds", "mesh.data", "mesh.shard_train_set",
                       "distributed.initialize", "distributed.timeout_s")


def config_differences(saved, current):
  """[(field, saved value, new value)] over the union of fields, runtime-only ones skipped."""
  a, b = flatten(saved), flatten(current)
  missing = object()
  diffs = []
  for field in sorted(set(a) | set(b)):
    if field in RUNTIME_ONLY_FIELDS:
      continue
    old, new = a.get(field, missing), b.get(field, missing)
    if old != new:
      diffs.append((field, "<absent>" if old is missing else old, "<absent>" if new is missing else new))
  return diffs


def write_json_atomic(path, obj):
  """Writes `obj` to a temporary file, then renames it over `path`: a failed write (a full disk)
  leaves the earlier file as it was and raises OutputError saying so."""
  tmp = f"{path}.tmp.{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    kept = "the earlier one is intact" if os.path.exists(path) else "there was none before"
    raise OutputError(f"could not write {path} ({e.strerror or e}); {kept}. Free space (or fix the "
                      "permissions) and run the same command again: finished work is not redone.") from None
  os.replace(tmp, path)


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


def read_json(path):
  with open(path) as f:
    return json.load(f)


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
      saved, renamed = schema.upgrade_renamed(read_json(config_path))
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
    """Curves per network (seed, or sweep cell): losses, accuracies, learning rate; IRP densities."""
    if getattr(self, "_writer", None) is None:
      self._writer = tensorboardX.SummaryWriter(os.path.join(self.path, "tensorboard"), flush_secs=10)
    w, tag = self._writer, record.get("tag", "")
    group = f"{tag}/" if tag else ""
    if "epoch" in record and "test_accuracy" in record:
      names = record.get("networks") or [f"network_{i}" for i in range(len(record["test_accuracy"]))]
      for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        for name, value in zip(names, record[key]):
          w.add_scalar(f"{key}/{group}{name}", value, record["step"])
      if "learning_rate" in record:
        w.add_scalar(f"learning_rate/{group}".rstrip("/"), record["learning_rate"], record["step"])
    if record.get("event") == "round_done" and record.get("round") is not None:
      for i, (density, accuracy) in enumerate(zip(record["density"], record["test_accuracy"] or [])):
        w.add_scalar(f"irp/density/seed_index_{i}", density, record["round"])
        w.add_scalar(f"irp/test_accuracy/seed_index_{i}", accuracy, record["round"])
    w.flush()

  def append_jsonl(self, name, records):
    """Appends records as JSON lines to `name` (flushed and synced: finished work survives a kill)."""
    if self.is_writer:
      with open(os.path.join(self.path, name), "a") as f:
        for record in records:
          f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())

  def write_jsonl(self, name, records):
    """Replaces `name` with these JSON lines, atomically."""
    if self.is_writer:
      path = os.path.join(self.path, name)
      with open(f"{path}.tmp.{os.getpid()}", "w") as f:
        f.writelines(json.dumps(record, sort_keys=True) + "\n" for record in records)
      os.replace(f"{path}.tmp.{os.getpid()}", path)

  def write_results(self, results):
    if self.is_writer:
      write_json_atomic(os.path.join(self.path, RESULTS), results)

  def results(self):
    return read_json(os.path.join(self.path, RESULTS))

  def finished_results(self):
    """results.json of this config's finished run (said on stdout), or None: jobs return it as is."""
    if not self.finished:
      return None
    log(f"{self.path} already holds results.json for this config; not running again.")
    return self.results()


def read_jsonl(path, quiet=False, whole=False):
  """Records of a JSON-lines file (none if it is missing); a torn last line (killed mid-write) is skipped.

  whole=True: None in place of each unreadable line (to detect them).
  """
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError:
          if whole:
            rows.append(None)
          elif not quiet:
            log(f"warning: ignoring an unreadable line in {path} (an interrupted write).")
  return rows
