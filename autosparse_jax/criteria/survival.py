"""The `survival` criterion: the masks of an IRP run (LTH, SNIP-iter), replayed at init.

IRP's round-r mask is exactly the set of weights that survived more than r
rounds, so ranking by the survival count of an IRP run on the same theta_0
reproduces its masks at every round density exactly; densities between two
rounds keep every weight of the sparser round plus a random draw (from the
pruning key) of the next class. Trained from theta_0, these are the paper's
LTH / SNIP-iter rows (iterative pruning with rewinding to initialization).

config.survival.score_datasets: the IRP job's score_dataset_dir(s), one per seed;
the dataset whose theta_0 equals this network's is used, so seeds need not be
listed in order, and a network of another seed or model is refused.
"""
import dataclasses
from typing import Tuple

import jax
import numpy as np

from autosparse_jax import masks as masks_lib
from autosparse_jax.criteria.options import option
from autosparse_jax.programs import BoundedCache, directory_stamp
from autosparse_jax.errors import ConfigError
from autosparse_jax.score_dataset import check_score_dataset, load_score_dataset

@dataclasses.dataclass(frozen=True)
class SurvivalOptions:
  score_datasets: Tuple[str, ...] = option((), "the `survival` criterion's IRP score datasets",
                                           config="survival.score_datasets", jobs=("prune", "sweep"))


# (theta0 by layer, survival by layer, metadata) per dataset directory, reloaded if it changes.
_LOADED = BoundedCache(16, "score datasets")


def check_options(options, where="config.criterion", criterion="survival"):
  """Before any compute: the IRP score datasets are named and readable."""
  if not options.score_datasets:
    raise ConfigError(f"{where}={criterion!r} needs config.survival.score_datasets: the "
                      "score_dataset_dir(s) of an IRP job on the same model and seeds.")
  for directory in options.score_datasets:
    check_score_dataset(directory, "config.survival.score_datasets")


def _load(directory):
  def load():
    arrays, meta = load_score_dataset(directory)
    return [d["theta0"] for d in arrays["by_layer"]], [d["survival"] for d in arrays["by_layer"]], meta
  return _LOADED.get(directory_stamp(directory), load)


def matching_survival(directories, theta):
  """Survival counts (per layer) of the dataset whose theta_0 equals `theta`; clear error if none."""
  if not directories:
    raise ConfigError("config.survival.score_datasets is empty: pass the score_dataset_dir(s) of an "
                      "IRP job (configs/irp.py) run on the same model, dataset and seeds.")
  seen = []
  for directory in directories:
    theta0, survival, meta = _load(directory)
    if len(theta0) == len(theta) and all(
        a.shape == b.shape and np.array_equal(a, b) for a, b in zip(theta0, theta)):
      return survival
    seen.append(f"{meta.get('model')}/{meta.get('dataset')} seed {meta.get('seed')}")
  raise ConfigError(
      f"none of config.survival.score_datasets ({', '.join(seen)}) was made from this network's "
      "theta_0: run the IRP job with the same model, width, dataset and seeds (config.seed, "
      "config.num_seeds) as this job.")


def survival_scores(params, masks, model_state, prune_data, key, options):
  """Survival count + a uniform draw in [0, 0.5): exact IRP masks at round densities."""
  del model_state, prune_data
  directories = list(options.score_datasets)
  theta = [np.asarray(p) for _, p in masks_lib.prunable_items(params, masks)]
  survival = iter(matching_survival(directories, theta))
  tie_key = iter(jax.random.split(key, len(theta)))

  def score(m):
    if np.ndim(m) == 0:  # Unprunable leaf.
      return np.zeros((), np.float32)
    s = next(survival)
    # Ties broken within a survival class only: + [0, 0.5) stays below the next count in float32.
    return s.astype(np.float32) + 0.5 * np.asarray(jax.random.uniform(next(tie_key), s.shape))
  return jax.tree.map(score, masks)
