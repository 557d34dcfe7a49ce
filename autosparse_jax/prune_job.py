"""The `prune` job: prune at initialization with one criterion, then train the masked network.

For each sparsity (config.sparsity, or each of config.sparsities) every seed's
theta_0 is scored, masked and trained; results.json gives per sparsity the test
accuracy, achieved density (overall and per layer), NPB's path metrics and the
scoring time.
"""
import time

import jax
import numpy as np

from autosparse_jax import criteria
from autosparse_jax.criteria.paths import path_metrics
from autosparse_jax.errors import ConfigError
from autosparse_jax.train_job import (density_reports, init_states, log, prune_states, run_training,
                                      seed_list, start_job, summarize)


def sparsity_list(config):
  values = list(config.get("sparsities", ()) or ()) or [float(config.sparsity)]
  for s in values:
    if not 0.0 < float(s) < 1.0:
      raise ConfigError(f"config.sparsities contains {s}: every sparsity must lie in (0, 1).")
  return [float(s) for s in values]


def mask_metrics(task, states):
  """NPB's effective paths / nodes / params of every seed's masks (float64)."""
  trainer = task.trainer

  def one(state):
    return path_metrics(state.params, state.masks,
                        criteria.ModelState(state.batch_stats, trainer.model, trainer.spec))

  with jax.enable_x64(True):
    out = task.program("path_metrics", lambda: jax.jit(jax.vmap(one)))(states)
    return {k: np.asarray(v).tolist() for k, v in out.items()}


def prune_and_train(config, workdir_path):
  if config.criterion == criteria.NO_PRUNING:
    raise ConfigError("config.criterion='none' does not prune: use configs/train.py for dense runs, "
                      f"or one of {', '.join(criteria.ALL_CRITERIA)}.")
  sparsities = sparsity_list(config)
  start = time.time()
  workdir, task = start_job(config, workdir_path)
  if task is None:
    return workdir.results()
  seeds = seed_list(config)
  runs = []
  for sparsity in sparsities:
    tag = f"{config.criterion}@{sparsity:g}"
    states = init_states(config, task.trainer)
    t = time.time()
    states, _ = jax.block_until_ready(prune_states(config, task, states, config.criterion, sparsity))
    scoring_seconds = time.time() - t
    reports = density_reports(states)
    paths = mask_metrics(task, states)
    for seed, report in zip(seeds, reports):
      if report["empty_layers"]:
        log(f"warning: {tag} seed {seed}: layers pruned to zero weights: "
            f"{', '.join(report['empty_layers'])}")
    log(f"{tag}: scored in {scoring_seconds:.1f} s (compilation included), density "
        f"{np.mean([r['density'] for r in reports]):.5f}, log10 paths {np.mean(paths['log10_paths']):.2f}")
    states, last = run_training(config, task, states, workdir, tag=tag)
    runs.append({
        "criterion": config.criterion, "sparsity": sparsity, "seeds": seeds,
        "test_accuracy": float(np.mean(last["test_accuracy"])),
        "test_accuracy_seeds": summarize(last["test_accuracy"]),
        "test_loss": float(np.mean(last["test_loss"])),
        "density": float(np.mean([r["density"] for r in reports])),
        "kept_per_seed": [r["kept"] for r in reports], "total": reports[0]["total"],
        "empty_layers": sorted({n for r in reports for n in r["empty_layers"]}),
        "layer_density": {n: float(np.mean([r["layers"][n]["density"] for r in reports]))
                          for n in reports[0]["layers"]},
        "scoring_seconds": scoring_seconds,
        **{k: v for k, v in paths.items()},
    })
  results = {"job": "prune", "model": config.model, "dataset": config.dataset,
             "criterion": config.criterion, "epochs": int(config.train.epochs),
             "grad_reduction": config.prune.grad_reduction, "runs": runs,
             "wall_seconds": time.time() - start}
  if len(runs) == 1:
    results.update({k: runs[0][k] for k in ("sparsity", "test_accuracy", "density", "scoring_seconds")})
  workdir.write_results(results)
  for run in runs:
    log(f"{run['criterion']} at sparsity {run['sparsity']:g}: test accuracy "
        f"{100 * run['test_accuracy']:.2f}% (+- {100 * run['test_accuracy_seeds']['std']:.2f}), "
        f"density {run['density']:.5f}")
  return results
