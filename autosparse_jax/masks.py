"""Masks as pytrees beside params, and scores -> masks by exact top-k.

A mask pytree has exactly the tree structure of the params. A prunable leaf's
mask is a bool array of the param's shape; an unprunable leaf's mask is a 0-d
`True` (it broadcasts, so `apply_masks` treats every leaf alike). So "prunable"
means "mask leaf with ndim > 0". Functions here act on one network; vmap them
for a stacked (seed-axis) state.

Top-k keeps exactly k = round(density * n) weights: the highest scores, ties
broken by the lower flat index (the original code over-prunes ties).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_PRUNABLE = "default"  # default_prunable's rule (the jobs' config.prune.prunable and the API's).
DISTRIBUTIONS = ("global", "layerwise", "erk")

# The default rule, by name and shape: a leaf is prunable when its own name is a weight's name
# (linen / NNX `kernel`, equinox and PyTorch-style `weight`, Haiku `w`), it has ndim >= 2
# (a matrix, a DenseGeneral / attention projection or a conv kernel) and no component of its
# path names an embedding, a position embedding or a class token. So biases (of any ndim:
# equinox's Conv bias is (C, 1, 1), attention biases are (heads, dim)), norm scales, embedding
# tables, class tokens and position embeddings stay dense unless `prunable=` asks for them.
# A plain dict's `w1`, `W_2` count as weights too.
WEIGHT_NAMES = re.compile(r"(?i)^(kernel|weights?|w)(_?\d+)?$")  # kernel, weight, w, and w1, W_2, ... of a dict.
NOT_WEIGHTS = re.compile(r"(?i)(embed|^cls(_token)?$|class_token|^pos_|position)")  # Path components.
_WRAPPERS = ("value", "raw_value")  # NNX State leaves end in .value (a Variable's array).


def path_name(path):
  """'stage1_block1/conv1/kernel' for a tree_util key path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def default_prunable(name, leaf):
  """The default rule (see WEIGHT_NAMES): `name` is the leaf's path_name."""
  parts = name.split("/")
  while len(parts) > 1 and parts[-1] in _WRAPPERS:
    parts = parts[:-1]
  return (bool(WEIGHT_NAMES.match(parts[-1])) and jnp.ndim(leaf) >= 2
          and not any(NOT_WEIGHTS.search(p) for p in parts[:-1]))


def prunable_predicate(prunable, field="config.prune.prunable"):
  """(name, leaf) -> bool of `prunable`: 'default', a regex over leaf paths, or such a function."""
  if prunable is None or prunable == DEFAULT_PRUNABLE:
    return default_prunable
  if isinstance(prunable, str):
    try:
      pattern = re.compile(prunable)
    except re.error as e:
      raise ValueError(f"{field}={prunable!r} is not a valid regular expression ({e}).") from None
    return lambda name, leaf: bool(pattern.search(name))
  if callable(prunable):
    return prunable
  raise ValueError(f"{field}={prunable!r} must be 'default', a regex over leaf paths (e.g. r'kernel$') or a "
                   "function (path, leaf) -> bool.")


def init_masks(params, prunable=DEFAULT_PRUNABLE, field="config.prune.prunable"):
  """All-ones masks; the leaves `prunable` selects (prunable_predicate) get a mask of their shape."""
  predicate = prunable_predicate(prunable, field)

  def leaf_mask(path, p):
    if predicate(path_name(path), p):
      return jnp.ones(jnp.shape(p), jnp.bool_)
    return jnp.ones((), jnp.bool_)

  masks = jax.tree_util.tree_map_with_path(leaf_mask, params)
  if not any(m.ndim > 0 for m in jax.tree.leaves(masks)):
    names = [path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    raise ValueError(f"{field}={prunable!r} selects no parameter, so there is nothing to prune. "
                     f"Parameter names look like: {', '.join(names[:6])}.")
  return masks


def check_masks(params, masks, argument="masks=", params_argument="params="):
  """`masks` as bool masks of `params`, or a ValueError naming the first leaf that differs.

  The one check of every door that takes masks (asj.prune(masks=), apply_masks, masked, export,
  sparse_training): the tree structure of params; each leaf bool or 0/1 numbers (converted to
  bool), of its param's shape (prunable) or 0-d (not prunable). Values are checked where they
  are concrete (under jit only dtypes and shapes are known).
  """
  param_leaves = jax.tree_util.tree_leaves_with_path(params)
  mask_leaves = jax.tree_util.tree_leaves_with_path(masks)
  if jax.tree.structure(masks) != jax.tree.structure(params):
    ours, theirs = [path_name(p) for p, _ in param_leaves], [path_name(p) for p, _ in mask_leaves]
    first = next((f"{params_argument} has {a!r} where {argument} has {b!r}" for a, b in zip(ours, theirs) if a != b),
                 f"{params_argument} has {len(ours)} leaves, {argument} {len(theirs)}")
    raise ValueError(f"{argument} must have the tree structure of {params_argument} ({first}). Build it with "
                     "asj.init_masks(params) or take it from asj.prune(...) on the same params.")
  out = []
  for (path, p), (_, m) in zip(param_leaves, mask_leaves):
    name, shape, dtype = path_name(path), tuple(np.shape(m)), getattr(m, "dtype", None)
    if dtype is None:
      m = np.asarray(m)
      dtype = m.dtype
    if not (dtype == np.bool_ or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
      raise ValueError(f"{argument} leaf {name!r} has dtype {dtype}: a mask is bool (or 0/1 numbers).")
    if shape and shape != tuple(np.shape(p)):
      raise ValueError(f"{argument} leaf {name!r} has shape {shape} but {params_argument} leaf {name!r} has "
                       f"{tuple(np.shape(p))}: are the masks of another model? Each mask leaf has its param's shape "
                       "(prunable) or is a 0-d True (not prunable), as asj.init_masks(params) makes them.")
    if dtype != np.bool_:
      if not isinstance(m, jax.core.Tracer) and not np.all(np.isin(np.asarray(m), (0, 1))):
        raise ValueError(f"{argument} leaf {name!r} holds values other than 0 and 1: a mask is bool or 0/1.")
      m = m != 0
    out.append(m)
  return jax.tree.unflatten(jax.tree.structure(params), out)


def apply_masks(params, masks):
  """params with pruned entries set to exactly 0 (unprunable leaves unchanged)."""
  return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros((), p.dtype)), params, masks)


def prunable_items(tree, masks):
  """[(name, leaf)] of `tree` at the prunable positions of `masks`, in tree order."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  mask_leaves = jax.tree.leaves(masks)
  if len(leaves) != len(mask_leaves):
    raise ValueError(f"tree has {len(leaves)} leaves but masks have {len(mask_leaves)}: "
                     "scores and masks must have the tree structure of the params.")
  return [(path_name(p), x) for (p, x), m in zip(leaves, mask_leaves) if m.ndim > 0]


def density_report(masks):
  """Kept/total per prunable layer and overall, and the layers left empty (host numbers)."""
  layers = {}
  for name, m in prunable_items(masks, masks):
    kept = int(np.asarray(m).sum())
    layers[name] = {"kept": kept, "total": int(m.size), "density": kept / m.size}
  kept = sum(v["kept"] for v in layers.values())
  total = sum(v["total"] for v in layers.values())
  return {"kept": kept, "total": total, "density": kept / total, "layers": layers,
          "empty_layers": [n for n, v in layers.items() if v["kept"] == 0]}


def num_to_keep(density, n):
  """round(density * n) with halves rounded up, in float64 so n of 10^7 is exact."""
  if not 0.0 <= float(density) <= 1.0:
    raise ValueError(f"density={density} must lie in [0, 1] (density = 1 - sparsity).")
  return int(np.floor(np.float64(density) * np.float64(n) + 0.5))


def keep_order(scores, alive):
  """Flat indices in keep order: higher score first, ties by lower index, dead last.

  NaN counts as lowest. Float64 scores (SynFlow) are ranked in float64, integer
  scores (survival ranks) exactly.
  """
  s = jnp.asarray(scores)
  if jnp.issubdtype(s.dtype, jnp.floating):
    s = s + 0.0  # -0.0 + 0.0 == +0.0: one zero, not two.
    s = jnp.where(jnp.isnan(s) | ~alive, -jnp.inf, s)
  else:
    s = jnp.where(alive, s, jnp.iinfo(s.dtype).min)
  return jnp.argsort(s, stable=True, descending=True)


def topk_flat(scores, alive, k):
  """Bool vector keeping the k highest `scores` among `alive` entries (see keep_order).

  `k` may be traced (so sparsities can be vmapped). If fewer than k are alive,
  all alive entries are kept: pruned weights never come back.
  """
  order = keep_order(scores, alive)
  rank = jnp.zeros(order.shape, jnp.int32).at[order].set(jnp.arange(order.size, dtype=jnp.int32))
  return (rank < k) & alive


def erk_densities(shapes, density):
  """Erdos-Renyi-Kernel layer densities (Evci et al. 2020) whose weighted mean is `density`.

  Layer l gets min(1, eps * sum(shape_l) / prod(shape_l)); layers that would exceed 1
  are made dense and eps is solved again for the rest.
  """
  sizes = np.array([np.prod(s) for s in shapes], np.float64)
  raw = np.array([np.sum(s) / np.prod(s) for s in shapes], np.float64)
  target = density * sizes.sum()
  dense = np.zeros(len(shapes), bool)
  while True:
    budget = target - sizes[dense].sum()
    eps = budget / max(np.sum(raw[~dense] * sizes[~dense]), 1e-300)
    over = (~dense) & (eps * raw > 1.0)
    if not over.any():
      break
    dense |= over
  return np.where(dense, 1.0, np.clip(eps * raw, 0.0, 1.0))


def keep_counts(masks, density, distribution="global"):
  """How many weights to keep: an int (global) or one int per prunable layer.

  Per-layer counts add up to round(density * total) exactly (largest remainders).
  """
  shapes = [m.shape for _, m in prunable_items(masks, masks)]
  return keep_counts_for(shapes, np.array([int(np.prod(s)) for s in shapes]), density, distribution)


def keep_counts_for(shapes, sizes, density, distribution="global"):
  """keep_counts of layers of `shapes` counted in units of which layer l has sizes[l] (weights, or the
  groups of a structure: structure.py). ERK's layer densities come from the weights' shapes; the total
  is round(density * sum(sizes)) (global, layerwise) or round(sum(ERK density_l * sizes_l)) (ERK)."""
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"config.prune.distribution={distribution!r} is not known. "
                     f"Allowed: {', '.join(DISTRIBUTIONS)}.")
  sizes = np.asarray(sizes, np.int64)
  weights = np.array([int(np.prod(s)) for s in shapes])
  total = num_to_keep(density, sizes.sum())
  if distribution == "global":
    return total
  layer_density = (np.full(len(shapes), float(density)) if distribution == "layerwise"
                   else erk_densities(shapes, float(density)))
  exact = layer_density * sizes
  if distribution == "erk" and not np.array_equal(sizes, weights):  # Groups: ERK's own total of them.
    total = int(np.floor(exact.sum() + 0.5))
  counts = np.minimum(np.floor(exact).astype(np.int64), sizes)
  order = np.argsort(-(exact - counts), kind="stable")
  for i in order[: max(0, total - counts.sum())]:
    if counts[i] < sizes[i]:
      counts[i] += 1
  return counts


def masks_from_counts(scores, masks, counts, min_per_layer=0):
  """Top-k masks for `counts` from keep_counts (may be traced: a global int or [layers])."""
  items = prunable_items(scores, masks)
  current = [m for _, m in prunable_items(masks, masks)]
  for (name, s), m in zip(items, current):
    if s.shape != m.shape:
      raise ValueError(f"score for {name} has shape {s.shape}, the parameter has {m.shape}.")
  if jnp.ndim(counts) == 1:
    kept = [topk_flat(s.reshape(-1), m.reshape(-1), counts[i]).reshape(m.shape)
            for i, ((_, s), m) in enumerate(zip(items, current))]
  else:
    sizes = [m.size for m in current]
    dtype = jnp.result_type(*[s.dtype for _, s in items])
    flat_s = jnp.concatenate([s.reshape(-1).astype(dtype) for _, s in items])
    flat_m = jnp.concatenate([m.reshape(-1) for m in current])
    if min_per_layer:
      # Lift each layer's best `min_per_layer` alive weights above every other score.
      boost = [topk_flat(s.reshape(-1), m.reshape(-1), min_per_layer) for (_, s), m in zip(items, current)]
      flat_s = jnp.where(jnp.concatenate(boost), jnp.inf, flat_s)
    flat_keep = topk_flat(flat_s, flat_m, counts)
    pieces = jnp.split(flat_keep, np.cumsum(sizes)[:-1])
    kept = [piece.reshape(m.shape) for piece, m in zip(pieces, current)]
  it = iter(kept)
  return jax.tree.map(lambda m: next(it) if m.ndim > 0 else m, masks)


def scores_to_masks(scores, masks, density, distribution="global", min_per_layer=0):
  """New masks keeping `density` of all prunable weights by score.

  scores: pytree with the params' structure (unprunable leaves are ignored).
  masks: the current masks; already-pruned weights stay pruned (nested masks).
  distribution: "global" (one threshold over all layers), "layerwise" (the same
    density in each layer) or "erk" (Erdos-Renyi-Kernel layer densities).
  min_per_layer: keep at least this many weights per layer (guards against layer
    collapse; 0 = plain top-k, the default in the literature). Global only.
  """
  counts = keep_counts(masks, density, distribution)
  return masks_from_counts(scores, masks, counts, min_per_layer)
