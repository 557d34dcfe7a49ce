"""The `prune` job: prune at initialization with one criterion, then train the masked network.

The one way to prune at init and train (the train job trains dense networks;
the sweep job runs grids of criteria x sparsities x seeds). For each sparsity
(config.sparsity, or each of config.sparsities) every seed's theta_0 is scored,
masked and trained; results.json gives per sparsity ("runs") the test accuracy,
achieved density (overall and per layer), NPB's path metrics and the scoring
time, and with one sparsity all of that run's fields at the top level too.
"""
import os
import time

from autosparse_jax import criteria, prune_spec
from autosparse_jax.console import log
from autosparse_jax.errors import ConfigError
from autosparse_jax.lab import engine, runs
from autosparse_jax.lab.workdir import read_jsonl

RUNS = "runs.jsonl"  # One line per finished sparsity: a re-run after an interruption skips them.


def sparsity_list(config):
  field = "config.sparsities" if config.get("sparsities") else "config.sparsity"
  try:
    return [prune_spec.check_sparsity(s, field) for s in list(config.get("sparsities", ()) or ()) or [config.sparsity]]
  except ValueError as e:
    raise ConfigError(str(e)) from None


def specs(config):
  """[(sparsity, PruneSpec or None, mask schedule)] of the job (the door: built and checked once here).

  The spec prunes at init (None: GMP from dense, config.criterion='none'); the schedule is its
  sparse_training record (static: the masks stay fixed while training).
  """
  out = []
  for s in sparsity_list(config):
    if config.criterion == engine.NO_PRUNING:
      spec = None
      settings = prune_spec.settings_from_config(config)
      record = prune_spec.sparse_training_from_config(config, 1.0 - s, settings["distribution"])
      structure = settings["structure"]
    else:
      spec = prune_spec.from_config(config, density=1.0 - s)
      record, structure = spec.sparse_training, spec.structure
    prune_spec.check_sparse_training(record, config.criterion, structure)
    out.append((s, spec, record))
  return out


def validate(config):
  method = config.get("sparse_training", {}).get("method", "static")
  if config.criterion == engine.NO_PRUNING and method == "static":
    raise ConfigError("config.criterion='none' does not prune: use configs/train.py for dense runs, "
                      f"or one of {', '.join(criteria.names())} (or config.sparse_training.method='gmp' to "
                      "prune gradually from dense).")
  engine.validate(config, needs_sparsity=not config.get("sparsities"))
  specs(config)


def sparse_training_fields(record, flops):
  """A row's method of training (static: masks fixed while training) and its whole run's training FLOPs,
  sparse and dense (mean over the networks)."""
  mean = lambda k: float(sum(f[k] for f in flops) / len(flops))
  return {"sparse_training": record.method, "training_flops_total": mean("training_flops_total"),
          "training_flops_total_dense": mean("training_flops_total_dense")}


def run(config, workdir_path):
  planned = specs(config)
  start = time.time()
  workdir, task = runs.start(config, workdir_path, resuming=True)
  if task is None:
    return workdir.results()
  seeds = engine.seed_list(config)
  finished = {r["sparsity"]: r for r in read_jsonl(os.path.join(workdir.path, RUNS))}
  rows = []
  steps, batch = engine.total_steps(config, task), int(config.train.batch_size)
  planned = [(s, spec, prune_spec.resolve_sparse_training(record, steps)) for s, spec, record in planned]
  bar = engine.StageBar(f"prune {config.criterion}", steps * sum(s not in finished for s, _, _ in planned))
  for sparsity, spec, record in planned:
    if sparsity in finished:  # Done before an interruption: kept, not redone.
      rows.append(finished[sparsity])
      continue
    bar.at(steps * sum(s not in finished for s, _, _ in planned[:len(rows)]))
    tag = f"{config.criterion}@{sparsity:g}"
    structure = spec.structure if spec else prune_spec.structure_lib.UNSTRUCTURED
    start_states, info = runs.pruned_networks(spec and runs.init_spec(spec), task, engine.init_states(config, task),
                                              batch)
    runs.log_pruned(tag, info)
    engine.warn_empty_layers([i["report"] for i in info], [f"seed {s}" for s in seeds], tag)
    flops = runs.training_flops(record, task, start_states, info, steps, batch)
    states, last = engine.run_training(config, task, start_states, workdir, tag=tag,
                                       checkpoint_dir=os.path.join(workdir.path, "checkpoints", tag),
                                       networks=[f"seed_{s}" for s in seeds], sparse_training=record,
                                       stage_bar=bar)
    if record.method != "static":  # The masks trained: what the rows report of them.
      info = runs.measure(task, states, batch, structure, info[0]["scoring_seconds"])
    exported = runs.export_networks(config.get("export", ""), structure, workdir, states, seeds, tag)
    rows.append({"criterion": config.criterion, "sparsity": sparsity, "seeds": seeds,
                 **({"export": exported} if exported else {}),
                 **engine.accuracy_summary(last), **engine.density_summary([i["report"] for i in info]),
                 "scoring_seconds": info[0]["scoring_seconds"], "structure": info[0]["structure"],
                 "dense_layers": info[0]["dense_layers"],
                 **runs.cost_summary(info), **{k: [i[k] for i in info] for k in runs.PATH_METRICS},
                 **sparse_training_fields(record, flops)})
    workdir.append_jsonl(RUNS, [rows[-1]])
  bar.done()
  spec = planned[0][1]
  results = {"job": "prune", "model": config.model, "dataset": config.dataset,
             "criterion": config.criterion, "epochs": int(config.train.epochs),
             "grad_reduction": prune_spec.data_options_from_config(config).grad_reduction,
             "distribution_used": spec.distribution_used if spec else prune_spec.settings_from_config(config)[
                 "distribution"],
             "runs": rows, "wall_seconds": time.time() - start}
  if len(rows) == 1:  # Every field a one-network run reports (seeds, losses, densities) where readers look.
    results.update(rows[0])
  workdir.write_results(results)
  for r in rows:
    log(f"{r['criterion']} at sparsity {r['sparsity']:g}: test accuracy "
        f"{100 * r['test_accuracy']:.2f}% (+- {100 * r['test_accuracy_seeds']['std']:.2f}), "
        f"density {r['density']:.5f}")
  return results
