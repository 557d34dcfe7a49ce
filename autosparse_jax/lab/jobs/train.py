"""The `train` job: train one dense network, vmapped over seeds.

Pruning at init and training is the prune job's (configs/prune.py): a train
config with a criterion or a sparsity is refused with the prune command to run
(schema.train_job_prunes), so there is one way to prune-and-train.

run(config, workdir) -> results dict (also written to results.json).
"""
import os
import time

from autosparse_jax.lab import engine, runs, schema
from autosparse_jax.console import log
from autosparse_jax.errors import ConfigError


def validate(config):
  refused = schema.train_job_prunes(config)
  if refused:
    raise ConfigError(refused)
  engine.validate(config)


def run(config, workdir_path):
  validate(config)  # Also for direct callers: a criterion here would otherwise be ignored.
  start = time.time()
  workdir, task = runs.start(config, workdir_path, resuming=True)
  if task is None:
    return workdir.results()
  seeds = engine.seed_list(config)
  log(f"train: {config.model} on {config.dataset} ({len(task.dataset.train_images)} train / "
      f"{len(task.dataset.test_images)} test), seeds {seeds}, {config.train.epochs} epochs of "
      f"{task.trainer.steps_per_epoch} steps")
  states = engine.init_states(config, task)
  reports = engine.density_reports(states)
  states, last = engine.run_training(config, task, states, workdir,
                                     checkpoint_dir=os.path.join(workdir.path, "checkpoints"),
                                     networks=[f"seed_{s}" for s in seeds])
  results = {
      "job": "train", "model": config.model, "dataset": config.dataset, "seeds": seeds,
      "criterion": engine.NO_PRUNING, "sparsity": 0.0,  # Readers of prune rows read these fields.
      **engine.accuracy_summary(last), **engine.density_summary(reports),
      "scoring_seconds": 0.0,
      "epochs": int(config.train.epochs), "wall_seconds": time.time() - start,
  }
  workdir.write_results(results)
  log(f"test accuracy {100 * results['test_accuracy']:.2f}% "
      f"(+- {100 * results['test_accuracy_seeds']['std']:.2f} over {len(seeds)} seeds); "
      f"results in {workdir.path}/results.json")
  return results
