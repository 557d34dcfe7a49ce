"""NPB: the reduced programme against the full per-entry MILP, exact budgets, and masks vs random."""
import jax
import numpy as np
import pytest
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from autosparse_jax import masks as masks_lib
from autosparse_jax.criteria import npb
from autosparse_jax.criteria.base import ModelState
from autosparse_jax.criteria.paths import path_metrics
from autosparse_jax.data.specs import SPECS
from autosparse_jax.models import get_model


def full_milp_optimum(p, cols, budget, k, alpha, beta):
  """The authors' per-entry programme, one integer per kernel and binary z per kernel (reference)."""
  c_in = p.size
  n = c_in * cols
  max_path = npb.max_path_term(p, cols, budget, k)
  # Variables: M [c_in, cols] integer, z [c_in, cols] binary, u [c_in], v [cols].
  num = 2 * n + c_in + cols
  cost = np.concatenate([-(1 - alpha) * np.repeat(p, cols) / max_path, -beta / budget * np.ones(n),
                         -alpha / (c_in + cols) * np.ones(c_in + cols)])
  a = np.zeros((1 + n + c_in + cols, num))
  a[0, :n] = 1
  for e in range(n):  # z <= M
    a[1 + e, e], a[1 + e, n + e] = -1, 1
  for i in range(c_in):  # u_i <= p_i sum_j M_ij
    a[1 + n + i, i * cols:(i + 1) * cols] = -p[i]
    a[1 + n + i, 2 * n + i] = 1
  for j in range(cols):  # v_j <= sum_i p_i M_ij
    a[1 + n + c_in + j, np.arange(c_in) * cols + j] = -p
    a[1 + n + c_in + j, 2 * n + c_in + j] = 1
  lower = np.r_[budget, np.full(n + c_in + cols, -np.inf)]
  upper = np.r_[budget, np.zeros(n + c_in + cols)]
  result = milp(cost, constraints=LinearConstraint(sparse.csr_matrix(a), lower, upper),
                integrality=np.r_[np.ones(2 * n), np.zeros(c_in + cols)],
                bounds=Bounds(np.zeros(num), np.r_[np.full(n, k), np.ones(n + c_in + cols)]),
                options={"time_limit": 60})
  assert result.status == 0, result.message
  return -result.fun


@pytest.mark.parametrize("seed", range(6))
def test_reduced_programme_matches_the_full_per_entry_milp(seed):
  rng = np.random.default_rng(seed)
  c_in, cols = int(rng.integers(3, 7)), int(rng.integers(2, 5))
  k = int(rng.choice([1, 3]))
  # Path counts with ties (classes), some tiny, some zero: what deeper layers see.
  p = rng.choice([0.0, 0.05, 0.3, 0.3, 0.8, 1.0], size=c_in)
  p[0] = 1.0
  budget = int(rng.integers(1, c_in * cols * k))
  alpha, beta = float(rng.choice([0.01, 0.3])), float(rng.choice([0.0, 1.0]))
  counts = npb.solve_chunk(p, cols, budget, k, alpha, beta, time_limit=10, mip_gap=0)
  assert counts.sum() == budget and counts.min() >= 0 and counts.max() <= k
  ours = npb.chunk_objective(p, counts, budget, k, alpha, beta)
  best = full_milp_optimum(p, cols, budget, k, alpha, beta)
  assert ours == pytest.approx(best, rel=1e-6, abs=1e-9), (p, cols, budget, k, alpha, beta)


def _network(name, dataset, width, seed=0):
  spec = SPECS[dataset]
  model = get_model(name, spec.num_classes, width=width)
  variables = model.init(jax.random.PRNGKey(seed), np.ones((1,) + tuple(spec.image_shape), np.float32),
                         train=False)
  params = variables["params"]
  return params, masks_lib.init_masks(params), ModelState(variables.get("batch_stats", {}), model, spec)


def _random_like(masks, rng):
  """Random masks with exactly the layer densities of `masks`."""
  def one(m):
    m = np.asarray(m)
    if m.ndim == 0:
      return m
    flat = np.zeros(m.size, bool)
    flat[rng.permutation(m.size)[:int(m.sum())]] = True
    return flat.reshape(m.shape)
  return jax.tree.map(one, masks)


@pytest.mark.parametrize("name,dataset,width", [
    ("lenet_300_100", "mnist", 1.0),
    pytest.param("resnet18", "cifar10", 0.25, marks=pytest.mark.slow),  # Conv nets: CI's time budget.
    pytest.param("vgg16", "cifar10", 0.25, marks=pytest.mark.slow)])
def test_npb_keeps_erk_counts_and_beats_random_on_nodes_and_paths(name, dataset, width):
  params, masks, state = _network(name, dataset, width)
  density = 0.1
  new = npb.npb_masks(params, masks, state, masks_lib.keep_counts(masks, density, "erk"), npb.NpbSettings())
  kept = [int(np.sum(m)) for _, m in masks_lib.prunable_items(new, new)]
  assert kept == [int(c) for c in np.asarray(masks_lib.keep_counts(masks, density, "erk"))]
  with jax.enable_x64(True):
    ours = path_metrics(params, new, state)
    for seed in range(3):
      rand = path_metrics(params, _random_like(new, np.random.default_rng(seed)), state)
      assert float(ours["effective_nodes"]) >= float(rand["effective_nodes"])
      assert float(ours["effective_paths"]) > float(rand["effective_paths"])


def test_kept_entries_of_a_kernel_are_its_largest_magnitudes():
  params, masks, state = _network("resnet18", "cifar10", 0.125)
  new = npb.npb_masks(params, masks, state, masks_lib.keep_counts(masks, 0.05, "erk"), npb.NpbSettings())
  for (name, m), (_, theta) in zip(masks_lib.prunable_items(new, new), masks_lib.prunable_items(params, masks)):
    if m.ndim != 4:
      continue
    mags = np.abs(np.asarray(theta)).reshape(-1, *m.shape[2:])
    keep = np.asarray(m).reshape(-1, *m.shape[2:])
    smallest_kept = np.where(keep, mags, np.inf).min(axis=0)
    largest_dropped = np.where(keep, -np.inf, mags).max(axis=0)
    assert np.all(smallest_kept >= largest_dropped), name


def test_npb_scores_reproduce_its_masks_through_the_exact_top_k():
  params, masks, state = _network("lenet_300_100", "mnist", 0.5)
  options = npb.NpbOptions()
  budgets = np.asarray(masks_lib.keep_counts(masks, 0.05, "erk")).tolist()
  scores = npb.npb_scores(params, masks, state, None, None, options, budgets=budgets)
  direct = npb.npb_masks(params, masks, state, budgets, npb.NpbSettings.from_options(options))
  via_scores = masks_lib.masks_from_counts(scores, masks, np.asarray(budgets))
  for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(via_scores)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
