"""The `pipeline` job: several jobs in order, each in its own sub-workdir, wired by references.

config.stages is an ordered list of stage names; config.<name> is a whole job
config (its `job` field says which). A string "@STAGE.FIELD" anywhere in a
stage's config is replaced, before that stage runs, by FIELD of STAGE's
results.json ("@STAGE.FIELD[i]" takes element i of a list); inside a tuple a
list value is spliced in, so ("@irp.score_dataset_dir",) becomes every seed's
dataset. Stage NAME runs in WORKDIR/NAME and is resumable like any job, so
re-running a pipeline skips finished stages and resumes the interrupted one.

config.survival_figure_stage (optional): after that IRP stage, write
WORKDIR/survival_score.png (paper Figure 1: surviving score against theta_0
and against the SNIP and GraSP scores of the same initial network).
"""
import os
import re
import time

import ml_collections

from autosparse_jax import console, criteria
from autosparse_jax.lab import jobs
from autosparse_jax.console import log
from autosparse_jax.data.specs import DATASETS
from autosparse_jax.errors import ConfigError, unknown_name_message
from autosparse_jax.lab.engine import NO_PRUNING
from autosparse_jax.lab.figures import survival_figure
from autosparse_jax.lab.runs import initial_scores
from autosparse_jax.models import MODELS
from autosparse_jax.lab.workdir import Workdir

REFERENCE = re.compile(r"^@([A-Za-z_][\w]*)\.([A-Za-z_][\w]*)(?:\[(-?\d+)\])?$")


def references(value):
  """Every "@STAGE.FIELD[i]" string inside a (nested) config value."""
  if isinstance(value, str):
    return [value] if value.startswith("@") else []
  if isinstance(value, (dict, ml_collections.ConfigDict)):
    return [r for v in value.values() for r in references(v)]
  if isinstance(value, (list, tuple)):
    return [r for v in value for r in references(v)]
  return []


def resolve(value, results, where):
  """`value` with every reference replaced by the referenced stage's result."""
  if isinstance(value, str) and value.startswith("@"):
    match = REFERENCE.match(value)
    stage, field, index = match.group(1), match.group(2), match.group(3)
    if field not in results[stage]:
      raise ConfigError(f"{where}={value!r}: stage {stage!r} reported no field {field!r} "
                        f"(it has: {', '.join(sorted(results[stage]))}).")
    out = results[stage][field]
    if index is None:
      return out
    items = [out] if isinstance(out, str) else out  # A one-seed IRP reports one directory.
    if not isinstance(items, list) or not -len(items) <= int(index) < len(items):
      raise ConfigError(f"{where}={value!r}: stage {stage!r} reported {field}={out!r}, which has no "
                        f"element {index}.")
    return items[int(index)]
  if isinstance(value, dict):
    return {k: resolve(v, results, f"{where}.{k}") for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    out = []
    for i, v in enumerate(value):
      r = resolve(v, results, f"{where}[{i}]")
      out.extend(r if isinstance(r, list) and isinstance(v, str) else [r])
    return tuple(out)
  return value


def validate(config):
  stages = list(config.stages)
  if not stages:
    raise ConfigError("config.stages is empty: list the stage names in the order they run.")
  for i, name in enumerate(stages):
    if name not in config:
      raise ConfigError(f"config.stages names {name!r} but config.{name} does not exist: add the "
                        "stage's job config under that name.")
    job = config[name].get("job")
    if job not in jobs.JOBS or job == "pipeline":
      raise ConfigError(f"config.{name}.job={job!r} is not a job a stage can run (one of "
                        f"{', '.join(j for j in jobs.JOBS if j != 'pipeline')}).")
    for ref in references(config[name].to_dict()):
      match = REFERENCE.match(ref)
      if not match:
        raise ConfigError(f"config.{name} holds {ref!r}: references look like '@STAGE.FIELD' or "
                          "'@STAGE.FIELD[i]'.")
      if match.group(1) not in stages[:i]:
        raise ConfigError(f"config.{name} refers to {ref!r}, but stage {match.group(1)!r} does not run "
                          f"before it (config.stages={tuple(stages)}).")
    jobs.import_plugins(config[name])  # Its criteria are known before its names are checked.
    check_stage_names(config[name], f"config.{name}")
  figure = config.get("survival_figure_stage", "")
  if figure and (figure not in stages or config[figure].job != "irp"):
    raise ConfigError(f"config.survival_figure_stage={figure!r} must name an irp stage of config.stages.")


def check_stage_names(stage, where):
  """Names a stage would only reject after the stages before it ran (hours, on real sizes)."""
  if stage.get("job") == "sweep":
    from autosparse_jax.lab.jobs import sweep
    sweep.check_variant_fields(stage, f"{where}.")
  if stage.get("model") is not None and stage.model not in MODELS:
    raise ConfigError(unknown_name_message(f"{where}.model", stage.model, MODELS))
  if stage.get("dataset") is not None and stage.job != "autos_train" and stage.dataset not in DATASETS:
    raise ConfigError(unknown_name_message(f"{where}.dataset", stage.dataset, DATASETS))
  if stage.job in ("prune", "irp") and stage.criterion != NO_PRUNING:
    criteria.get(stage.criterion, f"{where}.criterion")
  if stage.job == "sweep":
    defined = dict(stage.sweep.get("variants", {}) or {})
    for label in stage.sweep.criteria:
      if label in defined:
        criteria.get(defined[label].get("criterion"), f"{where}.sweep.variants.{label}.criterion")
      else:
        criteria.get(label, f"{where}.sweep.criteria")


def stage_config(config, name, results):
  raw = resolve(config[name].to_dict(), results, f"config.{name}")
  return ml_collections.ConfigDict(raw)


def run(config, workdir_path):
  start = time.time()
  workdir = Workdir(workdir_path, config)
  if (done := workdir.finished_results()) is not None:
    return done
  workdir.start(resuming=True)
  results, seconds = {}, {}
  stages_bar = console.bar("pipeline stages", len(config.stages))
  for k, name in enumerate(config.stages):
    console.advance(stages_bar, k, f"stage {k + 1} of {len(config.stages)}: {name}")
    log(f"pipeline: stage {k + 1} of {len(config.stages)}, {name} ({config[name].job}), in "
        f"{os.path.join(workdir.path, name)}")
    t = time.time()
    results[name] = jobs.run(stage_config(config, name, results), os.path.join(workdir.path, name))
    seconds[name] = time.time() - t
    if name == config.get("survival_figure_stage", ""):
      path = os.path.join(workdir.path, "survival_score.png")
      if workdir.is_writer and not os.path.exists(path):
        irp_config = stage_config(config, name, results)
        survival_figure(results[name], lambda seed: initial_scores(irp_config, seed), path)
  console.done(stages_bar)
  last = results[config.stages[-1]]
  summary = {"job": "pipeline", "stages": list(config.stages),
             "stage_workdirs": {n: os.path.join(workdir.path, n) for n in config.stages},
             "stage_seconds_this_run": seconds, "wall_seconds_this_run": time.time() - start,
             "final": {k: last[k] for k in ("table", "files") if k in last}}
  if config.get("survival_figure_stage", ""):
    summary["survival_figure"] = os.path.join(workdir.path, "survival_score.png")
  workdir.write_results(summary)
  log(f"pipeline done in {time.time() - start:.0f} s; stages in {workdir.path}")
  return summary
