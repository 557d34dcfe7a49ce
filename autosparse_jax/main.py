"""Entry point: python -m autosparse_jax.main (or `autosparse`) --config=NAME[:arg] --workdir=DIR.

--config names a packaged config (autosparse_jax/configs/NAME.py: prune, paper/table1, ...)
or any config file by path (configs/prune.py:lenet_mnist in a checkout).

Fields are overridden with --config.field=value. The job is chosen by config.job.
--describe prints every field the job reads (value, allowed, meaning) and exits.
Exit codes: 0 done; 2 bad input (a config field, a flag, the config file, the
workdir), one line per problem, nothing computed or written; 3 non-finite
numbers (loss or scores), earlier checkpoints and results kept; 4 the results
could not be written (e.g. a full disk), the earlier results kept; 75 preempted
(config.preemption_signal, SIGTERM by default): the job stopped after a chunk
with a checkpoint; the same command resumes it.
Several processes (launch/): each runs this same command; see distributed.py.
"""
import os
import re
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from autosparse_jax import compile_stats, config_tools, console, preemption, schema
from autosparse_jax.data.raw import RawDataError
from autosparse_jax.errors import ConfigError, NumericalError, OutputError
from autosparse_jax.jobs import import_plugins, run

CONFIG_FLAG = re.compile(r"^--?config(=|$)")             # --config=VALUE, or --config VALUE


def config_help():
  return ("The job's config: a packaged config by name, NAME[:arg] (" + ", ".join(config_tools.packaged_config_names())
          + "; e.g. --config=prune:lenet_mnist), or the path of a config file, PATH.py[:arg] (in a checkout "
          "configs/NAME.py is the packaged NAME). --config.FIELD=VALUE sets a field.")


_CONFIG = config_flags.DEFINE_config_file("config", None, config_help(), lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, metrics.jsonl, results.json.")
_RESTART = flags.DEFINE_bool(
    "restart", False, "Start a new run in --workdir even if it holds another run: the old workdir is "
    "moved (never deleted) to WORKDIR.previous.<time> first.")
_DESCRIBE = flags.DEFINE_bool("describe", False, "Print every field the config's job reads, with its value, "
                              "what is allowed and what it means; then exit.")
flags.mark_flags_as_required(["config"])


def fail(message, code=2):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def config_file_fault(argv, error):
  """The one-line message for a config file that is missing or does not load."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1].split(":")[0]
      if not os.path.exists(config_tools.resolve_config_arg(path)):
        return (f"--config={path}: no such config file nor packaged config (packaged: "
                f"{', '.join(config_tools.packaged_config_names())}; e.g. --config=prune:lenet_mnist).")
      return f"--config={arg.split('=', 1)[1]} could not be loaded: " + " ".join(str(error).split())[:600]
  return "--config=NAME[:arg] is required (e.g. --config=prune:lenet_mnist)."


def override_fault(argv):
  """The message for a --config.NAME that names no field of the config, or None."""
  for arg in argv[1:]:
    if not arg.startswith("--config."):
      continue
    name = arg.split("=", 1)[0][len("--config."):]
    parts = name.split(".")
    if parts[0] == "sweep" and parts[1:2] == ["variants"]:
      continue  # Free-form variants.
    if name in schema.BY_NAME:
      jobs = ", ".join(schema.BY_NAME[name].jobs)
      return (f"--config.{name}: this config has no field {name} (it belongs to the config of: {jobs}); "
              "choose a config file of that job.")
    if ".".join(parts[1:]) in schema.BY_NAME:
      continue  # A pipeline stage's field (--config.STAGE.FIELD).
    return f"--config.{name}: " + schema.unknown_field(name, "config.")
  return None


def with_packaged_configs(argv):
  """argv with each --config=NAME[:arg] of a packaged config replaced by that file's path."""
  out = list(argv)
  for i, arg in enumerate(out[1:], 1):
    if CONFIG_FLAG.match(arg):
      if "=" in arg:
        flag, value = arg.split("=", 1)
        out[i] = f"{flag}={config_tools.resolve_config_arg(value)}"
      elif i + 1 < len(out):
        out[i + 1] = config_tools.resolve_config_arg(out[i + 1])
  return out


def parse_flags(argv):
  """absl's flag parsing, --config=NAME of a packaged config, with faults of --config.* overrides as one
  line (exit 2), no traceback."""
  try:
    return flags.FLAGS(with_packaged_configs(argv))
  except Exception as e:  # noqa: BLE001  (ml_collections raises KeyError, AttributeError, ...)
    fail(override_fault(argv) or config_file_fault(argv, e))


def loaded_config():
  """The config (the flag loads its file lazily: a missing or broken file surfaces here)."""
  try:
    config = _CONFIG.value
    config.get("job")
    return config
  except Exception as e:  # noqa: BLE001
    fail(config_file_fault(sys.argv, e))


def unread_fields():
  """Fields set on the command line that the config's job does not read."""
  filename = config_flags.get_config_filename(flags.FLAGS["config"])
  path, _, arg = filename.partition(":")
  try:
    module = config_tools.module_from_path(path)
    defaults = module.get_config(arg) if arg else module.get_config()
  except Exception:  # noqa: BLE001  (the file loaded once already; be silent if it will not twice)
    return []
  return schema.unread_fields(loaded_config(), defaults)


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
  config = loaded_config()
  try:
    if _DESCRIBE.value:
      import_plugins(config)
      print(schema.describe(config))
      return
    if not _WORKDIR.value:
      raise ConfigError("--workdir is required: the directory for config.json, metrics.jsonl and results.json.")
    problems = unread_fields()
    if problems:
      raise ConfigError(problems[0] if len(problems) == 1 else
                        f"{len(problems)} problems in the config:\n  - " + "\n  - ".join(problems))
    if _RESTART.value:
      set_aside_workdir(_WORKDIR.value)
    preemption.install((config.get("preemption_signal", "TERM"),))
    compile_stats.install()
    run(config, _WORKDIR.value)
    compiled = compile_stats.line()
    if compiled:
      console.log(compiled)
  except (ConfigError, RawDataError) as e:
    fail(e, 2)
  except NumericalError as e:
    fail(e, 3)
  except OutputError as e:
    fail(e, 4)
  except preemption.Preempted as e:
    print(f"preempted after step {e}: the checkpoint is written; run the same command again to resume "
          f"(exit code {preemption.EXIT_CODE}).", file=sys.stderr)
    sys.exit(preemption.EXIT_CODE)


def cli():
  """The `autosparse` console command (pyproject's [project.scripts]): python -m autosparse_jax.main."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  cli()
