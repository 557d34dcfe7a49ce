"""The `autos` criterion: a trained AutoS scorer (config.autos.scorer_dir) scores every weight.

Features as in the score datasets the scorer learnt from: theta_0 and g_0, the
gradient on the pruning data accumulated as config.prune says (batches,
sum/mean); a scorer trained on g_0 of another reduction is refused. Runs on the
host side per seed: g_0 by one jitted gradient pass, then the sharded scorer
(autos/apply.py) over all devices.
"""
import jax
import numpy as np

from autosparse_jax import masks as masks_lib
from autosparse_jax.criteria.base import initial_gradient
from autosparse_jax.errors import ConfigError

_SCORERS = {}  # scorer_dir -> TrainedScorer, loaded once per process.


def check_features(scorer, config):
  """The features this job would compute must be the ones the scorer learnt from."""
  from autosparse_jax.autos.apply import FEATURES
  unknown = [f for f in scorer.features if f not in FEATURES]
  if unknown:
    raise ConfigError(f"the scorer in config.autos.scorer_dir={config.autos.scorer_dir!r} wants features "
                      f"{unknown} that this version cannot compute (known: {', '.join(FEATURES)}).")
  trained = scorer.info.get("g0_reduction")
  if "g0" in scorer.features and trained and trained != config.prune.grad_reduction:
    raise ConfigError(f"the scorer in config.autos.scorer_dir={config.autos.scorer_dir!r} learnt g_0 "
                      f"reduced by {trained!r} over batches, but config.prune.grad_reduction="
                      f"{config.prune.grad_reduction!r}: set --config.prune.grad_reduction={trained} so "
                      "the features match.")


def autos_scores(config, params, masks, model_state, prune_data, key, density):
  del density  # The scorer ranks weights; top-k picks the density.
  from autosparse_jax.autos.apply import feature_columns, load_scorer, score_features
  scorer_dir = config.autos.scorer_dir
  if scorer_dir not in _SCORERS:
    _SCORERS[scorer_dir] = load_scorer(scorer_dir)
  scorer = _SCORERS[scorer_dir]
  check_features(scorer, config)
  # Round 0's key, as IRP's g_0 (irp.prune_key): the same batches for the same seed.
  # Data and key are arguments, not closed over: no training set baked into the program.
  g0 = jax.jit(lambda p, m, s, d, k: initial_gradient(s, p, m, d, k, config.prune))(
      params, masks, model_state, prune_data, jax.random.fold_in(key, 0))
  items = masks_lib.prunable_items(params, masks)
  theta = [np.asarray(p) for _, p in items]
  grads = [np.asarray(g) for _, g in masks_lib.prunable_items(g0, masks)]
  x = feature_columns(scorer.features, theta, grads)
  flat = score_features(scorer, x, int(config.autos.batch_size), int(config.autos.chunk_weights),
                        config.autos.sharding)
  pieces = iter(np.split(flat, np.cumsum([t.size for t in theta])[:-1]))
  return jax.tree.map(lambda m: next(pieces).reshape(m.shape) if np.ndim(m) > 0 else np.zeros((), np.float32),
                      masks)
