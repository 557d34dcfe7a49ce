"""The pruning module: one schedule for IRP and R-round pruning, every criterion honours the
layer distribution (AutoS, NPB), exact keep counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autosparse_jax import masks as masks_lib, prune_spec, pruning
from autosparse_jax.lab import engine
from autosparse_jax.autos.apply import save_scorer
from autosparse_jax.autos.scorer import make_scorer
from autosparse_jax.criteria.base import ModelState, PruneData
from autosparse_jax.errors import ConfigError
from autosparse_jax.lab.jobs import irp
from autosparse_jax.lab import runs
from tests.conftest import apply_overrides, load_config, small_config


@pytest.mark.parametrize("final,rounds", [(0.01, 20), (0.1, 5), (0.37, 1), (0.5, 3)])
def test_one_schedule_function_gives_both_closed_forms_under_every_name(final, rounds):
  i = np.arange(1, rounds + 1)
  exponential = np.array([final ** (k / rounds) for k in i])  # d^(r/R): SynFlow, IRP 'geometric'.
  linear = np.array([1.0 - (1.0 - final) * k / rounds for k in i])  # Equal count per round.
  for name in ("exponential", "geometric"):
    np.testing.assert_allclose(prune_spec.schedule(final, rounds, name), exponential, rtol=1e-15)
  for name in ("linear", "count"):
    np.testing.assert_allclose(prune_spec.schedule(final, rounds, name), linear, rtol=1e-15)
  assert prune_spec.schedule(final, rounds, "count")[-1] == pytest.approx(final, abs=1e-15)
  with pytest.raises(ValueError, match="config.irp.schedule='pct' is not known. Allowed: count, geometric"):
    prune_spec.schedule(final, rounds, "pct", "config.irp.schedule", prune_spec.IRP_SCHEDULES)


def test_irp_levels_and_r_round_pruning_at_init_share_the_schedule_and_the_counts():
  config = apply_overrides(load_config("irp", "lenet_digits"), {
      "irp.rounds": 5, "irp.final_density": 0.1, "irp.schedule": "geometric", "width": 0.25,
      "prune.rounds": 5, "prune.round_schedule": "exponential", "prune.distribution": "erk"})
  task = engine.build_task(config)
  masks = jax.tree.map(lambda m: m[0], engine.init_states(config, task).masks)
  levels = irp.levels(prune_spec.irp_spec(config), masks, bool(config.irp.train_first))
  at_init = (prune_spec.from_config(config, "snip").with_density(0.1)).plan(masks)
  np.testing.assert_array_equal(np.stack([level.counts for level in levels]), at_init)
  np.testing.assert_allclose([level.density for level in levels], 0.1 ** (np.arange(1, 6) / 5), rtol=1e-15)
  assert at_init.shape == (5, 3)  # ERK: per-layer counts of each round.


def fake_scorer(directory):
  """An untrained AutoS MLP scorer saved as autos_train saves one (its scores are arbitrary)."""
  module = make_scorer("mlp", 2, 0.25)
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((2, 2)), train=False)
  save_scorer(directory, {"backbone": "mlp", "width": 0.25, "features": ["theta0", "g0"], "dtype": "float32",
                          "g0_reduction": "sum"}, variables, np.zeros(2), np.ones(2))
  return directory


@pytest.mark.parametrize("criterion,distribution", [
    ("autos", "erk"), ("autos", "layerwise"), ("npb", "layerwise"),
    pytest.param("npb", "erk", marks=pytest.mark.slow), pytest.param("snip", "erk", marks=pytest.mark.slow),
    pytest.param("snip", "layerwise", marks=pytest.mark.slow)])  # slow: CI's time budget.
def test_every_criterion_keeps_the_exact_per_layer_counts_of_the_distribution(tmp_path, criterion,
                                                                                  distribution):
  config = small_config(criterion=criterion, sparsity=0.9, num_seeds=2, **{
      "prune.distribution": distribution, "autos.scorer_dir": fake_scorer(str(tmp_path / "scorer"))})
  task = engine.build_task(config)
  states = engine.init_states(config, task)
  pruned, _ = runs.prune_states(prune_spec.from_config(config, criterion, density=1.0 - 0.9), task, states)
  one = jax.tree.map(lambda m: np.asarray(m[0]), states.masks)
  expected = masks_lib.keep_counts(one, 0.1, distribution)
  for seed in range(2):
    masks = jax.tree.map(lambda m: np.asarray(m[seed]), pruned.masks)
    kept = [int(m.sum()) for _, m in masks_lib.prunable_items(masks, masks)]
    assert kept == list(expected), (criterion, distribution, seed)
  if distribution == "layerwise":  # Not what a global top-k would keep.
    assert list(expected) != list(masks_lib.keep_counts(one, 0.1, "erk"))


def test_npb_keeps_erk_budgets_under_the_global_default_and_says_so():
  assert prune_spec.PruneSpec("npb").distribution_used == "erk"
  assert prune_spec.PruneSpec("npb", distribution="layerwise").distribution_used == "layerwise"
  assert prune_spec.PruneSpec("snip").distribution_used == "global"


def pruned_with(ablation, criterion="magnitude", sparsity=0.8, **overrides):
  config = small_config(criterion=criterion, sparsity=sparsity, num_seeds=2,
                        **{"prune.ablation": ablation, **overrides})
  task = engine.build_task(config)
  states = engine.init_states(config, task)
  return states, runs.prune_states(prune_spec.from_config(config, criterion, density=1.0 - sparsity), task, states)


def layer_counts(masks, seed):
  one = jax.tree.map(lambda m: np.asarray(m[seed]), masks)
  return [int(m.sum()) for _, m in masks_lib.prunable_items(one, one)]


def test_shuffle_layerwise_keeps_every_layer_count_and_changes_which_weights():
  _, (plain, _) = pruned_with("none", "snip")
  _, (shuffled, _) = pruned_with("shuffle_layerwise", "snip")
  for seed in range(2):
    assert layer_counts(shuffled.masks, seed) == layer_counts(plain.masks, seed)
  overlap = [float(np.mean(np.asarray(a) == np.asarray(b)))
             for a, b in zip(jax.tree.leaves(plain.masks), jax.tree.leaves(shuffled.masks)) if a.ndim > 1]
  assert min(overlap) < 0.9  # Random weights: far from the criterion's choice.


def test_reinit_keeps_the_masks_and_redraws_theta_0():
  dense, (plain, _) = pruned_with("none")
  _, (reinit, _) = pruned_with("reinit")
  for a, b in zip(jax.tree.leaves(plain.masks), jax.tree.leaves(reinit.masks)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for p, p0, m in zip(jax.tree.leaves(reinit.params), jax.tree.leaves(dense.params), jax.tree.leaves(reinit.masks)):
    if m.ndim > 1:
      assert not np.array_equal(np.asarray(p), np.asarray(p0) * np.asarray(m))  # Another theta_0 ...
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0)  # ... masked the same way.


def test_invert_keeps_exactly_the_lowest_scored_weights():
  dense, (inverted, _) = pruned_with("invert", sparsity=0.7)
  for seed in range(2):
    params = jax.tree.map(lambda x: np.asarray(x[seed]), dense.params)
    masks = jax.tree.map(lambda m: np.asarray(m[seed]), inverted.masks)
    flat = np.concatenate([np.abs(p).reshape(-1) for _, p in masks_lib.prunable_items(params, masks)])
    kept = np.concatenate([m.reshape(-1) for _, m in masks_lib.prunable_items(masks, masks)])
    k = int(np.floor(0.3 * flat.size + 0.5))
    lowest = np.argsort(flat, kind="stable")[:k]  # Magnitude: the k smallest |theta|.
    assert kept.sum() == k and kept[lowest].all()


def test_force_rounds_let_pruned_weights_come_back_and_end_at_the_exact_count():
  config = small_config(criterion="force", sparsity=0.9, **{"prune.rounds": 4})
  task = engine.build_task(config)
  states = engine.init_states(config, task)
  pruned, scores = runs.prune_states(prune_spec.from_config(config, "force", density=1.0 - 0.9), task, states)
  masks = jax.tree.map(lambda m: np.asarray(m[0]), pruned.masks)
  report = masks_lib.density_report(masks)
  assert report["kept"] == int(np.floor(0.1 * report["total"] + 0.5))
  # The returned scores are the last round's over every weight: their top-k is the mask.
  again = masks_lib.scores_to_masks(jax.tree.map(lambda s: s[0], scores),
                                    jax.tree.map(lambda m: np.ones_like(np.asarray(m[0])), states.masks), 0.1)
  for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(again)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The first of the 4 rounds alone ends at its schedule density 0.1^(1/4).
  one_seed = jax.tree.map(lambda x: x[0], states)
  spec = prune_spec.from_config(config, "force", density=0.1)
  m1, _, _ = pruning.prune_network(spec, one_seed.params, one_seed.masks,
                                ModelState({}, task.trainer.model, task.trainer.spec),
                                PruneData(task.train_images, task.train_labels), one_seed.key,
                                (spec).plan(one_seed.masks)[:1])
  assert masks_lib.density_report(m1)["density"] == pytest.approx(0.1 ** 0.25, abs=1e-3)


def test_an_unknown_ablation_is_refused_naming_the_field():
  config = small_config(criterion="snip", sparsity=0.5, **{"prune.ablation": "inverse"})
  with pytest.raises(ConfigError, match="config.prune.ablation='inverse' is not known.*Did you mean 'invert'"):
    engine.validate(config)
