"""The one way from (criterion, target density, distribution, rounds, schedule) to masks.

Every job (train, prune, sweep, IRP) and the public API prune through here:

  schedule(final, rounds, kind)      densities after each round (IRP rounds and R-round
                                     pruning at init share it)
  keep_plan(masks, densities, dist)  exact keep counts per round: global (one int) or per
                                     layer (layerwise / ERK), from shapes only
  prune_round(spec, ...)             one round: scores at the current masks -> exact top-k
                                     among the survivors (nested masks)
  prune_network(spec, ...)           R rounds at init for one network (jittable criteria;
                                     lax.scan over rounds), or one host call (host criteria)
  prune_states(config, task, ...)    every seed of a stacked TrainState, vmapped and jitted
                                     once per task and spec (host criteria: one seed at a time)

What to prune and how is a PruneSpec (prune_spec.py), passed explicitly: the criterion,
its typed options record, the distribution, rounds, schedule and ablation.

`criteria/` only scores. Keys come from keys.py: round r of a jittable
criterion scores with keys.prune_key(k, r); a host criterion (one-shot) gets
the pruning stream keys.prune_stream(k) (the `autos` criterion derives g_0's
key from it, the same as the IRP's score datasets).

Layer budgets: every criterion honours `distribution`. NPB needs per-layer
budgets: with the default `global` it keeps ERK budgets (results say
"distribution_used": "erk"), and with `layerwise` or `erk` it takes those.
"""

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import criteria, keys, masks as masks_lib, prune_spec as prune_spec_lib, programs
from autosparse_jax import structure as structure_lib
from autosparse_jax.criteria.autos import cached_scorer, check_features
from autosparse_jax.criteria.base import ModelState, PruneData
from autosparse_jax.distributed import to_host
from autosparse_jax.errors import ConfigError, NumericalError, unknown_name_message
from autosparse_jax.score_dataset import check_score_dataset

NO_PRUNING = "none"  # config.criterion of a dense run (tables label those rows report.DENSE).
# Density after round r of R: exponential d^(r/R) (SynFlow; IRP's "geometric") or linear in
# the pruned count (IRP's "count", the original's equal number per round).
SCHEDULES = prune_spec_lib.ROUND_SCHEDULES
SCHEDULE_ALIASES = {"geometric": "exponential", "count": "linear"}
IRP_SCHEDULES = ("count", "geometric")  # config.irp.schedule's names (the original code's).
# config.prune.ablation: Frankle et al. (ICLR 2021)'s sanity checks of a criterion. Does its gain
# lie in the layer densities it picks or in the weights?
#   shuffle_layerwise  each layer's mask randomly permuted: same layer densities, random weights
#   reinit             the same masks on a theta_0 drawn from another key (keys.reinit_key)
#   invert             the HIGHEST scores are pruned instead of the lowest
ABLATIONS = prune_spec_lib.ABLATIONS


def check_sparsity(value, field, allow_zero=False):
  """A sparsity in (0, 1) ([0, 1) with allow_zero) or a ConfigError naming `field`."""
  try:
    s = float(value)
  except (TypeError, ValueError):
    raise ConfigError(f"{field}={value!r} must be a number in (0, 1) (the fraction of prunable "
                      "weights removed; 0.9 keeps 10%).") from None
  low_ok = s >= 0.0 if allow_zero else s > 0.0
  if not (low_ok and s < 1.0):
    interval = "[0, 1)" if allow_zero else "(0, 1)"
    raise ConfigError(f"{field}={value} must lie in {interval} (the fraction of prunable weights "
                      "removed; 0.9 keeps 10%).")
  return s


def schedule(final_density, rounds, kind, field="config.prune.round_schedule", names=SCHEDULES):
  """Density after each of `rounds` rounds, ending exactly at `final_density`.

  kind: a name of SCHEDULES or its IRP alias; `names` are the ones an error lists for `field`.
  """
  name = SCHEDULE_ALIASES.get(kind, kind)
  if name not in SCHEDULES:
    raise ConfigError(unknown_name_message(field, kind, names))
  i = np.arange(1, int(rounds) + 1)
  if name == "exponential":
    return float(final_density) ** (i / int(rounds))
  return 1.0 - (1.0 - float(final_density)) * i / int(rounds)


def keep_plan(masks, densities, distribution="global"):
  """Keep counts of every round: [rounds] (global) or [rounds, layers] (host numbers)."""
  return np.stack([np.asarray(masks_lib.keep_counts(masks, float(d), distribution)) for d in densities])


def distribution_used(criterion, distribution):
  """The layer distribution a criterion prunes with: NPB turns `global` into its ERK budgets."""
  if criteria.get(criterion).layer_budgets and distribution == "global":
    return "erk"
  return distribution


def init_plan(spec, masks):
  """The keep counts of spec's rounds at init down to spec.density ([R] or [R, layers]), in the
  unit of spec's structure (weights; groups; N:M's weights per group)."""
  densities = schedule(spec.density, spec.num_rounds, spec.schedule)
  return structure_lib.keep_plan(spec.parsed_structure, masks, densities,
                                 distribution_used(spec.criterion, spec.distribution))


def structured_masks(spec, scores, masks, counts):
  """Top-k masks of `scores` for `counts` in spec's structure (exact counts, ties to the lower index)."""
  return structure_lib.masks_from_counts(spec.parsed_structure, spec.group_reduce, scores, masks, counts,
                                         spec.min_per_layer)


def prune_round(spec, params, masks, model_state, data, key, counts, drop_zero_scores=False):
  """One round: score at `masks` with `key`, keep `counts` by exact top-k among the survivors.

  Returns (new masks, scores). drop_zero_scores: weights scoring exactly 0 go too
  (the original IRP code's behaviour; REFERENCE.md).
  """
  scores = criteria.get(spec.criterion).score(params, masks, model_state, data, key, spec.options)
  if spec.ablation == "invert":
    scores = inverted(scores)
  new = structured_masks(spec, scores, masks, counts)
  if drop_zero_scores and spec.structure == structure_lib.UNSTRUCTURED:  # Would break a structure's groups.
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


def prune_network(spec, params, masks, model_state, data, key, plan, with_finite=False):
  """See below; with_finite=True also returns [per prunable layer: scores finite in every round]."""
  out = _prune_network(spec, params, masks, model_state, data, key, plan)
  return out if with_finite else out[:2]


def _prune_network(spec, params, masks, model_state, data, key, plan):
  """(masks, scores) of one network pruned at init by a jittable criterion over plan's rounds.

  key: the network's key (keys.prune_key derives each round's). With R > 1
  rounds the returned scores rank weights by the round they were pruned in,
  then by their last score, so top-k of them at the final density gives the
  same masks (and other densities a consistent ranking).
  """
  rounds = plan.shape[0]
  if criteria.get(spec.criterion).revives:
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
    scores = criteria.get(spec.criterion).score(params, m, model_state, data, keys.prune_key(key, r),
                                                spec.options)
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
  criterion = criteria.get(spec.criterion)
  if scores is None:
    budgets = counts
    if criterion.layer_budgets and spec.structure != structure_lib.UNSTRUCTURED:  # Its budgets are weights.
      budgets = masks_lib.keep_counts(masks, spec.density, distribution_used(spec.criterion, spec.distribution))
    extra = {"budgets": np.asarray(budgets).tolist()} if criterion.layer_budgets else {}
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


def prune_states(config, task, states, criterion, sparsity, score_cache=None):
  """Every seed's network of stacked `states` pruned by `criterion` to `sparsity` at init.

  Returns (states with the new masks, scores). Criteria see the network in eval
  mode and the whole training set as pruning data (config.prune says how much
  of it they use). Jittable criteria run as one jit(vmap) program per task and
  criterion options (keep counts are an argument: every sparsity shares it);
  host criteria run one seed at a time. score_cache (a dict) keeps the scores of
  density-free host criteria for the next sparsity of the same states.
  """
  spec = prune_spec_lib.from_config(config, criterion, sparsity)
  one_seed = jax.tree.map(lambda m: m[0], states.masks)
  plan = init_plan(spec, one_seed)
  trainer = task.trainer
  if not criteria.get(criterion).jittable:
    return _host_prune_states(task, states, spec, plan, score_cache)

  def prune_one(state, images, labels, plan):
    masks, scores, finite = prune_network(spec, state.params, state.masks, model_state(trainer, state.batch_stats),
                                          PruneData(images, labels), state.key, plan, with_finite=True)
    return ablated_state(trainer, state, masks, spec), scores, finite

  key = programs.program_key("prune_states", spec=spec, criterion=criteria.get(criterion))
  program = task.program(key, lambda: jax.jit(jax.vmap(prune_one, in_axes=(0, None, None, None))))
  with criteria.precision_scope(criterion):
    pruned, scores, finite = program(states, task.train_images, task.train_labels, plan)
  check_finite(criterion, to_host(finite), one_seed)
  return pruned, scores


def _host_prune_states(task, states, spec, plan, score_cache):
  criterion = spec.criterion
  trainer = task.trainer
  data = PruneData(task.train_images, task.train_labels)
  cacheable = score_cache is not None and criteria.get(criterion).density_free
  if trainer.layout is not None:  # Per-seed host work: every process needs every seed.
    states = jax.device_put(states, trainer.layout.replicated)
  pruned, all_scores = [], []
  for i in range(jax.tree.leaves(states.params)[0].shape[0]):
    state = jax.tree.map(lambda x, i=i: x[i], states)
    cached = score_cache.get(i) if cacheable else None
    masks, scores = host_prune(spec, state.params, state.masks, model_state(trainer, state.batch_stats), data,
                               state.key, plan[-1], scores=cached)
    check_finite(criterion, finite_layers(scores, state.masks), state.masks, f"(seed index {i})")
    if cacheable:
      score_cache[i] = scores
    pruned.append(ablated_state(trainer, state, masks, spec))
    all_scores.append(scores)
  stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
  return stack(pruned), stack(all_scores)


def validate_criterion(config, criterion, where="config.criterion"):
  """`criterion` and the inputs it needs (scorer, IRP datasets, rounds, layer budgets), before compute."""
  spec = criteria.get(criterion, where)
  if criterion == "autos":  # Clear errors now, not after loading the data.
    scorer_dir = config.autos.scorer_dir
    check_features(cached_scorer(scorer_dir), scorer_dir, config.prune.grad_reduction)
  if criterion == "survival":
    if not config.survival.score_datasets:
      raise ConfigError(f"{where}='survival' needs config.survival.score_datasets: the "
                        "score_dataset_dir(s) of an IRP job on the same model and seeds.")
    for directory in config.survival.score_datasets:
      check_score_dataset(directory, "config.survival.score_datasets")
  ablation = config.prune.get("ablation", "none")
  if ablation not in ABLATIONS:
    raise ConfigError(unknown_name_message("config.prune.ablation", ablation, ABLATIONS))
  if not spec.jittable and int(config.prune.rounds) > 1:
    raise ConfigError(f"config.prune.rounds={config.prune.rounds} is not supported by "
                      f"{where}={criterion!r} (one-shot only): set it to 0.")
