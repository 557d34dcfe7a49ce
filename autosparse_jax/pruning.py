"""The one way from a PruneSpec to masks: scores at the current masks -> exact top-k among the survivors.

Every job (prune, sweep, IRP) and the public API prune through here:

  prune_round(spec, ...)      one round: scores at the current masks -> exact top-k
                              among the survivors (nested masks), in spec's structure
  prune_network(spec, ...)    spec's rounds at init for one network (jittable criteria;
                              lax.scan over rounds): (masks, scores, finite)
  host_prune(spec, ...)       one network by a host criterion (one-shot)

What to prune and how is a PruneSpec (prune_spec.py), passed explicitly; its keep
counts come from spec.plan(masks) (an argument of the compiled programs, so every
density shares one program). `criteria/` only scores. Keys come from keys.py: round
r of a jittable criterion scores with keys.prune_key(k, r); a host criterion
(one-shot) gets the pruning stream keys.prune_stream(k) (the `autos` criterion
derives g_0's key from it, the same as the IRP's score datasets).

Layer budgets: every criterion honours `distribution`. NPB needs per-layer
budgets: with the default `global` it keeps ERK budgets (spec.distribution_used),
and with `layerwise` or `erk` it takes those.
"""

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import keys, masks as masks_lib
from autosparse_jax.criteria.base import ModelState
from autosparse_jax.errors import NumericalError


def structured_masks(spec, scores, masks, counts):
  """Top-k masks of `scores` for `counts` in spec's structure (exact counts, ties to the lower index); the
  layers structure_fallback='dense' leaves dense keep their masks (spec.dense_layers)."""
  pruned = spec.structured(masks)
  new = spec.structure.masks_from_counts(spec.group_reduce, scores, pruned, counts, spec.min_per_layer)
  if pruned is masks:
    return new
  return jax.tree.map(lambda n, p, m: m if jnp.ndim(p) < jnp.ndim(m) else n, new, pruned, masks)


def prune_round(spec, params, masks, model_state, data, key, counts, drop_zero_scores=False):
  """One round: score at `masks` with `key`, keep `counts` by exact top-k among the survivors.

  Returns (new masks, scores). drop_zero_scores: weights scoring exactly 0 go too
  (the original IRP code's behaviour; REFERENCE.md).
  """
  scores = spec.record.score(params, masks, model_state, data, key, spec.options)
  if spec.ablation == "invert":
    scores = inverted(scores)
  new = structured_masks(spec, scores, masks, counts)
  if drop_zero_scores and spec.structure.single_weights:  # Would break a structure's groups.
    new = jax.tree.map(lambda m, s: m & (s != 0) if m.ndim else m, new, scores)
  return new, scores


def finite_layers(scores, masks):
  """[per prunable layer: every score finite] (traceable)."""
  return [jnp.all(jnp.isfinite(s)) if jnp.issubdtype(jnp.asarray(s).dtype, jnp.floating) else jnp.asarray(True)
          for _, s in masks_lib.prunable_items(scores, masks)]


def check_finite(criterion, finite, masks, where=""):
  """NumericalError naming the layers whose scores held NaN or Inf (finite: from finite_layers)."""
  names = [name for name, _ in masks_lib.prunable_items(masks, masks)]
  bad = [name for name, ok in zip(names, finite) if not np.all(np.asarray(ok))]
  if bad:
    raise NumericalError(
        f"criterion {criterion!r} gave non-finite scores (NaN or Inf) in layer(s) {', '.join(bad)}"
        f"{' ' + where if where else ''}: nothing was pruned with them and no result was written. Check the "
        "criterion's options (e.g. config.prune.grasp_temperature) and the network (a diverged theta_0?).")


def prune_network(spec, params, masks, model_state, data, key, plan):
  """(masks, scores, finite) of one network pruned at init by a jittable criterion over plan's rounds
  (finite: [per prunable layer: scores finite in every round]).

  key: the network's key (keys.prune_key derives each round's). With R > 1
  rounds the returned scores rank weights by the round they were pruned in,
  then by their last score, so top-k of them at the final density gives the
  same masks (and other densities a consistent ranking).
  """
  rounds = plan.shape[0]
  if spec.record.revives:
    return _reviving_rounds(spec, params, masks, model_state, data, key, plan)
  if rounds == 1:
    new, scores = prune_round(spec, params, masks, model_state, data, keys.prune_key(key, 0), plan[0])
    return new, scores, finite_layers(scores, masks)

  def body(carry, xs):
    m, survived, finite = carry
    r, counts = xs
    new, scores = prune_round(spec, params, m, model_state, data, keys.prune_key(key, r), counts)
    finite = [a & b for a, b in zip(finite, finite_layers(scores, masks))]
    return (new, jax.tree.map(lambda s, k: s + k.astype(jnp.int32), survived, new), finite), None

  survived0 = jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.int32), masks)
  finite0 = [jnp.asarray(True)] * len(masks_lib.prunable_items(masks, masks))
  (m, survived, finite), _ = jax.lax.scan(body, (masks, survived0, finite0),
                                          (jnp.arange(rounds - 1), plan[:-1]))
  final, last = prune_round(spec, params, m, model_state, data, keys.prune_key(key, rounds - 1), plan[-1])
  finite = [a & b for a, b in zip(finite, finite_layers(last, masks))]
  return final, survival_ranks(last, m, survived), finite


def _reviving_rounds(spec, params, masks, model_state, data, key, plan):
  """FORCE's rounds: each keeps the top-k over every prunable weight (pruned ones may come back).

  Scores are taken at the previous round's masks; the last round's scores rank
  every weight, so their top-k at the final density is the final mask.
  """
  invert = spec.ablation == "invert"

  def round_scores(m, r):
    scores = spec.record.score(params, m, model_state, data, keys.prune_key(key, r), spec.options)
    return inverted(scores) if invert else scores

  def body(carry, xs):
    m, finite = carry
    r, counts = xs
    scores = round_scores(m, r)
    finite = [a & b for a, b in zip(finite, finite_layers(scores, masks))]
    return (structured_masks(spec, scores, masks, counts), finite), None

  rounds = plan.shape[0]
  finite0 = [jnp.asarray(True)] * len(masks_lib.prunable_items(masks, masks))
  (m, finite), _ = jax.lax.scan(body, (masks, finite0), (jnp.arange(rounds - 1), plan[:-1]))
  last = round_scores(m, rounds - 1)
  finite = [a & b for a, b in zip(finite, finite_layers(last, masks))]
  return structured_masks(spec, last, masks, plan[-1]), last, finite


def inverted(scores):
  """Scores whose top-k is the bottom-k of `scores` (ties still broken by the lower index)."""
  return jax.tree.map(lambda s: -s if jnp.issubdtype(jnp.asarray(s).dtype, jnp.floating)
                      else jnp.iinfo(jnp.asarray(s).dtype).max - s, scores)


def shuffled_layerwise(masks, key):
  """Each prunable layer's mask randomly permuted: every layer keeps its count (Frankle et al.)."""
  leaves, tree = jax.tree.flatten(masks)
  layer_keys = iter(jax.random.split(key, len(leaves)))
  out = []
  for m in leaves:
    k = next(layer_keys)
    out.append(jax.random.permutation(k, m.reshape(-1)).reshape(m.shape) if m.ndim > 0 else m)
  return jax.tree.unflatten(tree, out)


def survival_ranks(last, alive, survived):
  """Integer scores: rounds survived first, then the last round's keep order.

  score = (rounds survived) * n + position from the bottom of the last round's
  keep order over all n prunable weights: exact, so top-k at the final density
  reproduces the final masks.
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


def host_prune(spec, params, masks, model_state, data, key, counts, scores=None):
  """(masks, scores) of one network by a host criterion (one-shot); `scores` reuses earlier ones.

  A criterion with layer_budgets gets the per-layer keep `counts` as its budgets= argument.
  """
  criterion = spec.record
  if scores is None:  # Layer budgets are weights, whatever the structure's unit of counts.
    extra = {"budgets": np.asarray(spec.weight_counts(masks)).tolist()} if criterion.layer_budgets else {}
    scores = criterion.score(params, masks, model_state, data, keys.prune_stream(key), spec.options, **extra)
  ranked = inverted(scores) if spec.ablation == "invert" else scores
  return structured_masks(spec, ranked, masks, counts), scores


def ablated_state(trainer, state, masks, spec):
  """The pruned TrainState, after spec.ablation's change of masks or theta_0 (if any)."""
  ablation = spec.ablation
  params, batch_stats = state.params, state.batch_stats
  if ablation == "shuffle_layerwise":
    masks = shuffled_layerwise(masks, keys.ablation_key(state.key))
  elif ablation == "reinit":
    params, batch_stats = trainer.init_variables(keys.ablation_key(state.key))
  return trainer.create_state(state.key, params, batch_stats, masks)


def model_state(trainer, batch_stats):
  """What criteria see of a task's network: its float32 model, whatever config.dtype trains in.

  Scores rank weights against each other across layers: bf16's 8 bits of mantissa
  would tie and reorder them, so pruning (and g_0) is always computed in float32.
  """
  model = trainer.model
  if getattr(model, "dtype", jnp.float32) != jnp.float32:
    model = model.clone(dtype=jnp.float32)
  return ModelState(batch_stats, model, trainer.spec)
