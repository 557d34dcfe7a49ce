"""Masks: exact top-k with deterministic ties, layer-wise, nesting, reports."""
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from autosparse_jax import masks as masks_lib


def tree(shapes, values=None):
  return {f"layer{i}": {"kernel": jnp.asarray(values[i]) if values else jnp.ones(s),
                        "bias": jnp.zeros(s[-1])} for i, s in enumerate(shapes)}


def reference_keep(scores, alive, k):
  """Independent numpy top-k: sort by (-score, index) over alive entries."""
  idx = np.flatnonzero(alive)
  order = np.lexsort((idx, -scores[idx]))
  keep = np.zeros(scores.size, bool)
  keep[idx[order[:k]]] = True
  return keep


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([1, 7, 40]), min_size=1, max_size=3), st.integers(0, 2**31 - 1),
       st.integers(1, 4), st.floats(0.0, 1.0))
def test_global_topk_keeps_exactly_k_with_ties(sizes, seed, levels, density):
  rng = np.random.default_rng(seed)
  shapes = [(s, 3) for s in sizes]
  values = [rng.integers(0, levels, s).astype(np.float32) for s in shapes]  # Many ties.
  params = tree(shapes, values)
  masks = masks_lib.init_masks(params)
  new = masks_lib.scores_to_masks(params, masks, density)
  n = sum(np.prod(s) for s in shapes)
  k = int(np.floor(density * n + 0.5))
  flat = np.concatenate([np.asarray(new[f"layer{i}"]["kernel"]).ravel() for i in range(len(shapes))])
  assert flat.sum() == k
  scores = np.concatenate([v.ravel() for v in values])
  np.testing.assert_array_equal(flat, reference_keep(scores, np.ones(n, bool), k))
  assert all(np.asarray(new[f"layer{i}"]["bias"]).ndim == 0 for i in range(len(shapes)))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([1, 7, 30]), min_size=1, max_size=3), st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_layerwise_topk_keeps_k_per_layer(sizes, seed, density):
  rng = np.random.default_rng(seed)
  shapes = [(s, 2) for s in sizes]
  values = [rng.integers(0, 3, s).astype(np.float32) for s in shapes]
  new = masks_lib.scores_to_masks(tree(shapes, values), masks_lib.init_masks(tree(shapes)),
                                  density, "layerwise")
  total = 0
  for i, s in enumerate(shapes):
    n = int(np.prod(s))
    got = np.asarray(new[f"layer{i}"]["kernel"]).ravel()
    k = int(got.sum())
    assert np.floor(density * n) <= k <= np.ceil(density * n)  # Same density in every layer.
    np.testing.assert_array_equal(got, reference_keep(values[i].ravel(), np.ones(n, bool), k))
    total += k
  assert total == int(np.floor(density * sum(np.prod(s) for s in shapes) + 0.5))


def test_erk_densities_hit_the_target_and_favour_small_layers():
  shapes = [(3, 3, 3, 16), (3, 3, 16, 32), (3, 3, 32, 64), (64, 10)]
  params = {f"l{i}": {"kernel": jnp.ones(s)} for i, s in enumerate(shapes)}
  masks = masks_lib.init_masks(params)
  for density in (0.5, 0.1, 0.01):
    counts = masks_lib.keep_counts(masks, density, "erk")
    sizes = np.array([np.prod(s) for s in shapes])
    assert counts.sum() == int(np.floor(density * sizes.sum() + 0.5))
    layer_density = counts / sizes
    assert layer_density[0] >= layer_density[1] >= layer_density[2]  # ERK: sparser big layers.
    assert np.all(counts <= sizes)
    # Independent check of the ERK rule where no layer saturates: density ~ (sum / prod).
    raw = np.array([np.sum(s) / np.prod(s) for s in shapes])
    free = layer_density < 1
    ratio = layer_density[free] / raw[free]
    np.testing.assert_allclose(ratio, ratio[0], rtol=0.05)
  new = masks_lib.scores_to_masks(params, masks, 0.1, "erk")
  assert masks_lib.density_report(new)["kept"] == int(np.floor(0.1 * sizes.sum() + 0.5))


def test_nested_masks_never_revive_and_nan_is_lowest():
  scores = tree([(10,)], [np.arange(10, dtype=np.float32)[::-1].copy()])
  masks = masks_lib.init_masks(tree([(10,)]), r"kernel$")  # 1-D: not a weight by default.
  masks["layer0"]["kernel"] = jnp.asarray([False, True] * 5)
  new = masks_lib.scores_to_masks(scores, masks, 0.3)
  # Alive: odd indices with scores 8,6,4,2,0 -> top 3 are indices 1,3,5.
  assert np.flatnonzero(np.asarray(new["layer0"]["kernel"])).tolist() == [1, 3, 5]
  scores["layer0"]["kernel"] = jnp.asarray([np.nan] + [1.0] * 9)
  new = masks_lib.scores_to_masks(scores, masks_lib.init_masks(tree([(10,)]), r"kernel$"), 0.9)
  assert not bool(new["layer0"]["kernel"][0])


def test_density_report_and_layer_collapse():
  params = tree([(4, 5), (3, 2)], [np.ones((4, 5)), np.zeros((3, 2))])
  masks = masks_lib.scores_to_masks(params, masks_lib.init_masks(params), 0.5)
  report = masks_lib.density_report(masks)
  assert report["kept"] == 13 and report["total"] == 26
  assert report["layers"]["layer0/kernel"] == {"kept": 13, "total": 20, "density": 0.65}
  assert report["empty_layers"] == ["layer1/kernel"]
  guarded = masks_lib.scores_to_masks(params, masks_lib.init_masks(params), 0.5, min_per_layer=1)
  r = masks_lib.density_report(guarded)
  assert r["empty_layers"] == [] and r["kept"] == 13 and r["layers"]["layer1/kernel"]["kept"] == 1


def test_apply_masks_zeroes_only_pruned_entries():
  params = tree([(3, 3)], [np.full((3, 3), 2.0)])
  masks = masks_lib.init_masks(params)
  masks["layer0"]["kernel"] = jnp.eye(3, dtype=bool)
  out = masks_lib.apply_masks(params, masks)
  np.testing.assert_array_equal(out["layer0"]["kernel"], 2 * np.eye(3))
  np.testing.assert_array_equal(out["layer0"]["bias"], params["layer0"]["bias"])


def test_prunable_regex_is_configurable_and_checked():
  params = tree([(3, 3)])
  masks = masks_lib.init_masks(params, r"(^|/)(kernel|bias)$")
  assert masks["layer0"]["bias"].shape == (3,)
  with pytest.raises(ValueError, match=r"config.prune.prunable='weight' selects no parameter"):
    masks_lib.init_masks(params, "weight")


def test_num_to_keep_is_exact_for_large_n():
  assert masks_lib.num_to_keep(0.01, 11_164_352) == 111_644  # 111643.52 -> 111644
  assert masks_lib.num_to_keep(0.5, 3) == 2
  with pytest.raises(ValueError, match="density=1.5"):
    masks_lib.num_to_keep(1.5, 10)
