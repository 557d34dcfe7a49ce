"""The `train` job: train one network (dense, or pruned at init), vmapped over seeds.

run(config, workdir) -> results dict (also written to results.json).
"""
import os
import time

import jax

from autosparse_jax import engine, pruning
from autosparse_jax.console import log


def validate(config):
  engine.validate(config)


def run(config, workdir_path):
  start = time.time()
  workdir, task = engine.start(config, workdir_path, resuming=True)
  if task is None:
    return workdir.results()
  seeds = engine.seed_list(config)
  log(f"train: {config.model} on {config.dataset} ({len(task.dataset.train_images)} train / "
      f"{len(task.dataset.test_images)} test), seeds {seeds}, {config.train.epochs} epochs of "
      f"{task.trainer.steps_per_epoch} steps")
  states = engine.init_states(config, task)
  scoring_seconds = 0.0
  if config.criterion != pruning.NO_PRUNING:
    t = time.time()
    states, _ = jax.block_until_ready(pruning.prune_states(config, task, states, config.criterion,
                                                           float(config.sparsity)))
    scoring_seconds = time.time() - t
  reports = engine.density_reports(states)
  engine.warn_empty_layers(reports, [f"seed {s}" for s in seeds])
  states, last = engine.run_training(config, task, states, workdir,
                                     checkpoint_dir=os.path.join(workdir.path, "checkpoints"),
                                     networks=[f"seed_{s}" for s in seeds])
  results = {
      "job": "train", "model": config.model, "dataset": config.dataset, "seeds": seeds,
      "criterion": config.criterion, "sparsity": float(config.sparsity),
      **engine.accuracy_summary(last), **engine.density_summary(reports),
      "scoring_seconds": scoring_seconds,
      "epochs": int(config.train.epochs), "wall_seconds": time.time() - start,
  }
  if config.criterion != pruning.NO_PRUNING:
    results["distribution_used"] = pruning.distribution_used(config.criterion, config.prune.distribution)
  workdir.write_results(results)
  log(f"test accuracy {100 * results['test_accuracy']:.2f}% "
      f"(+- {100 * results['test_accuracy_seeds']['std']:.2f} over {len(seeds)} seeds); "
      f"results in {workdir.path}/results.json")
  return results
