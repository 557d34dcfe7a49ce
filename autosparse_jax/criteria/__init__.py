"""Pruning criteria: name -> score function.

Every criterion is a pure function
    score(params, masks, batch_stats, prune_data, key, cfg) -> scores
where scores has the params' tree structure (unprunable leaves are ignored) and
the LOWEST scores are pruned. `prune_data` is (images, labels) on device (data-free
criteria ignore it); `cfg` is the criterion's own config (config.prune).
"""
import jax
import jax.numpy as jnp

from autosparse_jax.errors import ConfigError, unknown_name_message


def random_scores(params, masks, batch_stats, prune_data, key, cfg):
  """I.i.d. uniform scores: the Random baseline."""
  del masks, batch_stats, prune_data, cfg
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [jax.random.uniform(k, p.shape) for k, p in zip(keys, leaves)])


def magnitude_scores(params, masks, batch_stats, prune_data, key, cfg):
  """|theta|: the Magnitude baseline (and LTH when iterated)."""
  del masks, batch_stats, prune_data, key, cfg
  return jax.tree.map(jnp.abs, params)


CRITERIA = {
    "random": random_scores,
    "magnitude": magnitude_scores,
}
NO_PRUNING = "none"


def get_criterion(name):
  if name not in CRITERIA:
    raise ConfigError(unknown_name_message("config.criterion", name, (NO_PRUNING,) + tuple(CRITERIA)))
  return CRITERIA[name]
