"""The `sweep` job: criteria x sparsities x seeds; each criterion's grid trains as one program.

config.sweep.criteria x config.sparsities (the same field as the prune job's) x seeds.

Masked networks of one model all have the same shapes, so every (sparsity,
seed) network of a criterion is stacked on the leading axis that the training
code vmaps over and trained by one compiled program (in chunks of
sweep.max_networks_per_program). Network (p, s) keeps seed s's key, so its
data order and augmentation are those of the standalone run of seed s and it
ends bit-identical to it (tests/test_sweep.py).

Writes one row per network to results.jsonl as soon as its chunk is trained:
re-running the command skips the rows already there (resume after preemption
at chunk granularity). At the end: table.csv and table.md (mean +- std over
seeds), accuracy_vs_sparsity.png, layer_density.png and results.json.

sweep.criteria entries are criterion names or keys of sweep.variants: a
variant is {"criterion": NAME, <config fields to set>}, e.g. the LTH masks of
an IRP run: {"criterion": "survival", "survival": {"score_datasets": (...)}}.
"""
import copy
import hashlib
import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import ml_collections

from autosparse_jax import dynamic_sparsity, prune_spec
from autosparse_jax.lab import engine, report, runs, schema
from autosparse_jax.lab.config_tools import flatten
from autosparse_jax.console import log
from autosparse_jax.errors import ConfigError
from autosparse_jax.lab.report import DENSE, ROWS
from autosparse_jax.lab.workdir import read_jsonl


def set_fields(config, fields, where):
  """Sets nested `fields` (a dict) on `config`; unknown fields are an error naming `where`."""
  for name, value in fields.items():
    if name not in config:
      raise ConfigError(f"{where}.{name} is not a config field: a variant may only set existing "
                        "fields (e.g. autos.scorer_dir, survival.score_datasets, prune.*).")
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      set_fields(config[name], dict(value), f"{where}.{name}")
    else:
      config[name] = value


def check_variant_fields(config, prefix="config."):
  """Every variant of sweep.variants (listed in sweep.criteria or not) sets only fields a variant can
  change: its own sparsities are refused (a sweep's grid is config.sparsities), as are fields the sweep
  job does not read. Needs no stage results (a pipeline checks its sweep stages up front)."""
  for label, fields in dict(config.sweep.get("variants", {}) or {}).items():
    fields = fields.to_dict() if isinstance(fields, ml_collections.ConfigDict) else dict(fields or {})
    where = f"{prefix}sweep.variants.{label}"
    for name in flatten({k: v for k, v in fields.items() if k != "criterion"}):
      if name in ("sparsities", "sparsity"):
        raise ConfigError(f"{where}.{name}: a variant cannot set its own sparsities: every criterion of a sweep "
                          f"runs at {prefix}sparsities={tuple(config.get('sparsities', ()) or ())}. Remove it, "
                          "or run this variant in a sweep of its own.")
      field = schema.BY_NAME.get(name)
      if field is not None and "sweep" not in field.jobs:
        raise ConfigError(f"{where}.{name} is not read by the sweep job (it is read by: {', '.join(field.jobs)}): "
                          "remove it from the variant.")


def variants(config, labels=None):
  """[(label, criterion, config for it)] in sweep.criteria order (labels: these instead)."""
  out = []
  defined = dict(config.sweep.get("variants", {}) or {})
  for label in config.sweep.criteria if labels is None else labels:
    if label in defined:
      fields = dict(copy.deepcopy(defined[label].to_dict()
                                  if isinstance(defined[label], ml_collections.ConfigDict)
                                  else defined[label]))
      if "criterion" not in fields:
        raise ConfigError(f"config.sweep.variants.{label} needs a 'criterion' field (the criterion "
                          "it runs, e.g. 'survival' or 'autos').")
      criterion = fields.pop("criterion")
      where = f"config.sweep.variants.{label}"
      found = [p for name, value in flatten(fields).items() if name in schema.BY_NAME
               for p in schema.field_problems(schema.BY_NAME[name], value, f"{where}.{name}")]
      if found:
        raise ConfigError(found[0] if len(found) == 1 else "problems in the config:\n  - " + "\n  - ".join(found))
      vconfig = ml_collections.ConfigDict(config.to_dict())
      set_fields(vconfig, fields, where)
    else:
      criterion, vconfig = label, config
    out.append((label, criterion, vconfig))
  return out


def variant_specs(config):
  """[(label, config for it, {sparsity: (PruneSpec or None, mask schedule)})] in sweep.criteria order (the
  door: built and checked once here). The spec prunes at init (None: GMP from dense, criterion 'none');
  the schedule is how the masks change while training (static: they do not)."""
  out = []
  for label, criterion, vconfig in variants(config):
    where = "config" if label == criterion else f"config.sweep.variants.{label}"
    specs = {}
    for s in map(float, config.sparsities):
      if criterion == engine.NO_PRUNING:
        settings = prune_spec.settings_from_config(vconfig)
        spec, structure = None, settings["structure"]
        record = prune_spec.sparse_training_from_config(vconfig, 1.0 - s, settings["distribution"])
      else:
        spec = prune_spec.from_config(vconfig, criterion, density=1.0 - s, density_field=f"config.sparsities ({s:g})")
        record, structure = spec.sparse_training, spec.structure
      prune_spec.check_sparse_training(record, criterion, structure, where)
      specs[s] = (spec, record)
    out.append((label, vconfig, specs))
  return out


def validate(config):
  engine.validate(config, needs_sparsity=False)
  labels = list(config.sweep.criteria)
  if not labels:
    raise ConfigError("config.sweep.criteria is empty: list criteria (e.g. \"('random','snip')\") "
                      "or keys of config.sweep.variants.")
  if len(set(labels)) != len(labels) or DENSE in labels:
    raise ConfigError(f"config.sweep.criteria={tuple(labels)} repeats a name or uses {DENSE!r} "
                      "(set config.sweep.dense=True for the dense baseline).")
  if not list(config.get("sparsities", ()) or ()):
    raise ConfigError("config.sparsities is empty: list fractions in (0, 1) (0.9 keeps 10% of the "
                      "prunable weights), e.g. --config.sparsities='(0.9,0.98)'.")
  for s in config.sparsities:
    try:
      prune_spec.check_sparsity(s, f"config.sparsities={tuple(config.sparsities)} holds {s}: a sparsity")
    except ValueError as e:
      raise ConfigError(str(e)) from None
  if int(config.sweep.max_networks_per_program) < -1:
    raise ConfigError(f"config.sweep.max_networks_per_program={config.sweep.max_networks_per_program} "
                      "must be >= -1 (-1 = auto, 0 = a criterion's whole grid in one program).")
  check_variant_fields(config)
  unused = [label for label in dict(config.sweep.get("variants", {}) or {}) if label not in labels]
  variants(config, unused)  # Their fields' values too (their criterion's inputs only once they are listed).
  for label, criterion, vconfig in variants(config):
    method = vconfig.get("sparse_training", {}).get("method", "static")
    if criterion == engine.NO_PRUNING and method != "gmp":
      raise ConfigError(f"config.sweep.criteria: {label!r} does not prune; use config.sweep.dense=True (or a "
                        "variant with sparse_training.method='gmp' to prune gradually from dense).")
    where = f"config.sweep.variants.{label}.criterion" if label != criterion else "config.sweep.criteria"
    if criterion != engine.NO_PRUNING:
      prune_spec.check_config_criterion(vconfig, criterion, where)
  variant_specs(config)


def take(states, index):
  return jax.tree.map(lambda x: x[jnp.asarray(index)], states)


def concat(trees):
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *trees)


def grid_states(config, task, specs, cells, seeds, total_steps=None):
  """States of the (sparsity, seed) `cells` pruned at init by specs[sparsity] = (spec or None, mask schedule),
  stacked on the leading axis, + per-cell info (with the run's training FLOPs when total_steps is given)."""
  dense = engine.init_states(config, task)
  batch = int(config.train.batch_size)
  parts, info, score_cache = [], [], {}
  for sparsity in dict.fromkeys(p for p, _ in cells):  # In order of first appearance.
    wanted = [seeds.index(s) for p, s in cells if p == sparsity]
    spec, record = specs[sparsity]
    pruned, networks = runs.pruned_networks(spec and runs.init_spec(spec), task, dense, batch, score_cache)
    flops = runs.training_flops(record, task, pruned, networks, total_steps, batch) if total_steps else None
    parts.append(take(pruned, wanted))
    info += [dict(networks[i], **(flops[i] if flops else {}), sparsity=sparsity, seed=seeds[i]) for i in wanted]
  return concat(parts), info


def program_name(label, cells):
  """The checkpoint directory name of a program: its cells name it (stable across resumes)."""
  return f"{label}-" + hashlib.sha1(json.dumps([label, [list(c) for c in cells]]).encode()).hexdigest()[:12]


def run_cells(config, task, workdir, label, specs, cells, seeds, stage_bar=None):
  """Prunes and trains `cells` as one vmapped program (one mask schedule: records[sparsity] of the cells'
  sparsities are equal); returns their rows."""
  steps = engine.total_steps(config, task)
  specs = {p: (spec, prune_spec.resolve_sparse_training(record, steps)) for p, (spec, record) in specs.items()}
  record = specs[cells[0][0]][1]
  states, info = grid_states(config, task, specs, cells, seeds, steps)
  engine.warn_empty_layers([item["report"] for item in info],
                           [f"{label}@{item['sparsity']:g} seed {item['seed']}" for item in info])
  t = time.time()
  program = program_name(label, cells)
  states, last = engine.run_training(config, task, states, workdir, tag=f"{label} x{len(cells)}",
                                     checkpoint_dir=os.path.join(workdir.path, "checkpoints", program),
                                     networks=[f"{label}@{p:g}/seed_{s}" for p, s in cells],
                                     sparse_training=record, stage_bar=stage_bar)
  train_seconds = time.time() - t
  if record.method != "static":  # The masks trained: what the rows report of them.
    final = runs.measure(task, states, int(config.train.batch_size), prune_spec.structure_lib.UNSTRUCTURED)
    info = [dict(item, **{k: v for k, v in end.items() if k != "scoring_seconds"}) for item, end in zip(info, final)]
  spec = specs[cells[0][0]][0]
  criterion = DENSE if label == DENSE else spec.criterion if spec is not None else engine.NO_PRUNING
  rows = []
  for i, item in enumerate(info):
    r = item.pop("report")
    rows.append({
        "criterion": label, "method": criterion, "sparsity": item.pop("sparsity"), "seed": item.pop("seed"),
        "test_accuracy": float(last["test_accuracy"][i]), "test_loss": float(last["test_loss"][i]),
        "train_accuracy": float(last["train_accuracy"][i]), "train_loss": float(last["train_loss"][i]),
        "density": r["density"], "kept": r["kept"], "total": r["total"], "empty_layers": r["empty_layers"],
        "layer_density": {n: v["density"] for n, v in r["layers"].items()},
        "epochs": int(config.train.epochs), "networks_in_program": len(cells),
        "train_seconds_of_program": train_seconds, "sparse_training": record.method, **item})
  return rows


def networks_per_program(config, task):
  """config.sweep.max_networks_per_program, with -1 (auto) resolved: one network per program for
  conv nets on CPU (vmap turns their convolutions into grouped ones, which XLA:CPU runs ~2x slower
  than the networks one at a time: BENCHMARKS.md), a criterion's whole grid otherwise (0)."""
  limit = int(config.sweep.max_networks_per_program)
  if limit == -1:
    return 1 if jax.default_backend() == "cpu" and task.trainer.has_conv() else 0
  return limit


def chunks(todo, limit, specs):
  """`todo` cells in programs of at most `limit` networks (0: all), one mask schedule per program (GMP's
  depends on the sparsity it prunes to: one program per sparsity; static, SET and RigL share one)."""
  groups = {}
  for cell in todo:
    groups.setdefault(specs[cell[0]][1], []).append(cell)
  for cells in groups.values():
    step = limit or len(cells)
    for i in range(0, len(cells), step):
      yield cells[i:i + step]


def run(config, workdir_path):
  start = time.time()
  workdir, task = runs.start(config, workdir_path, resuming=True)
  if task is None:
    return workdir.results()
  rows_path = os.path.join(workdir.path, ROWS)
  rows = read_jsonl(rows_path)
  if workdir.is_writer and os.path.exists(rows_path) and rows != read_jsonl(rows_path, quiet=True, whole=True):
    workdir.write_jsonl(ROWS, rows)  # Drop a torn last line so that new rows start on a line of their own.
  done = {(r["criterion"], r["sparsity"], r["seed"]) for r in rows}
  if done:
    log(f"sweep: resuming, {len(done)} networks already in {rows_path}")
  seeds = engine.seed_list(config)
  sparsities = [float(s) for s in config.sparsities]
  plan = [(DENSE, config, {0.0: (None, dynamic_sparsity.Static())}, [(0.0, s) for s in seeds])] \
      if config.sweep.dense else []
  plan += [(label, vconfig, specs, [(p, s) for p in sparsities for s in seeds])
           for label, vconfig, specs in variant_specs(config)]
  limit = networks_per_program(config, task)
  programs = []  # (label, its config, its specs, the cells one program trains), what is left to do.
  for label, vconfig, specs, cells in plan:
    todo = [c for c in cells if (label,) + c not in done]
    programs += [(label, vconfig, specs, chunk) for chunk in chunks(todo, limit, specs)]
  steps = task.trainer.steps_per_epoch * int(config.train.epochs)
  bar = engine.StageBar("sweep", len(programs) * steps)  # One bar over every program.
  for k, (label, vconfig, specs, chunk) in enumerate(programs):
    log(f"sweep: {label}: {len(chunk)} networks (sparsity x seed) in one program")
    new_rows = run_cells(vconfig, task, workdir, label, specs, chunk, seeds, stage_bar=bar.at(k * steps))
    workdir.append_jsonl(ROWS, new_rows)
    rows += new_rows
    if workdir.is_writer:  # Its rows are safe: its mid-run checkpoints are no longer needed.
      shutil.rmtree(os.path.join(workdir.path, "checkpoints", program_name(label, chunk)), ignore_errors=True)
  bar.done()
  outputs = report.write_sweep_report(rows, workdir.path if workdir.is_writer else None,
                                      title=f"{config.model} / {config.dataset}, {config.train.epochs} epochs")
  results = {"job": "sweep", "model": config.model, "dataset": config.dataset, "seeds": seeds,
             "criteria": list(config.sweep.criteria), "sparsities": sparsities,
             "epochs": int(config.train.epochs), "table": outputs["table"],
             "files": outputs["files"], "wall_seconds_this_run": time.time() - start}
  workdir.write_results(results)
  log("\n" + outputs["markdown"])
  log(f"sweep done: {len(rows)} networks; table and figures in {workdir.path}")
  return results
