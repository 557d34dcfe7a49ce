"""NPB: node-path balancing (Pham et al., NeurIPS 2023), an integer programme per layer.

Layer budgets are given (the `budgets` argument: exact per-layer counts from pruning.py: ERK
when config.prune.distribution is `global`, else that distribution's counts). Then,
layer by layer in forward order, on the all-ones network of the masks chosen so
far (BN an identity), P_i = paths reaching input channel i (summed over space),
normalised by its maximum. For a chunk of C output channels and an input of
C_in channels, the integer M_ij in {0..max_p} is how many entries of kernel
(i, j) to keep (max_p = kh*kw by default; 1 for Dense), and we maximise the
authors' objective

    alpha   * (eff_in + eff_out) / (C_in + C)             effective nodes
  + (1 - alpha) * sum_ij P_i M_ij / max_path              effective paths
  + beta    * (number of kernels with M_ij >= 1) / n      kernel regulariser

with eff_in = sum_i min(P_i sum_j M_ij, 1), eff_out = sum_j min(sum_i P_i M_ij, 1),
n = the chunk's budget and max_path = the largest path term any n entries can
reach. Dense layers use beta = 0, as the authors do. The authors use
sum M <= n; we ask for sum M == n so every layer keeps exactly its ERK count.

Solver: the authors hand the per-entry programme to cvxpy; as a MILP over
C_in x C integers it is highly symmetric and HiGHS could not close it (a
first version of ours took 316 s on LeNet-300-100 with time-outs and poor
masks). But all output channels of a chunk, and all inputs with equal P_i,
are interchangeable, and every per-row term is concave in the row total, so an
even spread inside a symmetry class is optimal. The programme therefore
reduces, without loss for the path, in-node and kernel terms, to one integer
R_g (entries kept from inputs of class g) per class, solved exactly by HiGHS
through scipy.optimize.milp (scipy's bundled solver; cvxpy would dispatch a
MILP to the same one). The counts are then spread evenly over a class's rows
and round-robin over the output channels; the out-node term is modelled by
its bound min(C, sum_ij P_i M_ij), which that spread reaches up to rounding.
tests/test_npb.py checks the result against the full per-entry MILP on small
chunks. Chunks of output channels (authors: 100 for Dense layers with
C_in*C_out > 5120, 32 for convs with C_in*C_out > 16384) keep the authors'
normalisation; the layer budget is split over them by largest remainders.
Inside kernel (i, j) the M_ij entries of largest |theta_0| are kept (the
authors' default, magnitude_based_mask=True).

NPB runs on the host (numpy + scipy), one seed at a time, outside jit. Its
scores are 1 + |theta|/max|theta| on the kept weights and 0 elsewhere, so the
exact top-k at the same density reproduces its masks.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from autosparse_jax import masks as masks_lib
from autosparse_jax.criteria.options import option
from autosparse_jax.criteria.paths import neutral_network
from autosparse_jax.masks import path_name


_PRUNING_AT_INIT = ("prune", "sweep")  # The jobs that read NPB's options (not IRP's rounds).


@dataclasses.dataclass(frozen=True)
class NpbOptions:
  """config.prune.npb_*: the authors' ResNet-20/CIFAR-10 settings (beta 2, max_p 6 on Tiny-ImageNet)."""
  npb_alpha: float = option(0.01, "NPB: node vs path weight", low=0.0, high=1.0, jobs=_PRUNING_AT_INIT)
  npb_beta: float = option(1.0, "NPB: kernel regulariser", low=0.0, jobs=_PRUNING_AT_INIT)
  npb_max_p: int = option(0, "NPB: entries kept per kernel (0 = whole kernel)", low=0, jobs=_PRUNING_AT_INIT)
  npb_dense_chunk: int = option(100, "NPB: output units per Dense programme", low=1, jobs=_PRUNING_AT_INIT)
  npb_conv_chunk: int = option(32, "NPB: output channels per conv programme", low=1, jobs=_PRUNING_AT_INIT)
  npb_time_limit: float = option(60.0, "NPB: seconds per integer programme", low=0.0, low_open=True,
                                 jobs=_PRUNING_AT_INIT)
  npb_mip_gap: float = option(1e-6, "NPB: relative optimality gap", low=0.0, high=1.0, jobs=_PRUNING_AT_INIT)


@dataclasses.dataclass(frozen=True)
class NpbSettings:
  """NpbOptions without their prefix, as the solver reads them."""
  alpha: float = NpbOptions.npb_alpha
  beta: float = NpbOptions.npb_beta
  max_p: int = NpbOptions.npb_max_p
  dense_chunk: int = NpbOptions.npb_dense_chunk
  conv_chunk: int = NpbOptions.npb_conv_chunk
  time_limit: float = NpbOptions.npb_time_limit
  mip_gap: float = NpbOptions.npb_mip_gap

  @classmethod
  def from_options(cls, options):
    return cls(alpha=float(options.npb_alpha), beta=float(options.npb_beta), max_p=int(options.npb_max_p),
               dense_chunk=int(options.npb_dense_chunk), conv_chunk=int(options.npb_conv_chunk),
               time_limit=float(options.npb_time_limit), mip_gap=float(options.npb_mip_gap))


def channel_paths(params, masks, model_state):
  """{kernel name: paths into each input channel} on the all-ones network of `masks`."""
  with jax.enable_x64(True):
    weights, state = neutral_network(params, masks, model_state)
    captured = {}

    def interceptor(next_fun, args, kwargs, context):
      module = context.module
      if isinstance(module, (nn.Dense, nn.Conv)) and context.method_name == "__call__":
        x = args[0]
        captured["/".join(module.path) + "/kernel"] = jnp.sum(
            x.reshape(-1, x.shape[-1]).astype(jnp.float64), axis=0)
      return next_fun(*args, **kwargs)

    ones = jnp.ones((1,) + tuple(model_state.spec.image_shape), jnp.float64)
    with nn.intercept_methods(interceptor):
      state.logits(weights, ones, dtype=jnp.float64)
    return {k: np.asarray(v) for k, v in captured.items()}


def max_path_term(p, cols, budget, k):
  """Largest sum_ij p_i M_ij over M in {0..k}, sum M = budget: fill the best inputs first."""
  per_input = cols * k
  best = np.sort(p)[::-1]
  full, rest = divmod(budget, per_input)
  value = best[:full].sum() * per_input
  if rest and full < best.size:
    value += rest * best[full]
  return max(float(value), 1e-12)


def chunk_objective(p, counts, budget, k, alpha, beta):
  """The authors' objective of counts M [C_in, C] (used to check solutions)."""
  c_in, cols = counts.shape
  row = p * counts.sum(axis=1)
  col = p @ counts
  nodes = (np.minimum(row, 1).sum() + np.minimum(col, 1).sum()) / (c_in + cols)
  paths = float(p @ counts.sum(axis=1)) / max_path_term(p, cols, budget, k)
  kernels = np.count_nonzero(counts) / budget
  return alpha * nodes + (1 - alpha) * paths + beta * kernels


def solve_classes(p_class, sizes, cols, budget, k, alpha, beta, time_limit, mip_gap):
  """Entries R_g per class of equal-path inputs: the MILP on symmetry classes.

  Inputs with equal P_i (and all output channels of a chunk) are interchangeable
  and every per-row term is concave in the row total, so spreading a class's
  R_g entries evenly over its rows and kernels is optimal: the per-entry
  programme reduces to one integer R_g per class, with the in-node term of a
  class modelled exactly by the upper envelope of its even spread.
  """
  g = p_class.size
  t = np.where(p_class > 0, np.ceil(1.0 / np.maximum(p_class, 1e-300) - 1e-9), 1)
  # Variables: R [g] (integer), U [g] in-nodes, Z [g] kernels, V out-nodes.
  num = 3 * g + 1
  cost = np.zeros(num)
  cost[:g] = -(1 - alpha) * p_class / max_path_term(np.repeat(p_class, sizes), cols, budget, k)
  cost[g:2 * g] = -alpha / (sizes.sum() + cols)
  cost[2 * g:3 * g] = -beta / budget
  cost[-1] = -alpha / (sizes.sum() + cols)
  eye = np.eye(g)
  rows = [np.concatenate([np.ones(g), np.zeros(2 * g + 1)])[None]]
  lower, upper = [budget], [budget]
  # U_g <= p_g R_g and, for the partly covered rows, U_g <= s(t-1)p + (1-p(t-1))(R - (t-1)s).
  last_slope = 1 - p_class * (t - 1)
  for slope, offset in ((p_class, 0 * sizes), (last_slope, sizes * (t - 1) * (p_class - last_slope))):
    rows.append(np.hstack([-np.diag(slope), eye, np.zeros((g, g + 1))]))
    lower.append(np.full(g, -np.inf)); upper.append(offset)
  rows.append(np.hstack([-eye, np.zeros((g, g)), eye, np.zeros((g, 1))]))  # Z_g <= R_g
  lower.append(np.full(g, -np.inf)); upper.append(np.zeros(g))
  rows.append(np.concatenate([-p_class, np.zeros(2 * g), [1.0]])[None])  # V <= sum p_g R_g
  lower.append([-np.inf]); upper.append([0.0])
  bounds = Bounds(np.zeros(num), np.concatenate([k * sizes * cols, sizes, sizes * cols, [cols]]))
  constraint = LinearConstraint(np.vstack(rows), np.concatenate([np.atleast_1d(x) for x in lower]),
                                np.concatenate([np.atleast_1d(x) for x in upper]))
  result = milp(cost, constraints=constraint, integrality=np.r_[np.ones(g), np.zeros(2 * g + 1)],
                bounds=bounds, options={"time_limit": time_limit, "mip_rel_gap": mip_gap, "disp": False})
  if result.x is None:
    raise RuntimeError(f"NPB: HiGHS found no allocation ({result.message}) for a chunk of {cols} "
                       f"output channels with budget {budget}.")
  return np.round(result.x[:g]).astype(np.int64)


def spread(p, class_of, class_totals, cols, k):
  """Counts M [C_in, cols] from class totals: even over a class's rows, round-robin over columns."""
  c_in = p.size
  row_totals = np.zeros(c_in, np.int64)
  for g, total in enumerate(class_totals):
    members = np.flatnonzero(class_of == g)
    base, extra = divmod(int(total), members.size)
    row_totals[members] = base + (np.arange(members.size) < extra)
  counts = np.zeros((c_in, cols), np.int64)
  cursor = 0
  for i in np.argsort(-p, kind="stable"):  # Highest-path rows first, so columns share them.
    r = int(row_totals[i])
    if r == 0:
      continue
    kernels = min(r, cols)
    per, extra = divmod(r, kernels)
    columns = (cursor + np.arange(kernels)) % cols
    counts[i, columns] = per + (np.arange(kernels) < extra)
    cursor = (cursor + kernels) % cols
  assert counts.max() <= k
  return counts


def solve_chunk(p, cols, budget, k, alpha, beta, time_limit, mip_gap):
  """Counts M [C_in, cols] maximising the authors' objective for one chunk."""
  c_in = p.size
  if budget <= 0:
    return np.zeros((c_in, cols), np.int64)
  if budget >= c_in * cols * k:
    return np.full((c_in, cols), k, np.int64)
  p_class, class_of, sizes = np.unique(np.round(p, 12), return_inverse=True, return_counts=True)
  totals = solve_classes(p_class, sizes, cols, budget, k, alpha, beta, time_limit, mip_gap)
  return spread(p, class_of, totals, cols, k)


def split_budget(budget, sizes):
  """Integers proportional to `sizes` that add up to `budget` (largest remainders)."""
  exact = budget * np.asarray(sizes, np.float64) / np.sum(sizes)
  share = np.floor(exact).astype(np.int64)
  share[np.argsort(-(exact - share), kind="stable")[:budget - share.sum()]] += 1
  return share


def layer_mask(theta, p, budget, settings):
  """NPB mask of one kernel [..., C_in, C_out] keeping exactly `budget` entries."""
  shape = theta.shape
  is_conv = len(shape) > 2
  kernel = int(np.prod(shape[:-2])) if is_conv else 1
  k = min(settings.max_p, kernel) if settings.max_p > 0 else kernel
  c_in, c_out = shape[-2], shape[-1]
  budget = min(budget, c_in * c_out * k)  # max_p caps what a layer can keep.
  chunk = settings.conv_chunk if is_conv else settings.dense_chunk
  chunk = chunk if c_in * c_out > (128 * 128 if is_conv else 512 * 10) else c_out
  starts = list(range(0, c_out, chunk))
  sizes = [min(chunk, c_out - s) for s in starts]
  counts = np.zeros((c_in, c_out), np.int64)
  solved = {}
  for start, size, share in zip(starts, sizes, split_budget(budget, sizes)):
    key = (size, int(share))
    if key not in solved:  # Chunks of one layer share P: equal (size, budget) give equal answers.
      solved[key] = solve_chunk(p, size, int(share), k, settings.alpha,
                                settings.beta if is_conv else 0.0, settings.time_limit, settings.mip_gap)
    counts[:, start:start + size] = solved[key]
  # Keep the counts[i, j] largest-|theta| entries of kernel (i, j).
  flat = np.abs(np.asarray(theta, np.float64)).reshape(kernel, c_in, c_out)
  rank = np.argsort(np.argsort(-flat, axis=0, kind="stable"), axis=0, kind="stable")
  return (rank < counts[None]).reshape(shape)


def npb_masks(params, masks, model_state, budgets, settings):
  """NPB masks of one network keeping budgets[l] weights of prunable layer l (numpy leaves)."""
  items = masks_lib.prunable_items(params, masks)
  budgets = np.asarray(budgets).reshape(-1)
  if budgets.size != len(items):
    raise ValueError(f"NPB needs one budget per prunable layer ({len(items)}), got {budgets.size}.")
  budgets = {name: int(c) for (name, _), c in zip(items, budgets)}
  theta = {name: np.asarray(p) for name, p in items}
  current = jax.tree.map(lambda m: np.asarray(m).copy(), masks)
  order = [name for name in channel_paths(params, current, model_state) if name in budgets]
  if set(order) != set(budgets):
    missing = sorted(set(budgets) - set(order))
    raise ValueError(f"NPB saw no Flax Dense/Conv call for the prunable layer(s) {', '.join(missing[:4])}: it "
                     "counts paths through flax.linen modules whose paths match the params' (a linen model's "
                     "apply); other networks cannot use it.")
  for name in order:  # Forward order: each layer sees the paths of the masks before it.
    paths = channel_paths(params, current, model_state)[name]
    p = paths / paths.max() if paths.max() > 0 else np.zeros_like(paths)
    layer = layer_mask(theta[name], p, budgets[name], settings)
    current = jax.tree_util.tree_map_with_path(
        lambda path, m, layer=layer, name=name: layer if path_name(path) == name else m, current)
  return current


def npb_scores(params, masks, model_state, prune_data, key, options, budgets):
  """Host scores of NPB for the per-layer keep counts `budgets` (pruning.py passes them: the
  criterion has layer_budgets): top-k with those counts gives exactly its masks."""
  del prune_data, key  # Data-free and deterministic.
  new = npb_masks(params, masks, model_state, budgets, NpbSettings.from_options(options))
  top = max(float(np.max(np.abs(np.asarray(p)))) for _, p in masks_lib.prunable_items(params, masks))
  scores = jax.tree.map(
      lambda m, p: (np.where(m, 1.0 + np.abs(np.asarray(p)) / top, 0.0).astype(np.float32)
                    if np.ndim(m) > 0 else np.zeros((), np.float32)), new, params)
  return scores
