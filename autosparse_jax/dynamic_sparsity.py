"""Masks that change while training: gradual magnitude pruning (GMP), SET and RigL.

    tx = asj.sparse_training(optax.adam(1e-3), masks, method="rigl", total_steps=T)
    opt_state = tx.init(params)
    ...
    grads = jax.grad(loss)(params, batch)      # params already masked: pruned weights are 0
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    asj.current_masks(opt_state)               # the masks in force

A method and its schedule are one frozen record (`Static`, `GMP`, `SET`, `RigL`; `schedule(method,
**fields)` builds one from keywords): every default is declared once, in the record. A record's
`resolve(total_steps)` turns `start_fraction` / `end_fraction` into steps and checks everything
that needs the run's length. The update functions below are pure and jittable; `sparse_training`
wraps them around any optax transformation. Nothing here reads a config.

Methods
  static  masks never change (`asj.masked`; the wrapper refuses it and points there).
  gmp     Zhu & Gupta's gradual pruning: at update step t the kept count follows
          s_t = s_f + (s_i - s_f)(1 - progress_t)^power (power 3), scores |w| (or any scores
          given). Kept weights are the top-k of the scores among the weights still kept (nested:
          a pruned weight never comes back). distribution='global' keeps the exact total,
          round((1 - s_t) n), and the per-layer counts move (as jaxpruner's global pruners);
          'layerwise' and 'erk' give each layer l its own schedule from its final sparsity
          s_l (the distribution's count at `sparsity`): s_l,t = s_l + (min(s_i, s_l) - s_l)(1 - p)^3.
  set     every update drops, in each layer, the k lowest-|w| kept weights and regrows k at
          random (Mocanu et al. 2018); each layer keeps its count exactly.
  rigl    the same, regrowing the k largest |dense gradient| (Evci et al. 2020).

Conventions (jaxpruner at commit f133ee50f31a03d0152b8b272edb534065152f5d unless said; the parity
test, tests/test_sparse_training.py, checks them against its own updaters' output):
  * Steps count optimizer updates from 0: the step of an update() call is how many update()
    calls came before it (jaxpruner's `count`).
  * Update steps: step % update_every_steps == 0 and start_step <= step <= end_step (jaxpruner's
    PeriodicSchedule; both ends included). With start_step=0 (SET/RigL's default, as RigL's own
    code) the first update is the very first call, before any optimizer step.
  * GMP's progress at step t is clip(t + 1 - start_step, 0, L) / L, L = end_step - start_step
    (jaxpruner's PolynomialSchedule; L = 0 is one-shot, progress 1). So the first update, at
    start_step, already prunes past initial_sparsity, and the target is reached at the first
    update step >= end_step - 1. Deviation from Zhu & Gupta's TF code, whose progress is
    (t - start)/L (s_i at the first update): we follow jaxpruner so the masks match at every step.
    An end_step that no update step reaches the target from is refused (see GMP).
  * Drop fraction at step t: constant, or cosine: f * 0.5 (1 + cos(pi min(t, end_step) / end_step))
    (RigL's paper; jaxpruner's optax.cosine_decay_schedule(f, end_step)), in float32.
  * Drop count: a layer with n kept weights keeps round(n (1 - f_t)) of them (halves up, float32)
    and drops the rest; jaxpruner computes the same from density * (1 - f) with jnp.round (halves to
    even) and keeps at least one: the counts differ only at exact halves or when fewer than one
    would stay.
  * Growth candidates: every position not kept after the drop, the just-dropped weights included
    (jaxpruner's convention). A just-dropped weight that wins regrowth simply stays: it keeps its
    value and its optimizer state (it was, net, not dropped). "Regrown" means kept now and pruned
    before the update; those start at exactly 0 with their optimizer state reset.
  * Ties: exact top-k, higher score first, ties to the lower flat index (masks.keep_order) for
    drop, growth and GMP: jaxpruner's top-k (a stable argsort) breaks ties the same way.
  * SET's random scores at step t: jax.random.uniform on the keys jax.random.split(
    jax.random.fold_in(key, t), number of param leaves), one per leaf in tree order (jaxpruner's
    generate_random_scores), so the same key gives jaxpruner's draws.
  * SET / RigL skip the optimizer step on an update step (RigL's and jaxpruner's skip_gradients):
    the inner transformation is not called, its state does not move, and the update only zeroes the
    dropped weights. GMP takes its optimizer step on update steps too, with the new masks (jaxpruner's
    pruners do not skip).
  * Optimizer state: every leaf of the inner state that is a subtree shaped like the params (SGD
    momentum, Adam's mu and nu, ...) is zeroed at the regrown positions; jaxpruner does the same for
    optax's TraceState and ScaleByAdamState only.
Deviations: jaxpruner's global magnitude pruner divides each layer's scores by their L2 norm by default
(use_normalization); ours ranks raw |w| (pass `scores=` / `score_fn=` to rank anything else).
Layerwise GMP rounds each layer to round(n_l (1 - s_t)) like jaxpruner; at the final step a layer's count
is masks.keep_counts' (largest remainders so the total is round(d n)), which can differ by one in a layer
whose own rounding is at a half. Unlike jaxpruner's wrap_optax, the mask update runs only on update steps
(lax.cond): non-update steps cost a masked optimizer step. Under jax.vmap with a per-example step the
condition is batched and lax.cond evaluates both branches: keep the step unbatched where it matters. The
starting masks are a constant of the transformation (tx.init puts them in the state), so per-seed masks
under vmap need one state per seed built from update_masks directly.
The parity fixtures (tests/reference/jaxpruner__*.npz, tests/reference/make_jaxpruner_fixtures.py) were
written by jaxpruner's own wrap_optax(adam) updaters at that commit under JAX 0.4.26 (the JAX of its
time; jax_threefry_partitionable on, as in the project's JAX): masks and params agree at every step.
Training FLOPs by RigL's accounting: static_training_flops, rigl_training_flops, gmp_forward_flops and
training_flops_total at the end of this module.
"""
import dataclasses
import math
from typing import Any, ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autosparse_jax import masks as masks_lib

METHODS = ("static", "gmp", "set", "rigl")
DROP_FRACTION_DECAYS = ("constant", "cosine")
GMP_SCORES = ("magnitude", "snip")


def _int_field(name, value, low, what):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{name}={value!r} must be an integer >= {low}: {what}.")


def _fraction_field(name, value):
  if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
    raise ValueError(f"{name}={value!r} must lie in [0, 1]: a fraction of the run's total steps.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Static:
  """Masks fixed while training (today's behaviour)."""
  method: ClassVar[str] = "static"

  def resolve(self, total_steps=None):
    del total_steps
    return self


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Periodic:
  """Fields every changing-mask method shares: when masks are updated.

  start_step / end_step, or instead start_fraction / end_fraction of the run's total steps
  (resolve(total_steps) turns fractions into steps, floor(fraction x total)); giving neither
  uses the record's DEFAULT_START_FRACTION / DEFAULT_END_FRACTION.
  """
  update_every_steps: int = 100
  start_step: Optional[int] = None
  end_step: Optional[int] = None
  start_fraction: Optional[float] = None
  end_fraction: Optional[float] = None
  DEFAULT_START_FRACTION: ClassVar[float] = 0.0
  DEFAULT_END_FRACTION: ClassVar[float] = 0.75  # RigL: stop updating masks at 75% of training.

  def __post_init__(self):
    _int_field("update_every_steps", self.update_every_steps, 1, "masks are updated every that many steps")
    for end in ("start", "end"):
      step, fraction = getattr(self, f"{end}_step"), getattr(self, f"{end}_fraction")
      if step is not None and fraction is not None:
        raise ValueError(f"{end}_step={step!r} and {end}_fraction={fraction!r} are both given: give one "
                         f"({end}_fraction is a fraction of the run's steps, {end}_step a step).")
      if step is not None:
        _int_field(f"{end}_step", step, 0, "an optimizer step, counted from 0")
      _fraction_field(f"{end}_fraction", fraction)
    if self.start_step is not None and self.end_step is not None and self.end_step < self.start_step:
      raise ValueError(f"end_step={self.end_step} is before start_step={self.start_step}: masks are updated "
                       "between them; give end_step >= start_step.")

  @property
  def resolved(self):
    return self.start_step is not None and self.end_step is not None

  def resolve(self, total_steps=None):
    """This record with start_step / end_step set (fractions of `total_steps` turned into steps),
    checked against the run's length. Raises ValueError naming the field and the fix."""
    if total_steps is not None:
      _int_field("total_steps", total_steps, 1, "the run's number of optimizer steps")
    steps = {}
    for end, default in (("start", self.DEFAULT_START_FRACTION), ("end", self.DEFAULT_END_FRACTION)):
      step, fraction = getattr(self, f"{end}_step"), getattr(self, f"{end}_fraction")
      if step is None:
        fraction = default if fraction is None else fraction
        if total_steps is None and fraction != 0.0:
          raise ValueError(f"{end}_step is not given, so it is {end}_fraction={fraction} of the run: give "
                           f"total_steps= (the run's number of optimizer steps) or {end}_step=.")
        step = 0 if fraction == 0.0 else int(math.floor(fraction * total_steps))
      steps[end] = step
    start, end = steps["start"], steps["end"]
    if end < start:
      raise ValueError(f"end_step={end} is before start_step={start} (after turning fractions into steps of a "
                       f"{total_steps}-step run): give end_step >= start_step.")
    if total_steps is not None and end > total_steps:
      raise ValueError(f"end_step={end} is beyond the run's {total_steps} steps: give end_step <= total_steps "
                       "(or end_fraction <= 1).")
    out = dataclasses.replace(self, start_step=start, end_step=end, start_fraction=None, end_fraction=None)
    return out._checked(from_fraction=self.end_step is None)

  def _checked(self, from_fraction):
    del from_fraction
    return self


@dataclasses.dataclass(frozen=True, kw_only=True)
class GMP(_Periodic):
  """Gradual magnitude pruning (Zhu & Gupta 2017) from initial_sparsity to `sparsity`.

  sparsity: the final sparsity (required). initial_sparsity: s_i of the cubic (0 = from dense;
  at most `sparsity`; the masks given must be at least this dense). distribution: global |
  layerwise | erk (module docstring). power: the polynomial's order (Zhu & Gupta: 3).
  Defaults: start at step 0, end at 75% of the run (RigL's end, so both are compared over the
  same horizon), every 100 steps. A given end_step must let an update step reach the target
  (end_step or end_step - 1 a multiple of update_every_steps, jaxpruner's progress); an end
  from end_fraction is moved down onto that grid instead.
  """
  method: ClassVar[str] = "gmp"
  sparsity: float
  initial_sparsity: float = 0.0
  distribution: str = "global"
  power: int = 3
  scores: str = "magnitude"  # What GMP ranks: magnitude |w| or snip |w g| (g: the step's batch gradient).

  def __post_init__(self):
    super().__post_init__()
    if not (isinstance(self.sparsity, (int, float)) and 0.0 <= self.sparsity < 1.0):
      raise ValueError(f"sparsity={self.sparsity!r} must lie in [0, 1): GMP's final sparsity.")
    if not (isinstance(self.initial_sparsity, (int, float)) and 0.0 <= self.initial_sparsity <= self.sparsity):
      raise ValueError(f"initial_sparsity={self.initial_sparsity!r} must lie in [0, sparsity={self.sparsity}]: "
                       "GMP only removes weights; lower initial_sparsity or raise sparsity.")
    if self.distribution not in masks_lib.DISTRIBUTIONS:
      raise ValueError(f"distribution={self.distribution!r} is not known. Allowed: "
                       f"{', '.join(masks_lib.DISTRIBUTIONS)}.")
    _int_field("power", self.power, 1, "the order of the polynomial schedule (Zhu & Gupta: 3)")
    if self.scores not in GMP_SCORES:
      raise ValueError(f"scores={self.scores!r} is not known. Allowed: {', '.join(GMP_SCORES)} (magnitude |w|; "
                       "snip |w g| with g the step's batch gradient).")

  def _checked(self, from_fraction):
    """An end_step no update step reaches the target from is refused (given) or moved down (a fraction)."""
    start, end, every = self.start_step, self.end_step, self.update_every_steps
    if end <= start or end % every in (0, 1 % every):
      return self
    lo, hi = end - end % every, end - end % every + every
    if not from_fraction:
      raise ValueError(f"end_step={end}: no update step reaches GMP's target (updates fall on multiples of "
                       f"update_every_steps={every}; the target is reached at an update step >= end_step - 1). "
                       f"Give end_step={lo if lo >= start else hi} or {hi}.")
    if lo < start:
      raise ValueError(f"end_fraction gives end_step={end}, and no multiple of update_every_steps={every} lies in "
                       f"[start_step={start}, {end}]: give end_step=, a longer run or a smaller update_every_steps.")
    return dataclasses.replace(self, end_step=lo)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SET(_Periodic):
  """Sparse evolutionary training (Mocanu et al. 2018): drop the lowest |w|, regrow at random.

  drop_fraction: the fraction of each layer's kept weights dropped and regrown at an update, in
  (0, 1) (RigL's 0.3); drop_fraction_decay: 'cosine' (to 0 at end_step, RigL) or 'constant'.
  Defaults: every 100 steps from step 0 to 75% of the run (RigL's paper).
  """
  method: ClassVar[str] = "set"
  drop_fraction: float = 0.3
  drop_fraction_decay: str = "cosine"

  def __post_init__(self):
    super().__post_init__()
    if not (isinstance(self.drop_fraction, (int, float)) and 0.0 < self.drop_fraction < 1.0):
      raise ValueError(f"drop_fraction={self.drop_fraction!r} must lie in (0, 1): the fraction of each layer's "
                       "kept weights dropped and regrown at an update (RigL: 0.3).")
    if self.drop_fraction_decay not in DROP_FRACTION_DECAYS:
      raise ValueError(f"drop_fraction_decay={self.drop_fraction_decay!r} is not known. Allowed: "
                       f"{', '.join(DROP_FRACTION_DECAYS)}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RigL(SET):
  """Rigging the lottery (Evci et al. 2020): drop the lowest |w|, regrow the largest |dense gradient|."""
  method: ClassVar[str] = "rigl"


RECORDS = {"static": Static, "gmp": GMP, "set": SET, "rigl": RigL}


def schedule(method="static", **fields):
  """The record of `method` (static | gmp | set | rigl) with `fields`; bad input raises ValueError."""
  if method not in RECORDS:
    raise ValueError(f"method={method!r} is not known. Allowed: {', '.join(METHODS)}.")
  record = RECORDS[method]
  known = [f.name for f in dataclasses.fields(record)]
  unknown = sorted(set(fields) - set(known))
  if unknown:
    raise ValueError(f"{', '.join(unknown)}: not a field of method={method!r}. "
                     f"Its fields: {', '.join(known) or 'none'}.")
  if record is GMP and "sparsity" not in fields:
    raise ValueError("method='gmp' needs sparsity= (its final sparsity, e.g. 0.9).")
  return record(**fields)


# The jobs' config.sparse_training: the records' fields, their defaults read from the records (declared
# there once); -1 stands for "not given" (ml_collections fields cannot hold None and keep a type).
NOT_GIVEN = -1
_GIVEN_OR_NOT = ("start_step", "end_step", "start_fraction", "end_fraction")


def config_defaults():
  """{field: default} of config.sparse_training: method, then every record's fields (GMP's final sparsity and
  distribution come from the job's config.sparsity and config.prune.distribution, not from here)."""
  out = {"method": "static"}
  for record in (SET, GMP):
    for field in dataclasses.fields(record):
      if field.name in ("sparsity", "distribution") or field.name in out:
        continue
      default = field.default
      out[field.name] = (NOT_GIVEN if "step" in field.name else float(NOT_GIVEN)) if default is None else default
  return out


def from_config_values(values, sparsity=None, distribution="global"):
  """The record of config.sparse_training's `values` (a dict); GMP takes `sparsity` and `distribution`."""
  method = values.get("method", "static")
  if method not in RECORDS:
    raise ValueError(f"method={method!r} is not known. Allowed: {', '.join(METHODS)}.")
  names = {f.name for f in dataclasses.fields(RECORDS[method])}
  fields = {k: v for k, v in values.items()
            if k in names and not (k in _GIVEN_OR_NOT and v == NOT_GIVEN)}
  if method == "gmp":
    fields.update(sparsity=float(sparsity), distribution=distribution)
  return schedule(method, **fields)


def _require_resolved(record):
  if isinstance(record, _Periodic) and not record.resolved:
    raise ValueError(f"{type(record).__name__} has no start_step / end_step yet: call "
                     "record.resolve(total_steps) first.")


# ---------------------------------------------------------------- schedule values (jittable)

def is_update_step(record, step):
  """Whether masks are updated at `step` (a bool array; traced steps welcome)."""
  if isinstance(record, Static):
    return jnp.asarray(False)
  _require_resolved(record)
  step = jnp.asarray(step)
  return (step % record.update_every_steps == 0) & (step >= record.start_step) & (step <= record.end_step)


def _progress(record, step):
  length = record.end_step - record.start_step
  if length == 0:
    return jnp.asarray(1.0, jnp.float32)
  return jnp.clip(jnp.asarray(step) + 1 - record.start_step, 0, length).astype(jnp.float32) / float(length)


def gmp_sparsity(record, step, final=None, initial=None):
  """GMP's scheduled sparsity at `step` (float32): s_f + (s_i - s_f)(1 - progress)^power, computed as
  s_i + (s_f - s_i)(1 - (1 - progress)^power) (jaxpruner's float32 value when s_i = 0).

  final / initial: a layer's own s_f and s_i (default: the record's sparsity and initial_sparsity).
  """
  _require_resolved(record)
  final = record.sparsity if final is None else final
  initial = record.initial_sparsity if initial is None else initial
  remaining = (1.0 - _progress(record, step)) ** record.power
  return jnp.float32(initial) + (jnp.float32(final) - jnp.float32(initial)) * (1.0 - remaining)


def drop_fraction(record, step):
  """SET / RigL's drop fraction at `step` (float32): constant, or cosine-decayed to 0 at end_step."""
  _require_resolved(record)
  f = jnp.asarray(record.drop_fraction, jnp.float32)
  if record.drop_fraction_decay == "constant":
    return f
  decay_steps = max(record.end_step, 1)
  t = jnp.minimum(jnp.asarray(step), decay_steps).astype(jnp.float32)
  return f * (0.5 * (1.0 + jnp.cos(jnp.pi * t / decay_steps)))


def update_steps(record):
  """The update steps of a resolved record, in order (host ints)."""
  if isinstance(record, Static):
    return np.zeros(0, np.int64)
  _require_resolved(record)
  every = record.update_every_steps
  first = -(-record.start_step // every) * every
  return np.arange(first, record.end_step + 1, every, dtype=np.int64)


def gmp_keep_counts(record, masks):
  """GMP's kept counts at each update step (host numbers, exact): [updates] (global) or [updates, layers].

  Row u is the count in force after the u-th update step (update_steps(record)[u]).
  """
  _require_resolved(record)
  shapes = [m.shape for _, m in masks_lib.prunable_items(masks, masks)]
  sizes = np.array([int(np.prod(s)) for s in shapes], np.int64)
  steps = update_steps(record)
  length = record.end_step - record.start_step
  progress = (np.ones(len(steps)) if length == 0
              else np.clip(steps + 1 - record.start_step, 0, length).astype(np.float64) / length)
  remaining = (1.0 - progress) ** record.power
  if record.distribution == "global":
    s = record.initial_sparsity + (record.sparsity - record.initial_sparsity) * (1.0 - remaining)
    return np.array([masks_lib.num_to_keep(min(1.0, 1.0 - x), sizes.sum()) for x in s], np.int64)
  final = np.asarray(masks_lib.keep_counts_for(shapes, sizes, 1.0 - record.sparsity, record.distribution))
  # Each layer's own final sparsity before rounding (layerwise: the same; ERK: its ERK density).
  s_final = 1.0 - (np.full(len(sizes), 1.0 - record.sparsity) if record.distribution == "layerwise"
                   else masks_lib.erk_densities(shapes, 1.0 - record.sparsity))
  s_init = np.minimum(record.initial_sparsity, s_final)
  rows = []
  for r in remaining:
    s = s_init + (s_final - s_init) * (1.0 - r)
    rows.append([final[l] if r == 0.0 else max(final[l], masks_lib.num_to_keep(min(1.0, max(0.0, 1.0 - s[l])),
                                                                                sizes[l]))
                 for l in range(len(sizes))])
  return np.array(rows, np.int64).reshape(len(steps), len(sizes))


# ---------------------------------------------------------------- mask updates (jittable)

def random_scores(params, key):
  """jaxpruner's generate_random_scores: uniform [0, 1) per leaf from split(key, number of leaves)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.uniform(k, jnp.shape(p), jnp.asarray(p).dtype)
                                      for k, p in zip(keys, leaves)])


def _per_layer(fn, masks, *trees):
  """Applies fn(mask, *leaves) -> new mask on the prunable leaves; others keep their 0-d True."""
  flat_masks, treedef = jax.tree.flatten(masks)
  flat = [treedef.flatten_up_to(t) for t in trees]
  out = [fn(m, *[f[i] for f in flat]) if m.ndim > 0 else m for i, m in enumerate(flat_masks)]
  return jax.tree.unflatten(treedef, out)


def drop_and_grow(mask, weight, grow_score, fraction):
  """One layer's SET / RigL update: (new mask, regrown) keeping the layer's count exactly.

  Keeps the round(n (1 - fraction)) largest |weight| of the n kept entries, then the n - that
  highest grow_score among every entry not kept after the drop (just-dropped ones included).
  """
  shape, m = mask.shape, mask.reshape(-1)
  kept = jnp.sum(m, dtype=jnp.int32)
  stay = jnp.floor(kept.astype(jnp.float32) * (1.0 - fraction) + 0.5).astype(jnp.int32)
  after_drop = masks_lib.topk_flat(jnp.abs(weight).reshape(-1), m, stay)
  grown = masks_lib.topk_flat(grow_score.reshape(-1), ~after_drop, kept - stay)
  new = (after_drop | grown).reshape(shape)
  return new, new & ~mask


def update_masks(record, params, masks, dense_grads=None, key=None, step=0, scores=None, grow_scores=None):
  """New masks of `record` at `step` (call it on update steps; jittable): (masks, regrown).

  params: the current params (pruned entries 0); dense_grads: the loss gradient at them, pruned
  entries included (RigL); key: SET's PRNG key (its draws: random_scores(params, fold_in(key, step)));
  scores: GMP's scores (default |params|); grow_scores: overrides SET / RigL's growth scores (a
  tree like params). regrown: True where a weight pruned before is kept now (all False for GMP).
  GMP under 'global' keeps the scheduled total, per-layer counts may move; SET / RigL keep every
  layer's count exactly.
  """
  _require_resolved(record)
  no_regrowth = jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.bool_), masks)
  if isinstance(record, Static):
    return masks, no_regrowth
  if isinstance(record, GMP):
    table = gmp_keep_counts(record, masks)
    if not len(table):  # No update step in the run.
      return masks, no_regrowth
    first = int(update_steps(record)[0])
    row = jnp.clip((jnp.asarray(step) - first) // record.update_every_steps, 0, len(table) - 1)
    counts = jnp.asarray(table, jnp.int32)[row]
    if scores is None:
      scores = jax.tree.map(jnp.abs, params)
    return masks_lib.masks_from_counts(scores, masks, counts), no_regrowth
  if grow_scores is None:
    if isinstance(record, RigL):
      if dense_grads is None:
        raise ValueError("RigL regrows by the dense gradient: pass dense_grads= (the loss gradient at the "
                         "masked params, pruned entries included).")
      grow_scores = jax.tree.map(jnp.abs, dense_grads)
    else:
      if key is None:
        raise ValueError("SET regrows at random: pass key= (a PRNG key).")
      grow_scores = random_scores(params, jax.random.fold_in(key, step))
  fraction = drop_fraction(record, step)
  both = _per_layer(lambda m, w, g: jnp.stack(drop_and_grow(m, w, g, fraction)), masks, params, grow_scores)
  new = jax.tree.map(lambda b, m: b[0] if m.ndim > 0 else m, both, masks)
  regrown = jax.tree.map(lambda b, m: b[1] if m.ndim > 0 else jnp.zeros((), jnp.bool_), both, masks)
  return new, regrown


def reset_opt_state(opt_state, params, regrown):
  """opt_state with every subtree shaped like `params` (momentum, Adam's mu and nu) zeroed where `regrown`."""
  treedef = jax.tree.structure(params)
  shapes = [jnp.shape(p) for p in jax.tree.leaves(params)]

  def like_params(x):
    if x is None or isinstance(x, (jax.Array, np.ndarray)) and treedef.num_nodes > 1:
      return False
    try:
      if jax.tree.structure(x) != treedef:
        return False
    except Exception:  # pylint: disable=broad-except
      return False
    return [jnp.shape(l) for l in jax.tree.leaves(x)] == shapes

  def reset(x):
    if not like_params(x):
      return x
    return jax.tree.map(lambda a, r: jnp.where(r, jnp.zeros((), a.dtype), a), x, regrown)

  return jax.tree.map(reset, opt_state, is_leaf=like_params)


# ---------------------------------------------------------------- the optax wrapper

class SparseTrainingState(NamedTuple):
  """sparse_training's state: the inner transformation's, the masks in force, the step, SET's key."""
  inner_state: Any
  masks: Any
  step: jax.Array
  key: Any


def sparse_training(tx, masks, method="rigl", *, total_steps=None, key=None, score_fn=None, **schedule_fields):
  """`tx` (any optax GradientTransformation) training sparse with masks that change on schedule.

  masks: the starting masks (a tree like the params: asj.prune's, asj.init_masks' for GMP from
  dense); method: gmp | set | rigl (static: use asj.masked); schedule_fields: the method's record
  fields (update_every_steps, start_step / start_fraction, end_step / end_fraction, drop_fraction,
  drop_fraction_decay; GMP: sparsity, initial_sparsity, distribution, power); total_steps: the
  run's optimizer steps (needed when an end or start is a fraction, the default); key: SET's PRNG
  key (default PRNGKey(0)); score_fn(params, grads) -> scores: GMP's scores (default |params|).

  Call update(grads, state, params) with the params (required) already masked (pruned weights 0,
  e.g. params = asj.apply_masks(params, masks) before training) and grads the loss's gradient at
  them: if the loss does not mask, the gradient of a pruned weight is the dense gradient RigL needs.
  After every update, params + updates are exactly 0 at pruned positions. On a SET / RigL update
  step the masks change, the inner optimizer step is skipped (its state is not advanced) and the
  update only zeroes the dropped weights; regrown ones are 0 with their optimizer state reset. On
  other steps (and on GMP's update steps, with the new masks) it is asj.masked: gradients masked
  before tx, updates after. current_masks(state) gives the masks in force.
  """
  if method == "static":
    raise ValueError("method='static' keeps the masks fixed: use asj.masked(tx, masks) for static masks.")
  record = schedule(method, **schedule_fields).resolve(total_steps)
  masks = jax.tree.map(jnp.asarray, masks_lib.check_masks(masks, masks))  # bool, or a named error.
  if isinstance(record, GMP):
    _check_gmp_start(record, masks)
  if key is None:
    key = jax.random.PRNGKey(0)

  def init(params):
    masks_lib.check_masks(params, masks)  # Masks of another model: named before any compute.
    return SparseTrainingState(tx.init(params), masks, jnp.zeros((), jnp.int32),
                               key if record.method == "set" else None)

  def masked_step(grads, inner_state, params, m):
    g = jax.tree.map(lambda x, k: jnp.where(k, x, jnp.zeros((), x.dtype)), grads, m)
    updates, inner_state = tx.update(g, inner_state, params)
    updates = jax.tree.map(lambda u, k, p: jnp.where(k, u, -jnp.asarray(p, u.dtype)), updates, m, params)
    return updates, inner_state

  # The branches are built once (not per call) and take their inputs as operands: eager calls then reuse
  # lax.cond's traced and compiled branches instead of compiling them again at every step.
  def gmp_masks(grads, state, params):
    if score_fn is not None:
      scores = score_fn(params, grads)
    else:
      scores = jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads) if record.scores == "snip" else None
    return update_masks(record, params, state.masks, grads, step=state.step, scores=scores)[0]

  def keep_masks(grads, state, params):
    del grads, params
    return state.masks

  def otherwise(grads, state, params):
    updates, inner_state = masked_step(grads, state.inner_state, params, state.masks)
    return updates, state.masks, inner_state

  def on_update(grads, state, params):
    shapes = jax.eval_shape(otherwise, grads, state, params)[0]
    new, regrown = update_masks(record, params, state.masks, grads, state.key, state.step)
    stays = jax.tree.map(lambda a, b: a & b, new, state.masks)
    updates = jax.tree.map(lambda k, p, s: jnp.where(k, jnp.zeros((), s.dtype), -jnp.asarray(p, s.dtype)),
                           stays, params, shapes)
    return updates, new, reset_opt_state(state.inner_state, params, regrown)

  def update(grads, state, params=None):
    if params is None:
      raise ValueError("sparse_training needs the params: call update(grads, state, params).")
    up = is_update_step(record, state.step)
    if isinstance(record, GMP):
      m = jax.lax.cond(up, gmp_masks, keep_masks, grads, state, params)
      updates, inner_state = masked_step(grads, state.inner_state, params, m)
    else:
      updates, m, inner_state = jax.lax.cond(up, on_update, otherwise, grads, state, params)
    return updates, SparseTrainingState(inner_state, m, state.step + 1, state.key)

  return optax.GradientTransformation(init, update)


def _check_gmp_start(record, masks):
  """The starting masks must be at least as dense as GMP's first update keeps."""
  table = gmp_keep_counts(record, masks)
  if not len(table):
    return
  kept = np.array([int(np.asarray(m).sum()) for _, m in masks_lib.prunable_items(masks, masks)])
  have = kept.sum() if table.ndim == 1 else kept
  need = table[0]
  if np.any(have < need):
    raise ValueError(f"the masks given keep {int(kept.sum())} of "
                     f"{sum(int(np.asarray(m).size) for _, m in masks_lib.prunable_items(masks, masks))} "
                     f"weights, fewer than GMP's first update keeps ({int(np.sum(need))}, from "
                     f"initial_sparsity={record.initial_sparsity}): GMP only removes weights; start from denser "
                     "masks (asj.init_masks(params) for dense) or raise initial_sparsity.")


def current_masks(opt_state):
  """The masks in force in a sparse_training state (found inside optax.chain's tuples too)."""
  found = _find(opt_state)
  if found is None:
    raise ValueError("no sparse_training state found in opt_state: pass the state of asj.sparse_training(...) "
                     "(or of an optax.chain holding it).")
  return found.masks


def _find(state):
  if isinstance(state, SparseTrainingState):
    return state
  if isinstance(state, (tuple, list)):
    for s in state:
      found = _find(s)
      if found is not None:
        return found
  return None


# ---------------------------------------------------------------- training FLOPs (RigL's accounting)
# Per example: a forward pass costs f, its backward 2f (input gradients f, weight gradients f), so a
# sparse step costs 3 f_S. A RigL update step needs the dense weight gradient: f_S forward, f_S input
# gradients, f_D weight gradients (Evci et al. 2020, appendix H). SET's random growth and every mask
# update's top-k are not counted (RigL's convention). f_S / f_D: forward FLOPs per example of the
# sparse / dense network (asj.cost's inference_flops / inference_flops_dense at batch 1).

def static_training_flops(f_sparse, batch=1):
  """FLOPs of one static sparse training step (SET's too): 3 f_S per example."""
  return 3.0 * f_sparse * batch


def rigl_training_flops(f_sparse, f_dense, update_every_steps, batch=1):
  """RigL's amortised FLOPs per step: (3 f_S dT + 2 f_S + f_D) / (dT + 1) per example (dT = update_every_steps)."""
  dt = float(update_every_steps)
  return (3.0 * f_sparse * dt + 2.0 * f_sparse + f_dense) / (dt + 1.0) * batch


def gmp_forward_flops(record, masks, f_dense, layer_macs, total_steps):
  """GMP's forward FLOPs per example at every step [total_steps]: f_D - 2 sum_l macs_l (1 - d_l(t)).

  masks: the starting masks (their counts hold until the first update); layer_macs: each prunable
  layer's dense multiply-adds per example, in tree order (sparse_cost.masked_macs' "layers" macs);
  d_l(t): the layer's density in force during step t (set by the updates of steps < t: an update
  step's own forward and backward run with the masks before it). Under 'global' the per-layer counts
  are only known in training: every layer is taken at the overall density (exact when every weight
  takes part in as many multiply-adds; pass per-step FLOPs measured in training to
  training_flops_total otherwise).
  """
  record = record.resolve(total_steps) if not record.resolved else record
  sizes = np.array([int(np.prod(m.shape)) for _, m in masks_lib.prunable_items(masks, masks)], np.float64)
  macs = np.asarray(layer_macs, np.float64)
  if macs.shape != sizes.shape:
    raise ValueError(f"layer_macs has {macs.size} entries, the masks {sizes.size} prunable layers.")
  table = gmp_keep_counts(record, masks).astype(np.float64)
  if table.ndim == 1:
    table = table[:, None] * np.ones_like(sizes) / sizes.sum() * sizes
  counts = np.vstack([layer_counts_of(masks)[None, :], table])
  in_force = np.searchsorted(update_steps(record), np.arange(total_steps), side="left")  # Updates before t.
  removed = macs * (sizes - counts[in_force]) / sizes  # Multiply-adds the pruned weights take.
  return f_dense - 2.0 * removed.sum(axis=1)


def layer_counts_of(masks):
  """Kept weights of each prunable layer, in tree order (host ints)."""
  return np.array([int(np.asarray(m).sum()) for _, m in masks_lib.prunable_items(masks, masks)], np.float64)


def training_flops_total(record, total_steps, f_sparse=None, f_dense=None, batch=1, forward_flops=None):
  """The FLOPs of a whole run of `total_steps` steps at `batch`, by RigL's accounting.

  static / set: 3 f_S per step; rigl: 2 f_S + f_D on each of its update steps, 3 f_S on the others;
  gmp: 3 f(t) summed over the steps, f(t) = forward_flops (per step, e.g. gmp_forward_flops').
  """
  if isinstance(record, GMP) or forward_flops is not None:
    if forward_flops is None:
      raise ValueError("GMP's total needs forward_flops= (per step: gmp_forward_flops(record, masks, ...)).")
    f = np.asarray(forward_flops, np.float64)
    if f.shape != (total_steps,):
      raise ValueError(f"forward_flops has shape {f.shape}, not ({total_steps},): one value per step.")
    return 3.0 * float(f.sum()) * batch
  if isinstance(record, RigL):
    record = record.resolve(total_steps) if not record.resolved else record
    updates = int(np.sum(update_steps(record) < total_steps))
    return ((total_steps - updates) * 3.0 * f_sparse + updates * (2.0 * f_sparse + f_dense)) * batch
  return static_training_flops(f_sparse, batch) * total_steps
