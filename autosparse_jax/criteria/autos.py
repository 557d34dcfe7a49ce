"""The `autos` criterion: a trained AutoS scorer (config.autos.scorer_dir) scores every weight.

Features as in the score datasets the scorer learnt from: theta_0 and g_0, the
gradient on the pruning data accumulated as config.prune says (batches,
sum/mean); a scorer trained on g_0 of another reduction is refused. Runs on the
host side per seed: g_0 by one jitted gradient pass, then the sharded scorer
(autos/apply.py) over all devices.
"""
import dataclasses

import jax
import numpy as np

from autosparse_jax import keys, masks as masks_lib
from autosparse_jax.autos.apply import FEATURES, feature_columns, load_scorer, score_features
from autosparse_jax.criteria.base import initial_gradient
from autosparse_jax.criteria.options import DataOptions, data_options, option
from autosparse_jax.errors import ConfigError
from autosparse_jax.programs import BoundedCache, directory_stamp

_PRUNING_AT_INIT = ("prune", "sweep")


@dataclasses.dataclass(frozen=True)
class AutosOptions(DataOptions):
  """The trained scorer (config.autos) and the pruning data of its g_0 feature (config.prune)."""
  scorer_dir: str = option("", "the `autos` criterion's scorer (an autos_train job's scorer_dir)",
                           config="autos.scorer_dir", jobs=_PRUNING_AT_INIT)
  scorer_batch_size: int = option(4096, "AutoS scoring: weights per device batch", config="autos.batch_size",
                                  jobs=_PRUNING_AT_INIT, low=1)
  chunk_weights: int = option(1 << 22, "AutoS scoring: weights per host pass", config="autos.chunk_weights",
                              jobs=_PRUNING_AT_INIT, low=1)
  sharding: str = option("shard_map", "AutoS scoring over devices", config="autos.sharding",
                         jobs=_PRUNING_AT_INIT, choices=("shard_map", "pmap"))


_SCORERS = BoundedCache(8, "scorers")  # Keyed by directory_stamp: a rewritten scorer is reloaded.


def cached_scorer(scorer_dir):
  return _SCORERS.get(directory_stamp(scorer_dir), lambda: load_scorer(scorer_dir))


def check_features(scorer, scorer_dir, grad_reduction, field="config.autos.scorer_dir"):
  """The features this job would compute must be the ones the scorer learnt from."""
  unknown = [f for f in scorer.features if f not in FEATURES]
  if unknown:
    raise ConfigError(f"the scorer in {field}={scorer_dir!r} wants features "
                      f"{unknown} that this version cannot compute (known: {', '.join(FEATURES)}).")
  trained = scorer.info.get("g0_reduction")
  if "g0" in scorer.features and trained and trained != grad_reduction:
    raise ConfigError(f"the scorer in {field}={scorer_dir!r} learnt g_0 "
                      f"reduced by {trained!r} over batches, but config.prune.grad_reduction="
                      f"{grad_reduction!r}: set --config.prune.grad_reduction={trained} so "
                      "the features match.")


def check_options(options, where="config.criterion", criterion="autos"):
  """Before any compute: the scorer loads and wants the features this job computes."""
  check_features(cached_scorer(options.scorer_dir), options.scorer_dir, options.grad_reduction)


_G0_PROGRAMS = BoundedCache(8, "autos g_0 programs")


def _g0_program(data_options):
  """g_0's program for these pruning-data options (a hashable record), built once per process."""
  return _G0_PROGRAMS.get(data_options, lambda: jax.jit(lambda p, m, s, d, k: initial_gradient(s, p, m, d, k,
                                                                                               data_options)))


def autos_scores(params, masks, model_state, prune_data, key, options):
  """The scorer's prediction for every prunable weight (higher = survives longer)."""
  scorer_dir = options.scorer_dir
  scorer = cached_scorer(scorer_dir)
  check_features(scorer, scorer_dir, options.grad_reduction)
  # key is the pruning stream: round 0's key is keys.g0_key of this network, the key of
  # the IRP's g_0, so the same seed sees the same batches. Data and key are arguments,
  # not closed over: no training set baked into the program.
  g0 = _g0_program(data_options(options))(
      params, masks, model_state, prune_data, keys.round_key(key, 0))
  items = masks_lib.prunable_items(params, masks)
  theta = [np.asarray(p) for _, p in items]
  grads = [np.asarray(g) for _, g in masks_lib.prunable_items(g0, masks)]
  x = feature_columns(scorer.features, theta, grads)
  flat = score_features(scorer, x, int(options.scorer_batch_size), int(options.chunk_weights),
                        options.sharding)
  pieces = iter(np.split(flat, np.cumsum([t.size for t in theta])[:-1]))
  return jax.tree.map(lambda m: next(pieces).reshape(m.shape) if np.ndim(m) > 0 else np.zeros((), np.float32),
                      masks)
