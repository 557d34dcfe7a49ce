"""Pruning criteria: a registry by name, and the one loop that turns scores into masks.

Every criterion is a pure function
    score(params, masks, model_state, prune_data, key, cfg) -> scores
(see criteria/base.py); scores have the params' tree structure and the LOWEST
are pruned. `prune(...)` runs R rounds of score -> top-k at the round's density
(R = 1: one-shot; SynFlow's 100 rounds and SNIP-it share this loop).
"""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import masks as masks_lib
from autosparse_jax.criteria.base import ModelState, PruneData
from autosparse_jax.criteria.autos import autos_scores
from autosparse_jax.criteria.npb import npb_scores
from autosparse_jax.criteria.saliency import grasp_scores, snip_scores
from autosparse_jax.criteria.survival import survival_scores
from autosparse_jax.criteria.synflow import synflow_scores
from autosparse_jax.errors import ConfigError, unknown_name_message

def random_scores(params, masks, model_state, prune_data, key, cfg):
  """I.i.d. uniform scores: the Random baseline."""
  del masks, model_state, prune_data, cfg
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [jax.random.uniform(k, p.shape) for k, p in zip(keys, leaves)])

def magnitude_scores(params, masks, model_state, prune_data, key, cfg):
  """|theta|: the Magnitude baseline (and LTH when iterated with training)."""
  del masks, model_state, prune_data, key, cfg
  return jax.tree.map(jnp.abs, params)

CRITERIA = {
    "random": random_scores,
    "magnitude": magnitude_scores,
    "snip": snip_scores,
    "grasp": grasp_scores,
    "synflow": synflow_scores,
}
NEEDS_X64 = {"synflow"}
# Criteria that run on the host, one seed at a time, outside jit (NPB's integer
# programmes, AutoS's sharded scorer): they see the whole job config and the
# target density: score(config, params, masks, model_state, prune_data, key, density).
# `survival` replays an IRP run's masks (LTH, SNIP-iter) from its score dataset.
HOST_CRITERIA = {"npb": npb_scores, "autos": autos_scores, "survival": survival_scores}
# Host criteria whose scores do not depend on the target density (scored once per sweep).
DENSITY_FREE = {"autos", "survival"}
DEFAULT_ROUNDS = {"synflow": 100}  # Others are one-shot unless config.prune.rounds says so.
SCHEDULES = ("exponential", "linear")
NO_PRUNING = "none"

ALL_CRITERIA = tuple(CRITERIA) + tuple(HOST_CRITERIA)

def get_criterion(name, field="config.criterion"):
  if name not in CRITERIA and name not in HOST_CRITERIA:
    raise ConfigError(unknown_name_message(field, name, (NO_PRUNING,) + ALL_CRITERIA))
  return CRITERIA.get(name) or HOST_CRITERIA[name]

def num_rounds(name, cfg):
  return int(cfg.get("rounds", 0)) or DEFAULT_ROUNDS.get(name, 1)

def round_densities(final_density, rounds, schedule):
  """Density after each round: exponential d^(r/R) (SynFlow) or linear in the pruned count."""
  r = np.arange(1, rounds + 1) / rounds
  if schedule == "exponential":
    return final_density ** r
  if schedule == "linear":
    return 1.0 - (1.0 - final_density) * r
  raise ConfigError(unknown_name_message("config.prune.round_schedule", schedule, SCHEDULES))

def precision_scope(name):
  """Context to trace and run criterion `name` in (float64 for SynFlow)."""
  return jax.enable_x64(True) if name in NEEDS_X64 else contextlib.nullcontext()

def prune_plan(name, masks, cfg, density):
  """Keep counts of every round, [rounds] or [rounds, layers] (host numbers, from shapes only).

  Passed to `prune` as an argument, one compiled pruner serves every density.
  """
  dist = cfg.get("distribution", "global")
  return np.stack([np.asarray(masks_lib.keep_counts(masks, d, dist)) for d in round_densities(
      float(density), num_rounds(name, cfg), cfg.get("round_schedule", "exponential"))])


def prune(name, params, masks, model_state, prune_data, key, cfg, density=None, plan=None):
  """(masks at `density`, scores) by criterion `name`; call inside precision_scope(name).

  `plan` (from prune_plan; may be traced) replaces `density`. With R > 1
  rounds, the returned scores rank weights by the round they were pruned in,
  then by their last score, so top-k of them at `density` gives the same masks
  (and other densities get a consistent ranking).
  """
  score_fn = get_criterion(name)
  rounds = num_rounds(name, cfg)
  if plan is None:
    plan = prune_plan(name, masks, cfg, density)
  min_per_layer = int(cfg.get("min_per_layer", 0))
  score_at = lambda m, r: score_fn(params, m, model_state, prune_data, jax.random.fold_in(key, r), cfg)
  if rounds == 1:
    scores = score_at(masks, 0)
    return masks_lib.masks_from_counts(scores, masks, plan[0], min_per_layer), scores

  def body(carry, xs):
    m, survived = carry
    r, counts = xs
    m = masks_lib.masks_from_counts(score_at(m, r), m, counts, min_per_layer)
    return (m, jax.tree.map(lambda s, k: s + k.astype(jnp.int32), survived, m)), None

  survived0 = jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.int32), masks)
  (m, survived), _ = jax.lax.scan(body, (masks, survived0),
                                  (jnp.arange(rounds - 1), plan[:-1]))
  last = score_at(m, rounds - 1)
  final = masks_lib.masks_from_counts(last, m, plan[-1], min_per_layer)

  return final, survival_ranks(last, m, survived)

def survival_ranks(last, alive, survived):
  """Integer scores: rounds survived first, then the last round's keep order.

  score = (rounds survived) * n + position from the bottom of the last round's
  keep order over all n prunable weights: exact, so top-k at the final density
  reproduces the final masks, and other densities get a consistent ranking.
  """
  alive_items = [m for _, m in masks_lib.prunable_items(alive, alive)]
  flat = jnp.concatenate([s.reshape(-1) for _, s in masks_lib.prunable_items(last, alive)])
  flat_alive = jnp.concatenate([m.reshape(-1) for m in alive_items])
  flat_surv = jnp.concatenate([v.reshape(-1) for _, v in masks_lib.prunable_items(survived, alive)])
  n = flat.size
  dtype = jnp.int64 if jax.config.x64_enabled else jnp.int32
  order = masks_lib.keep_order(flat, flat_alive)
  from_bottom = jnp.zeros(n, dtype).at[order].set(jnp.arange(n - 1, -1, -1, dtype=dtype))
  composite = (flat_surv.astype(dtype) + flat_alive.astype(dtype)) * n + from_bottom
  pieces = iter(jnp.split(composite, np.cumsum([m.size for m in alive_items])[:-1]))
  return jax.tree.map(lambda m: next(pieces).reshape(m.shape) if m.ndim > 0 else jnp.zeros((), dtype),
                      alive)

__all__ = ["ALL_CRITERIA", "CRITERIA", "HOST_CRITERIA", "ModelState", "PruneData", "get_criterion", "prune",
           "prune_plan", "precision_scope"]
