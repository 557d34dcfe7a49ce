"""Structured masks (N:M, block, channel) from any criterion: compliance, exact counts, group scores
against an independent numpy aggregation, and the same masks through the API and the jobs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import autosparse_jax as asj
from autosparse_jax import prune_spec, criteria, masks as masks_lib, structure
from tests.conftest import apply_overrides, load_config


def mlp():
  rng = np.random.default_rng(0)
  params = {"w1": jnp.asarray(rng.normal(size=(64, 32)) / 8, jnp.float32), "b1": jnp.zeros(32),
            "w2": jnp.asarray(rng.normal(size=(32, 16)) / 6, jnp.float32), "b2": jnp.zeros(16),
            "w3": jnp.asarray(rng.normal(size=(16, 12)) / 4, jnp.float32), "b3": jnp.zeros(12)}

  def apply_fn(p, x):
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"])
    return jax.nn.relu(h @ p["w2"] + p["b2"]) @ p["w3"] + p["b3"]
  return params, apply_fn, lambda key: params, (1, 8, 8, 1)


class SmallConv(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(8, (3, 3))(x)))
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    return nn.Dense(12)(x.reshape(x.shape[0], -1))


def conv():
  net = SmallConv()
  variables = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)))
  apply_fn = lambda p, x: net.apply({"params": p, "batch_stats": variables["batch_stats"]}, x)
  return variables["params"], apply_fn, lambda key: net.init(key, jnp.zeros((1, 8, 8, 4)))["params"], (1, 8, 8, 4)


def batches(shape):
  rng = np.random.default_rng(1)
  return [(rng.normal(size=(24,) + shape[1:]).astype(np.float32), rng.integers(0, 12, 24)) for _ in range(2)]


FEW_ROUNDS = {"synflow": 4, "synflow_l2": 4, "px": 3, "ntk_sap": 2, "force": 3}
# CI: one criterion of each kind (data, Hessian, float64 rounds, reviving rounds, data-free); the other
# jittable built-ins with -m slow (CI's time budget: ~1 s of compilation each, cold).
ONE_OF_EACH_KIND = ["magnitude", "snip", "grasp", "synflow", "force"]


@pytest.mark.parametrize("network", [mlp, conv])
@pytest.mark.parametrize("criterion", ONE_OF_EACH_KIND + [
    pytest.param(c, marks=pytest.mark.slow) for c in sorted(criteria.jittable_names())
    if c in criteria.BUILTIN and c not in ONE_OF_EACH_KIND])
def test_n_m_masks_comply_on_every_prunable_layer_for_every_jittable_criterion(network, criterion):
  params, apply_fn, init_fn, shape = network()
  for text in ("2:4", "1:4") if criterion == "snip" else ("2:4",):
    parsed = structure.parse(text)
    masks = asj.prune(criterion, params, apply_fn=apply_fn, batches=batches(shape), input_shape=shape,
                      init_fn=init_fn, sparsity=1 - parsed.n / parsed.m, structure=text, key=jax.random.key(0),
                      rounds=FEW_ROUNDS.get(criterion, 0))
    for name, m in masks_lib.prunable_items(masks, masks):
      groups = np.asarray(parsed.to_groups(jnp.asarray(m), name))
      assert np.all(groups.sum(axis=1) == parsed.n), (criterion, text, name)  # Exactly N of every M.
    assert set(parsed.compliance(masks).values()) == {1.0}


@pytest.mark.parametrize("text", ["channel", "block:4x4", "block:2x4"])
@pytest.mark.parametrize("distribution", ["global", "layerwise", "erk"])
def test_block_and_channel_masks_keep_exact_group_counts(text, distribution):
  params, apply_fn, _, shape = conv()
  parsed = structure.parse(text)
  masks = asj.prune("magnitude", params, sparsity=0.7, structure=text, distribution=distribution)
  init = asj.init_masks(params)
  counts = {name: parsed.group_count(name, m.shape) for name, m in masks_lib.prunable_items(init, init)}
  shapes = [m.shape for _, m in masks_lib.prunable_items(init, init)]
  expected = masks_lib.keep_counts_for(shapes, list(counts.values()), 0.3, distribution)
  kept_groups = []
  for name, m in masks_lib.prunable_items(masks, masks):
    groups = np.asarray(parsed.to_groups(jnp.asarray(m), name))
    assert np.all(groups.all(axis=1) | ~groups.any(axis=1)), name  # Whole groups only.
    kept_groups.append(int(groups.all(axis=1).sum()))
  if distribution == "global":
    assert sum(kept_groups) == expected == round(0.3 * sum(counts.values()))
  else:
    assert kept_groups == list(expected)


def numpy_groups(kernel, kind, n_or_rows, m_or_cols):
  """[groups, members] of a Flax kernel, by loops over the 2-D view (an independent reading of the layout)."""
  view = kernel.reshape(-1, kernel.shape[-1])  # [inputs, outputs]: outputs last, inputs kh, kw, c_in.
  k, out = view.shape
  groups = []
  if kind == "channel":
    return np.stack([view[:, j] for j in range(out)])
  if kind == "nm":
    for i in range(0, k, m_or_cols):
      for j in range(out):
        groups.append(view[i:i + m_or_cols, j])
    return np.stack(groups)
  for i in range(0, k, n_or_rows):
    for j in range(0, out, m_or_cols):
      groups.append(view[i:i + n_or_rows, j:j + m_or_cols].reshape(-1))
  return np.stack(groups)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("text,kind,a,b", [("channel", "channel", 0, 0), ("block:4x2", "block", 4, 2),
                                           ("2:4", "nm", 2, 4)])
def test_group_scores_equal_an_independent_numpy_aggregation(reduce, text, kind, a, b):
  params, apply_fn, _, shape = conv()
  scores = asj.score("snip", params, apply_fn=apply_fn, batches=batches(shape), key=jax.random.key(2))
  sparsity = 0.5 if kind == "nm" else 0.6
  masks = asj.prune("snip", params, apply_fn=apply_fn, batches=batches(shape), key=jax.random.key(2),
                    sparsity=sparsity, structure=text, group_reduce=reduce)
  init = asj.init_masks(params)
  names = [n for n, _ in masks_lib.prunable_items(init, init)]
  flat_scores = dict(masks_lib.prunable_items(scores, init))
  got = dict(masks_lib.prunable_items(masks, init))
  if kind == "nm":  # Exactly the N best of each group of M (ties: the lower index).
    for name in names:
      s, m = numpy_groups(np.asarray(flat_scores[name]), kind, a, b), numpy_groups(np.asarray(got[name]), kind, a, b)
      best = np.argsort(-s, axis=1, kind="stable")[:, :a]
      want = np.zeros_like(m)
      np.put_along_axis(want, best, True, axis=1)
      np.testing.assert_array_equal(m, want, err_msg=name)
    return
  agg = {"sum": np.sum, "mean": np.mean, "max": np.max}[reduce]
  group_scores = {name: agg(numpy_groups(np.asarray(flat_scores[name]), kind, a, b), axis=1) for name in names}
  everything = np.concatenate([group_scores[n] for n in names])
  k = int(np.floor(0.4 * everything.size + 0.5))
  keep = np.zeros(everything.size, bool)
  keep[np.argsort(-everything, kind="stable")[:k]] = True
  pieces = np.split(keep, np.cumsum([group_scores[n].size for n in names])[:-1])
  for name, piece in zip(names, pieces):
    kept = numpy_groups(np.asarray(got[name]), kind, a, b)
    np.testing.assert_array_equal(kept.all(axis=1), piece, err_msg=name)


def test_api_masks_equal_the_jobs_masks_for_a_structured_spec():
  from autosparse_jax.lab import engine, runs
  from autosparse_jax.data import batching
  for text, sparsity in (("2:4", 0.5), ("channel", 0.75)):
    config = apply_overrides(load_config("prune", "lenet_digits"), {
        "criterion": "snip", "sparsity": sparsity, "prune.structure": text})
    task = engine.build_task(config)
    states = engine.init_states(config, task)
    job = runs.prune_states(prune_spec.from_config(config, "snip", density=1.0 - sparsity), task, states)[0].masks
    params = jax.tree.map(lambda x: x[0], states.params)
    images = batching.normalize(task.train_images, task.trainer.spec)
    data = [(images[i:i + 128], task.train_labels[i:i + 128]) for i in range(0, len(task.train_labels), 128)]
    model = task.trainer.model
    api = asj.prune("snip", params, apply_fn=lambda p, x: model.apply({"params": p}, x, train=False),
                    batches=data, sparsity=sparsity, structure=text, key=jax.random.PRNGKey(0))
    for a, b in zip(jax.tree.leaves(job), jax.tree.leaves(api)):
      np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b), err_msg=text)


def test_structures_refuse_what_they_cannot_do():
  params, apply_fn, _, shape = conv()
  with pytest.raises(ValueError, match="structure='2:4' keeps exactly 2 of every 4 .* set sparsity to 0.5"):
    asj.prune("magnitude", params, sparsity=0.9, structure="2:4")
  with pytest.raises(ValueError, match="structure 3:8: layer Conv_0/kernel has 36 inputs per output"):
    asj.prune("magnitude", params, sparsity=1 - 3 / 8, structure="3:8")
  with pytest.raises(ValueError, match="structure='2x2' is not a sparsity structure"):
    asj.prune("magnitude", params, sparsity=0.5, structure="2x2")
  with pytest.raises(ValueError, match="group_reduce='median'"):
    asj.prune("magnitude", params, sparsity=0.5, structure="channel", group_reduce="median")
  from autosparse_jax.lab import jobs
  from autosparse_jax.errors import ConfigError
  config = apply_overrides(load_config("prune", "lenet_digits"), {"prune.structure": "2:4", "sparsity": 0.75})
  with pytest.raises(ConfigError, match="config.prune.structure='2:4' keeps exactly 2 of every 4"):
    jobs.validate(config)
