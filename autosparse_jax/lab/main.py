"""Entry point: python -m autosparse_jax.lab.main (or `autosparse`) --config=NAME[:arg] --workdir=DIR.

--config names a packaged config (autosparse_jax/lab/configs/NAME.py: prune, paper/table1, ...)
or any config file by path (configs/prune.py:lenet_mnist in a checkout).

Fields are overridden with --config.field=value. The job is chosen by config.job.
--describe prints every field the job reads (value, allowed, meaning) and exits.
Exit codes: 0 done; 2 bad input (a config field, a flag, the config file, the
workdir), one line per problem, nothing computed or written; 3 non-finite
numbers (loss or scores), earlier checkpoints and results kept; 4 the results
could not be written (e.g. a full disk), the earlier results kept; 75 preempted
(config.preemption_signal, SIGTERM by default): the job stopped after a chunk
with a checkpoint; the same command resumes it; 130 interrupted (Ctrl-C): the
same stop, said in one line (a second Ctrl-C stops at once; the rerun resumes
from the last checkpoint).
Several processes (launch/): each runs this same command; see distributed.py.
"""
import difflib
import os
import re
import shlex
import sys
import time

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from autosparse_jax import console
from autosparse_jax.lab import compile_stats, config_tools, preemption, schema
from autosparse_jax.data.raw import RawDataError
from autosparse_jax.errors import ConfigError, NumericalError, OutputError
from autosparse_jax.lab.jobs import import_plugins, run
from autosparse_jax.lab.workdir import check_unlocked

CONFIG_FLAG = re.compile(r"^--?config(=|$)")             # --config=VALUE, or --config VALUE
OVERRIDE_FLAG = re.compile(r"^--?(no)?config\.([^=]+)")  # --config.FIELD[=VALUE], as ml_collections reads them


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
_VERBOSE = flags.DEFINE_bool("verbose", False, "Also print the compile summary (XLA programs compiled, loaded "
                             "from the cache) at the end; without it, it is printed only when a program was built "
                             "more than once.")
flags.mark_flags_as_required(["config"])


def fail(message, code=2):
  console.clear()
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def one_line(text):
  return " ".join(str(text).split())


def config_value(argv):
  """The value of the (last) --config in argv, as typed, or None."""
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if CONFIG_FLAG.match(arg):
      value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else None)
  return value


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


def load_config_value(value):
  """get_config([arg]) of --config=VALUE, loaded as ml_collections loads it."""
  path, *arg = config_tools.resolve_config_arg(value).split(":", 1)
  return config_tools.module_from_path(path).get_config(*arg)


def config_fault(value):
  """The one-line message for a --config=VALUE that names no config or does not load, or None."""
  if value is None:
    return "--config is required: a packaged config by name (e.g. --config=prune:lenet_mnist) or a config file's path."
  spec = value.split(":", 1)[0]
  if not os.path.isfile(config_tools.resolve_config_arg(value).split(":", 1)[0]):
    names = config_tools.packaged_config_names()
    name = re.sub(r"^(.*/)?configs/", "", spec).removesuffix(".py")  # configs/prune.py outside a checkout.
    guess = [name] if name in names else difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean --config={guess[0]}{value[len(spec):]}?" if guess else ""
    return (f"--config={spec}: no such config file, nor a packaged config of that name.{hint} "
            f"Packaged configs: {', '.join(names)}.")
  try:
    load_config_value(value)
  except ConfigError as e:
    return f"--config={value}: {one_line(e)}"
  except Exception as e:  # noqa: BLE001  (any fault of the file: syntax, imports, get_config)
    return f"--config={value} could not be loaded: {type(e).__name__}: {one_line(e)}"[:600] + renamed_group_hint(e)
  return None


def renamed_group_hint(error):
  """For a file that failed on a group that no longer exists (config.autos of an autos_train config):
  the renamed fields that were in it."""
  missing = str(error).strip("'\" ")
  moved = {old.split(".", 1)[1]: new.split(".")[0] for old, new in schema.RENAMED.items()
           if old.split(".")[0] == missing}
  if not moved or not isinstance(error, (AttributeError, KeyError)):
    return ""
  return f" (config.{missing}.{{{','.join(moved)}}} were renamed config.{'/'.join(sorted(set(moved.values())))}.*)"


def override_flags(argv):
  """Each --config.FIELD override of argv as (FIELD, its tokens), in order: FIELD=VALUE or FIELD VALUE."""
  out = []
  for i, arg in enumerate(argv[1:], 1):
    match = OVERRIDE_FLAG.match(arg)
    if match:
      takes_next = "=" not in arg and i + 1 < len(argv) and not re.match(r"^--?[A-Za-z]", argv[i + 1])
      out.append((match.group(2), argv[i:i + 1 + takes_next]))
  return out


def parse_config_flags(value, tokens):
  """Parses --config=VALUE and these override tokens alone, as the CLI does; raises what that raises."""
  argv = ["autosparse", f"--config={config_tools.resolve_config_arg(value)}", *tokens]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv, lock_config=True)
  flag_values(argv)


def stage_and_field(config, name, prefix=""):
  """(the job config that holds field `name`, the field's schema name, its flag prefix): a pipeline's
  --config.STAGE.FIELD is FIELD of the stage's config, a sweep variant's fields are schema fields."""
  parts = name.split(".")
  if (config.get("job") == "pipeline" and len(parts) > 1 and parts[0] in (config.get("stages") or ())
      and parts[0] in config):
    return stage_and_field(config[parts[0]], ".".join(parts[1:]), f"{prefix}{parts[0]}.")
  if parts[:2] == ["sweep", "variants"] and len(parts) > 3:
    return config, ".".join(parts[3:]), prefix
  return config, name, prefix


def has_field(config, name):
  node = config
  for part in name.split("."):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      return False
    node = node[part]
  return True


def missing_field_message(config, name):
  """Why --config.NAME names no field of `config`: a typo (did you mean), or a field of another job."""
  job_config, field, prefix = stage_and_field(config, name)
  renamed = schema.renamed_message(field, f"config.{prefix}")
  if renamed and not has_field(job_config, field):  # An old name (one release): the new one.
    return renamed
  if name.startswith("sweep.variants.") and not has_field(config, ".".join(name.split(".")[:3])):
    variants = ", ".join(config.sweep.variants.keys())
    return (f"there is no sweep variant {name.split('.')[2]} (variants: {variants}); a new "
            "variant cannot be added from the command line: add it to sweep.variants in a config file.")
  if field in schema.BY_NAME and not has_field(job_config, field):
    jobs = schema.BY_NAME[field].jobs
    job = job_config.get("job")
    if job in jobs:
      return (f"this config has no field {prefix}{field} (the {job} job reads it where its config file sets "
              "it): add it to a copy of the config file.")
    return (f"this config has no field {prefix}{field} (it belongs to the config of: {', '.join(jobs)}), and "
            f"this is the {job} job's config: choose a config of one of those jobs.")
  names = list(config_tools.flatten(config_tools.config_to_dict(config)))
  guess = difflib.get_close_matches(name, names, n=1, cutoff=0.7)
  hint = f" Did you mean --config.{guess[0]}?" if guess else ""
  return f"config.{name} is not a config field.{hint}"


def override_fault(argv, value):
  """The one-line message for the first --config.FIELD override that ml_collections refuses, or None.

  The overrides are parsed again from the first one on, one more each time: the first
  prefix that fails ends with the flag at fault.
  """
  overrides = override_flags(argv)
  config = load_config_value(value)
  for k, (name, tokens) in enumerate(overrides):
    try:
      parse_config_flags(value, [token for _, group in overrides[:k + 1] for token in group])
    except Exception as e:  # noqa: BLE001  (absl and ml_collections raise many types)
      if not has_field(config, name):
        return f"--config.{name}: " + missing_field_message(config, name)
      field = schema.BY_NAME.get(stage_and_field(config, name)[1])
      if isinstance(e, flags.IllegalFlagValueError) and field is not None:
        typed = tokens[0].split("=", 1)[1] if "=" in tokens[0] else " ".join(tokens[1:])
        return f"--config.{name}={typed} must be {field.allowed()} ({field.doc})."
      return f"--config.{name}: {one_line(e)}"
  return None


def flag_fault(argv, error):
  """The one-line message for a command line that flag parsing refused: the flag at fault and why."""
  value = config_value(argv)
  return config_fault(value) or override_fault(argv, value) or one_line(error)


def parse_flags(argv):
  """absl's flag parsing, --config=NAME of a packaged config, and a fault as one line (exit 2) naming the
  flag at fault, no traceback."""
  try:
    return flags.FLAGS(with_packaged_configs(argv))
  except SystemExit as e:  # absl's --help (-h, --helpshort, --helpfull) prints the flags and exits 1.
    if e.code == 1 and any(re.match(r"^--?(help|helpshort|helpfull|h|\?)$", arg) for arg in argv[1:]):
      sys.exit(0)  # Asking for help is not a failure.
    raise
  except Exception as e:  # noqa: BLE001  (ml_collections raises KeyError, AttributeError, TypeError, ...)
    fail(flag_fault(argv, e))


def loaded_config():
  """The config (the flag loads its file lazily: a missing or broken file surfaces here)."""
  try:
    config = _CONFIG.value
    config.get("job")
    return config
  except Exception as e:  # noqa: BLE001
    value = config_value(sys.argv)
    fail(config_fault(value) or f"--config={value} could not be loaded: {one_line(e)}")


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


def prune_command(argv):
  """This command line with the train config swapped for the prune config (same recipe, same flags):
  what a train command with a criterion must run instead. None for other configs."""
  args = []
  for arg in argv[1:]:
    if CONFIG_FLAG.match(arg) and "=" in arg:
      value = arg.split("=", 1)[1]
      spec, colon, config_arg = value.partition(":")
      if spec == "train":  # A packaged name.
        arg = f"--config=prune{colon}{config_arg}"
      elif os.path.basename(spec) == "train.py":
        arg = f"--config={os.path.join(os.path.dirname(spec), 'prune.py')}{colon}{config_arg}"
      else:
        return None
    args.append(arg)
  return "autosparse " + " ".join(shlex.quote(a) for a in args)


def set_aside_workdir(workdir):
  """Moves an existing workdir to WORKDIR.previous.<time>; returns the new path (or None).

  A workdir that a live run holds (its lock) is not moved: WorkdirBusy (exit 2).
  """
  path = os.path.abspath(os.path.expanduser(workdir))
  if not os.path.exists(path):
    return None
  check_unlocked(path)
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
    prunes = schema.train_job_prunes(config, command=prune_command(sys.argv))
    if prunes:  # Before unread_fields: this names the prune command, not only the unread fields.
      raise ConfigError(prunes)
    problems = unread_fields()
    if problems:
      raise ConfigError(problems[0] if len(problems) == 1 else
                        f"{len(problems)} problems in the config:\n  - " + "\n  - ".join(problems))
    if _RESTART.value:
      set_aside_workdir(_WORKDIR.value)
    preemption.install((config.get("preemption_signal", "TERM"),))
    compile_stats.install()
    run(config, _WORKDIR.value)
    compiled = compile_stats.line(always=_VERBOSE.value)
    if compiled:
      console.log(compiled)
  except (ConfigError, RawDataError) as e:
    fail(e, 2)
  except NumericalError as e:
    fail(e, 3)
  except OutputError as e:
    fail(e, 4)
  except preemption.Preempted as e:
    console.clear()
    if preemption.interrupted():  # Ctrl-C: one line, the shell's exit code for SIGINT.
      print(f"interrupted at {e.where or f'step {e.step}'}: run the same command to resume", file=sys.stderr)
      sys.exit(preemption.INTERRUPT_EXIT_CODE)
    print(f"preempted after step {e.step}: the checkpoint is written; run the same command again to resume "
          f"(exit code {preemption.EXIT_CODE}).", file=sys.stderr)
    sys.exit(preemption.EXIT_CODE)
  except KeyboardInterrupt:  # A second Ctrl-C: stopped at once, without a checkpoint of this point.
    console.clear()
    print("interrupted at once (second Ctrl-C): run the same command to resume from the last checkpoint",
          file=sys.stderr)
    sys.exit(preemption.INTERRUPT_EXIT_CODE)


def cli():
  """The `autosparse` console command (pyproject's [project.scripts]): python -m autosparse_jax.lab.main."""
  if __name__ != "__main__":  # absl's --help shows __main__'s docstring and flags: the script's, so ours.
    sys.modules["__main__"].__doc__ = __doc__
    for flag in flags.FLAGS.get_key_flags_for_module(__name__):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  cli()
