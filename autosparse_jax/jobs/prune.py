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

import jax
import numpy as np

from autosparse_jax import compact_export, criteria, engine, programs, pruning, sparse_cost, structure
from autosparse_jax.console import log
from autosparse_jax.criteria.paths import path_metrics
from autosparse_jax.distributed import to_host
from autosparse_jax.errors import ConfigError
from autosparse_jax.workdir import read_jsonl

RUNS = "runs.jsonl"  # One line per finished sparsity: a re-run after an interruption skips them.


def sparsity_list(config):
  values = list(config.get("sparsities", ()) or ()) or [config.sparsity]
  return [pruning.check_sparsity(s, "config.sparsities" if config.get("sparsities") else "config.sparsity")
          for s in values]


def validate(config):
  if config.criterion == pruning.NO_PRUNING:
    raise ConfigError("config.criterion='none' does not prune: use configs/train.py for dense runs, "
                      f"or one of {', '.join(criteria.names())}.")
  engine.validate(config, needs_sparsity=not config.get("sparsities"))
  sparsity_list(config)


def mask_metrics(task, states):
  """NPB's effective paths / nodes / params of every network's masks (float64)."""
  trainer = task.trainer

  def one(state):
    return path_metrics(state.params, state.masks,
                        pruning.model_state(trainer, state.batch_stats))

  with jax.enable_x64(True):
    out = task.program(programs.program_key("path_metrics"), lambda: jax.jit(jax.vmap(one)))(states)
    return {k: np.asarray(v).tolist() for k, v in out.items()}


def mask_cost(task, states, config):
  """asj.cost of every network's masks, per example (FLOPs of one input): a list over the seed axis.

  The dense FLOPs (XLA's cost analysis) are computed once per task; the masked layers'
  multiply-adds are read from each network's jaxpr with its masks (sparse_cost.py).
  """
  trainer = task.trainer
  parsed = structure.parse(config.prune.get("structure", structure.UNSTRUCTURED))
  nm = (parsed.n, parsed.m) if parsed.kind == "nm" else None
  shape = (1,) + tuple(trainer.spec.image_shape)
  states = to_host(states)  # Several processes: every process gets every network.
  out = []
  for i in range(jax.tree.leaves(states.params)[0].shape[0]):
    state = jax.tree.map(lambda x, i=i: np.asarray(x[i]), states)
    model_state = pruning.model_state(trainer, state.batch_stats)
    apply_fn = lambda p, x, ms=model_state: ms.logits(p, x)
    def dense_flops(state=state, apply_fn=apply_fn):  # Once per task: the masks do not change it.
      full = sparse_cost.cost(state.params, state.masks, apply_fn, shape, train_batch=config.train.batch_size)
      return full["inference_flops_dense"], full["training_flops_dense"]
    dense = task.program(programs.program_key("dense_flops"), dense_flops)
    out.append(sparse_cost.cost(state.params, state.masks, apply_fn, shape, nm=nm, dense_flops=dense,
                                train_batch=config.train.batch_size))
  return out


def cost_summary(costs):
  """The cost fields of a result row: FLOPs per example (mean over seeds) and bytes (seed 0's)."""
  mean = lambda k: float(np.mean([c[k] for c in costs]))
  return {"inference_flops": mean("inference_flops"), "inference_flops_dense": costs[0]["inference_flops_dense"],
          "training_flops": mean("training_flops"), "training_flops_dense": costs[0]["training_flops_dense"],
          "kept_macs": mean("kept_macs"), "bytes": costs[0]["bytes"]}


def export_networks(config, workdir, states, seeds, tag):
  """config.export (bitmask | nm | bcoo): each seed's trained weights under its masks, one file each,
  in WORKDIR/export/ (compact_export.py); returns their paths ([] when config.export is '')."""
  fmt = config.get("export", "")
  if not fmt or not workdir.is_writer:
    return []
  directory = os.path.join(workdir.path, "export")
  os.makedirs(directory, exist_ok=True)
  states = to_host(states)
  paths = []
  for i, seed in enumerate(seeds):
    path = os.path.join(directory, f"{tag.replace(':', '_')}_seed_{seed}.{fmt}.npz")
    compact_export.export(jax.tree.map(lambda x: np.asarray(x[i]), states.params),
                          jax.tree.map(lambda x: np.asarray(x[i]), states.masks), path, format=fmt,
                          structure=config.prune.get("structure") if fmt == "nm" else None)
    paths.append(path)
  return paths


def run(config, workdir_path):
  sparsities = sparsity_list(config)
  start = time.time()
  workdir, task = engine.start(config, workdir_path, resuming=True)
  if task is None:
    return workdir.results()
  seeds = engine.seed_list(config)
  finished = {r["sparsity"]: r for r in read_jsonl(os.path.join(workdir.path, RUNS))}
  runs = []
  for sparsity in sparsities:
    if sparsity in finished:  # Done before an interruption: kept, not redone.
      runs.append(finished[sparsity])
      continue
    tag = f"{config.criterion}@{sparsity:g}"
    states = engine.init_states(config, task)
    t = time.time()
    states, _ = jax.block_until_ready(pruning.prune_states(config, task, states, config.criterion, sparsity))
    scoring_seconds = time.time() - t
    reports = engine.density_reports(states)
    paths = mask_metrics(task, states)
    costs = cost_summary(mask_cost(task, states, config))
    engine.warn_empty_layers(reports, [f"seed {s}" for s in seeds], tag)
    log(f"{tag}: scored in {scoring_seconds:.1f} s (compilation included), density "
        f"{np.mean([r['density'] for r in reports]):.5f}, log10 paths {np.mean(paths['log10_paths']):.2f}")
    states, last = engine.run_training(config, task, states, workdir, tag=tag,
                                       checkpoint_dir=os.path.join(workdir.path, "checkpoints", tag),
                                       networks=[f"seed_{s}" for s in seeds])
    exported = export_networks(config, workdir, states, seeds, tag)
    runs.append({"criterion": config.criterion, "sparsity": sparsity, "seeds": seeds,
                 **({"export": exported} if exported else {}),
                 **engine.accuracy_summary(last), **engine.density_summary(reports),
                 "scoring_seconds": scoring_seconds, "structure": config.prune.get("structure", "unstructured"),
                 **costs, **paths})
    workdir.append_jsonl(RUNS, [runs[-1]])
  results = {"job": "prune", "model": config.model, "dataset": config.dataset,
             "criterion": config.criterion, "epochs": int(config.train.epochs),
             "grad_reduction": config.prune.grad_reduction,
             "distribution_used": pruning.distribution_used(config.criterion, config.prune.distribution),
             "runs": runs, "wall_seconds": time.time() - start}
  if len(runs) == 1:  # Every field a one-network run reports (seeds, losses, densities) where readers look.
    results.update(runs[0])
  workdir.write_results(results)
  for r in runs:
    log(f"{r['criterion']} at sparsity {r['sparsity']:g}: test accuracy "
        f"{100 * r['test_accuracy']:.2f}% (+- {100 * r['test_accuracy_seeds']['std']:.2f}), "
        f"density {r['density']:.5f}")
  return results
