"""Structured masks (N:M, block, channel) from any criterion: compliance, exact counts, group scores
against an independent numpy aggregation, the same masks through the API and the jobs, N:M equal to
NVIDIA apex ASP's own masks in both layouts, and the refusals (with their fix) or fallback of layers
that cannot take a structure."""
import os

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
  with pytest.raises(ValueError, match=r"structure 3:8: layer Conv_0/kernel \(shape \(3, 3, 4, 8\), layout hwio\) has 4 "
                     "input channels at each tap, not a multiple of M=8"):
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


REFERENCE = os.path.join(os.path.dirname(__file__), "reference")


@pytest.mark.parametrize("case", ["dense", "conv1x1", "conv3x3"])
@pytest.mark.parametrize("layout", ["pytorch", "flax"])
def test_2_4_masks_equal_nvidia_asp_m4n2_1d_in_both_layouts(case, layout):
  # apex's sparse_masklib.create_mask(weight, "m4n2_1d") at 6424da3b (tests/reference/make_asp_fixtures.py): a
  # conv's groups are 4 consecutive input channels at one tap, a dense layer's 4 consecutive inputs.
  with np.load(f"{REFERENCE}/asp__m4n2_1d.npz") as data:
    weight, expected = data[f"weight|{case}"], data[f"mask|{case}"]
  to_flax = (lambda a: a.T) if weight.ndim == 2 else (lambda a: a.transpose(2, 3, 1, 0))
  if layout == "pytorch":
    params = {"layer": {"weight": jnp.asarray(weight)}}
    got = np.asarray(asj.prune("magnitude", params, sparsity=0.5, structure="2:4")["layer"]["weight"])
  else:
    name = "Dense_0" if weight.ndim == 2 else "Conv_0"
    params = {name: {"kernel": jnp.asarray(to_flax(weight))}}
    got = np.asarray(asj.prune("magnitude", params, sparsity=0.5, structure="2:4")[name]["kernel"])
    expected = to_flax(expected)
  np.testing.assert_array_equal(got, expected)


def test_flax_masks_where_c_in_divides_m_and_block_and_channel_masks_are_bit_for_bit_unchanged():
  import importlib.util
  spec = importlib.util.spec_from_file_location("make_structure_fixtures", f"{REFERENCE}/make_structure_fixtures.py")
  fixtures = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(fixtures)
  with np.load(f"{REFERENCE}/structure__before_issue31.npz") as before:
    for text, distribution in fixtures.CASES:
      masks = fixtures.masks(text, distribution)
      for layer in ("Conv_0", "Conv_1", "Conv_2", "Dense_0"):
        np.testing.assert_array_equal(np.asarray(masks[layer]["kernel"]), before[f"{text}|{distribution}|{layer}"],
                                      err_msg=f"{text} {distribution} {layer}")


def patchify_net():
  rng = np.random.default_rng(2)
  draw = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
  return {"patchify": {"kernel": draw(4, 4, 3, 16), "bias": draw(16)}, "Conv_1": {"kernel": draw(3, 3, 16, 8)},
          "Dense_0": {"kernel": draw(8, 10)}}


def test_a_layer_that_cannot_take_2_4_is_refused_with_the_prunable_regex_that_leaves_it_dense_or_left_dense():
  params = patchify_net()  # 4 x 4 x 3 = 48 inputs divide by 4, but 3 input channels at a tap do not.
  with pytest.raises(ValueError, match=r"layer patchify/kernel \(shape \(4, 4, 3, 16\), layout hwio\) has 3 input "
                     "channels at each tap, not a multiple of M=4") as refused:
    asj.prune("magnitude", params, sparsity=0.5, structure="2:4")
  regex = str(refused.value).split("prunable=")[1].split(" (a job")[0].strip("'")
  pasted = asj.prune("magnitude", params, sparsity=0.5, structure="2:4", prunable=regex)
  assert np.ndim(pasted["patchify"]["kernel"]) == 0 and np.ndim(pasted["patchify"]["bias"]) == 0
  fallback = asj.prune("magnitude", params, sparsity=0.5, structure="2:4", structure_fallback="dense")
  assert fallback["patchify"]["kernel"].shape == (4, 4, 3, 16) and bool(np.all(fallback["patchify"]["kernel"]))
  for layer in ("Conv_1", "Dense_0"):  # The others pruned as they would be alone.
    np.testing.assert_array_equal(np.asarray(fallback[layer]["kernel"]), np.asarray(pasted[layer]["kernel"]))
  spec = prune_spec.from_keywords("magnitude", density=0.5, structure="2:4", structure_fallback="dense")
  assert spec.dense_layers(asj.init_masks(params)) == ["patchify/kernel"]
  with pytest.raises(ValueError, match="structure_fallback='skip' is not known"):
    asj.prune("magnitude", params, sparsity=0.5, structure="2:4", structure_fallback="skip")


def test_3d_kernels_take_their_layout_from_the_module_name_or_kernel_layout():
  rng = np.random.default_rng(3)
  draw = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
  nm = structure.parse("2:4")
  conv1d = draw(3, 8, 4)  # Flax Conv 1-D (w, c_in, c_out): groups of 4 channels at one tap.
  groups = np.asarray(nm.to_groups(jnp.arange(conv1d.size).reshape(conv1d.shape), "Conv_0/kernel"))
  np.testing.assert_array_equal(groups[0], np.ravel_multi_index(([0] * 4, [0, 1, 2, 3], [0] * 4), conv1d.shape))
  query = draw(8, 2, 4)  # Flax attention's query (features, heads, head_dim): groups along the features.
  groups = np.asarray(nm.to_groups(jnp.arange(query.size).reshape(query.shape), "attn/query/kernel"))
  np.testing.assert_array_equal(groups[0], np.ravel_multi_index(([0, 1, 2, 3], [0] * 4, [0] * 4), query.shape))
  params = {"block": {"weight": draw(4, 8, 3)}}  # 3-D, no module name: which axes are inputs is unknown.
  with pytest.raises(ValueError, match=r"layer block/weight is a 3-D kernel \(4, 8, 3\) .* kernel_layout="
                     r"\{'\^block/weight\$': 'hwio'\}"):
    asj.prune("magnitude", params, sparsity=0.5, structure="2:4")
  with pytest.raises(ValueError, match="is a 3-D kernel"):  # Never left dense silently.
    asj.prune("magnitude", params, sparsity=0.5, structure="2:4", structure_fallback="dense")
  masks = asj.prune("magnitude", params, sparsity=0.5, structure="2:4", kernel_layout={"block/weight$": "oihw"})
  # ASP's rule for a 3-D (K, C, R) weight: permute to (K, R, C) and group along C.
  w, m = np.abs(np.asarray(params["block"]["weight"])), np.asarray(masks["block"]["weight"])
  groups, kept = w.transpose(0, 2, 1).reshape(-1, 4), m.transpose(0, 2, 1).reshape(-1, 4)
  np.testing.assert_array_equal(kept, np.argsort(np.argsort(-groups, axis=1), axis=1) < 2)
  with pytest.raises(ValueError, match="kernel_layout: layout 'nchw'"):
    asj.prune("magnitude", params, sparsity=0.5, structure="2:4", kernel_layout={"block": "nchw"})


def test_kernel_layout_and_structure_fallback_are_spec_fields_from_both_doors_and_key_programs():
  from autosparse_jax.lab import jobs, workdir
  from autosparse_jax.lab.config_tools import config_to_dict
  from autosparse_jax.errors import ConfigError
  config = apply_overrides(load_config("prune", "lenet_digits"), {
      "prune.structure": "2:4", "sparsity": 0.5, "prune.kernel_layout": ["^x/w$=oihw"],
      "prune.structure_fallback": "dense"})
  from_config = prune_spec.from_config(config)
  from_keywords = prune_spec.from_keywords(config.criterion, density=0.5, structure="2:4",
                                           kernel_layout={"^x/w$": "oihw"}, structure_fallback="dense")
  assert from_config.program_fields() == from_keywords.program_fields()
  assert from_config.kernel_layout == (("^x/w$", "oihw"),) and from_config.structure.layouts == (("^x/w$", "oihw"),)
  plain = prune_spec.from_keywords(config.criterion, density=0.5, structure="2:4")
  assert plain.program_fields() != from_keywords.program_fields()
  jobs.validate(config)
  with pytest.raises(ConfigError, match="config.prune.structure_fallback"):
    jobs.validate(apply_overrides(config, {"prune.structure_fallback": "skip"}))
  # A workdir written before these fields resumes with their neutral values.
  current = config_to_dict(load_config("prune", "lenet_digits"))
  saved = {k: (dict(v) if isinstance(v, dict) else v) for k, v in current.items()}
  saved["prune"] = {k: v for k, v in saved["prune"].items() if k not in ("kernel_layout", "structure_fallback")}
  assert workdir.config_differences(saved, current) == []


def test_a_job_refuses_a_stem_with_the_regex_or_validates_with_structure_fallback():
  from autosparse_jax.lab import jobs
  from autosparse_jax.errors import ConfigError
  config = apply_overrides(load_config("prune", "vgg16_cifar10"), {"prune.structure": "2:4", "sparsity": 0.5})
  with pytest.raises(ConfigError, match=r"has 3 input channels at each tap.* leave it dense with prunable='"):
    jobs.validate(config)
  jobs.validate(apply_overrides(config, {"prune.structure_fallback": "dense"}))
