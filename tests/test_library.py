"""The library's contract: one PruneSpec from either door, caches that cannot go stale, one prunable
default, and an API that refuses bad input with a ValueError naming the argument before any compute."""
import dataclasses

import chex
import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import autosparse_jax as asj
from autosparse_jax import api, criteria, masks as masks_lib, programs, prune_spec, pruning
from autosparse_jax.errors import ConfigError
from tests.conftest import apply_overrides, load_config


class SmallCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def cnn():
  net = SmallCNN()
  params = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  rng = np.random.default_rng(0)
  batches = [(rng.normal(size=(16, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 16)) for _ in range(2)]
  return net, params, (lambda p, x: net.apply({"params": p}, x)), batches


# ---- One PruneSpec from a job's config and from the API's keywords.

NON_DEFAULT = {  # A value other than the default for each criterion's own options (the API's keywords).
    "grasp": dict(grasp_temperature=50.0, grasp_samples_per_class=3, grasp_sampling="random",
                  grad_reduction="mean"),
    "snip": dict(grad_reduction="mean"),
    "npb": dict(npb_alpha=0.5, npb_max_p=3),
    "px": dict(px_samples_per_class=4, px_head_pattern="(^|/)out/"),
    "ntk_sap": dict(ntk_sap_epsilon=0.02, ntk_sap_resamples=2),
    "prospr": dict(prospr_inner_steps=2, prospr_inner_lr=0.05),
    "force": dict(force_num_batches=2),
    "autos": dict(scorer_batch_size=512, sharding="pmap"),
}


@pytest.mark.parametrize("structure", ["unstructured", "2:4", "block:4x2", "channel"])
@pytest.mark.parametrize("criterion", [c for c in criteria.REGISTRY if c in criteria.BUILTIN and c != "survival"])
def test_prune_spec_from_a_config_equals_the_spec_from_the_api_keywords(criterion, structure):
  """Every criterion x structure: the same spec through both doors (no compilation)."""
  options = NON_DEFAULT.get(criterion, {})
  density = 0.5 if ":" in structure and not structure.startswith("block") else 0.25
  overrides = {"criterion": criterion, "sparsity": 1.0 - density, "prune.distribution": "erk", "prune.rounds": 0,
               "prune.ablation": "invert", "prune.structure": structure, "prune.group_reduce": "max"}
  record = criteria.get(criterion).options
  for name, value in options.items():
    field = next(f for f in dataclasses.fields(record) if f.name == name)
    overrides[criteria.options.config_path(field)] = value
  config = apply_overrides(load_config("prune", "lenet_digits"), overrides)
  from_config = prune_spec.from_config(config)
  from_api = prune_spec.from_keywords(criterion, density=density, distribution="erk", ablation="invert",
                                      structure=structure, group_reduce="max", **options)
  assert from_config == from_api
  assert str(from_config.structure) == structure and from_config.structure == prune_spec.structure_lib.parse(structure)
  assert type(from_config.options) is record
  for name, value in options.items():  # Not the defaults: the values asked for reached the record.
    assert getattr(from_api.options, name) == value


def test_every_option_default_is_declared_once_in_its_record():
  config = load_config("prune", "lenet_digits")
  for path, (record, field) in criteria.option_fields().items():
    group, name = path.split(".")
    assert config[group][name] == field.default, path  # base_config reads the record.
    from autosparse_jax.lab import schema
    assert schema.BY_NAME[path].doc == field.metadata["doc"], path  # So does the schema.


# ---- Caches that cannot go stale.

def test_reregistering_a_criterion_needs_replace_and_gives_the_new_masks(cnn):
  _, params, apply_fn, _ = cnn
  first = lambda params, masks, ms, data, key, options: jax.tree.map(jnp.abs, params)
  second = lambda params, masks, ms, data, key, options: jax.tree.map(lambda p: -jnp.abs(p), params)
  asj.register_criterion("test_mine", first, data=False, replace=True)
  old = asj.prune("test_mine", params, apply_fn=apply_fn, sparsity=0.5)
  with pytest.raises(ValueError, match="'test_mine' is already registered: pass replace=True"):
    asj.register_criterion("test_mine", second, data=False)
  asj.register_criterion("test_mine", second, data=False, replace=True)
  new = asj.prune("test_mine", params, apply_fn=apply_fn, sparsity=0.5)
  for o, n, p in zip(jax.tree.leaves(old), jax.tree.leaves(new), jax.tree.leaves(params)):
    if np.ndim(o):  # The largest |theta| the first time, the smallest the second: disjoint halves.
      assert not np.any(np.asarray(o) & np.asarray(n))


def test_a_builtin_criterion_is_not_replaced_by_accident():
  with pytest.raises(ValueError, match="'snip' is a built-in criterion: pass replace=True"):
    asj.register_criterion("snip", lambda *a: None)
  assert criteria.get("snip").score.__name__ == "snip_scores"


def test_replacing_a_criterion_drops_its_compiled_programs(cnn):
  _, params, apply_fn, batches = cnn
  f = lambda params, masks, ms, data, key, options: jax.tree.map(jnp.abs, params)
  asj.register_criterion("test_dropped", f, data=False, replace=True)
  asj.prune("test_dropped", params, apply_fn=apply_fn, sparsity=0.5)
  old = criteria.get("test_dropped")
  assert any(programs._holds(k, old) for k in api._PROGRAMS._entries)
  asj.register_criterion("test_dropped", f, data=False, replace=True)
  assert not any(programs._holds(k, old) for k in api._PROGRAMS._entries)


def test_fresh_lambdas_of_one_network_reuse_one_program_and_the_cache_stays_bounded(cnn):
  net, params, _, batches = cnn
  snip = criteria.get("snip")  # SNIP whose score function may be traced once: one compiled program.
  attributes = {f.name: getattr(snip, f.name) for f in dataclasses.fields(snip)
                if f.name not in ("name", "score", "runs_network")}
  chex.clear_trace_counter()
  asj.register_criterion("test_snip_traced_once", chex.assert_max_traces(snip.score, n=1), replace=True,
                         **attributes)
  before = api._PROGRAMS.builds
  first = None
  try:
    for _ in range(100):
      masks = asj.prune("test_snip_traced_once", params, apply_fn=lambda p, x: net.apply({"params": p}, x),
                        batches=batches, sparsity=0.9, key=jax.random.key(2))
      first = first or masks
  finally:
    criteria.REGISTRY.pop("test_snip_traced_once")  # Tests that walk every criterion must not meet it.
  assert api._PROGRAMS.builds - before <= 1  # One program for 100 fresh lambdas of the same network.
  chex.assert_trees_all_equal(first, masks)
  # Another network (other widths) is another program, never the first one's.
  other = SmallCNN().init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)))["params"]
  closed = jnp.ones(10)  # A lambda closing over an array: its values are part of the key.
  a = programs.function_fingerprint(lambda p, x: net.apply({"params": p}, x) * closed, other, batches[0][0])
  b = programs.function_fingerprint(lambda p, x: net.apply({"params": p}, x) * (2 * closed), other,
                                    batches[0][0])
  c = programs.function_fingerprint(lambda p, x: net.apply({"params": p}, x) * closed, other, batches[0][0])
  assert a != b and a == c


def test_bounded_cache_drops_the_least_recently_used():
  cache = programs.BoundedCache(3)
  for i in range(10):
    cache.get(("k", i), lambda i=i: i)
  assert len(cache) == 3 and ("k", 9) in cache and ("k", 0) not in cache
  cache.get(("k", 7), lambda: -1)
  cache.get(("k", 10), lambda: 10)
  assert ("k", 7) in cache and ("k", 8) not in cache


def test_a_rewritten_scorer_directory_is_reloaded(tmp_path):
  from autosparse_jax.criteria import autos
  from tests.test_pruning import fake_scorer
  directory = fake_scorer(str(tmp_path / "scorer"))
  first = autos.cached_scorer(directory)
  assert autos.cached_scorer(directory) is first
  import os
  import time
  path = os.path.join(directory, "scorer.json")
  time.sleep(0.01)
  os.utime(path)  # The file changes (an autos_train job wrote it again).
  assert autos.cached_scorer(directory) is not first


# ---- One default for prunable, the same in jobs and API.

def _prunable_names(params):
  masks = asj.init_masks(params)
  return sorted(name for name, _ in masks_lib.prunable_items(masks, masks))


def test_default_prunable_on_linen_weights_only():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, tokens):
      x = nn.Embed(20, 8, name="embed")(tokens)
      cls = self.param("cls", nn.initializers.zeros, (1, 1, 8))
      pos = self.param("pos_embedding", nn.initializers.normal(), (1, 5, 8))
      x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, 8)), x], axis=1) + pos
      x = nn.LayerNorm(name="norm")(x)
      x = nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(x)
      x = nn.DenseGeneral((2, 4), name="proj")(x)
      x = nn.Conv(4, (3,), name="conv")(x.reshape(x.shape[0], 5, 8))
      x = nn.BatchNorm(use_running_average=True, name="bn")(x)
      return nn.Dense(3, name="head")(x.mean(1))

  params = Net().init(jax.random.key(0), jnp.zeros((2, 4), jnp.int32))["params"]
  assert _prunable_names(params) == ["attn/key/kernel", "attn/out/kernel", "attn/query/kernel",
                                     "attn/value/kernel", "conv/kernel", "head/kernel", "proj/kernel"]


def test_default_prunable_on_nnx_state():
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.embed = nnx.Embed(20, 8, rngs=rngs)
      self.conv = nnx.Conv(8, 4, (3,), rngs=rngs)
      self.norm = nnx.LayerNorm(4, rngs=rngs)
      self.head = nnx.Linear(4, 3, rngs=rngs)

  _, params, _ = nnx.split(Net(nnx.Rngs(0)), nnx.Param, ...)
  assert _prunable_names(params) == ["conv/kernel/value", "head/kernel/value"]


class EqxNet(eqx.Module):
  token_embedding: eqx.nn.Embedding
  conv: eqx.nn.Conv2d
  norm: eqx.nn.LayerNorm
  attn: eqx.nn.MultiheadAttention
  head: eqx.nn.Linear

  def __init__(self, key):
    keys = jax.random.split(key, 4)
    self.token_embedding = eqx.nn.Embedding(20, 8, key=keys[0])
    self.conv = eqx.nn.Conv2d(3, 4, 3, key=keys[1])
    self.norm = eqx.nn.LayerNorm(4)
    self.attn = eqx.nn.MultiheadAttention(2, 8, key=keys[2])
    self.head = eqx.nn.Linear(4, 3, key=keys[3])


def test_default_prunable_on_equinox_weights_not_its_conv_bias_or_embedding():
  model = EqxNet(jax.random.key(0))
  params = eqx.filter(model, eqx.is_array)
  assert _prunable_names(params) == ["attn/key_proj/weight", "attn/output_proj/weight", "attn/query_proj/weight",
                                     "attn/value_proj/weight", "conv/weight", "head/weight"]
  assert np.shape(model.conv.bias) == (4, 1, 1)  # ndim 3, still a bias: dense.


def test_default_prunable_on_a_dict_and_in_the_jobs():
  params = {"w1": jnp.ones((4, 3)), "b1": jnp.ones(3), "W_2": jnp.ones((3, 2)), "scale": jnp.ones((3, 3)),
            "layer": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2, 2))}, "weight": jnp.ones(5)}
  assert _prunable_names(params) == ["W_2", "layer/kernel", "w1"]
  config = load_config("prune", "lenet_digits")
  assert config.prune.prunable == masks_lib.DEFAULT_PRUNABLE  # The jobs' default is the same rule.
  from autosparse_jax.lab import engine
  task = engine.build_task(config)
  job_masks = jax.tree.map(lambda m: m[0], engine.init_states(config, task).masks)
  params = jax.tree.map(lambda p: p[0], engine.init_states(config, task).params)
  assert sorted(n for n, _ in masks_lib.prunable_items(job_masks, job_masks)) == _prunable_names(params)


# ---- Bad input: a ValueError naming the argument and the fix, before any compute.

@pytest.fixture
def no_compute(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("compute started before the arguments were checked")
  monkeypatch.setattr(api, "_run", refuse)
  monkeypatch.setattr(pruning, "host_prune", refuse)


def _bad_cases(net, params, apply_fn, batches):
  x, y = batches[0]
  masks = asj.init_masks(params)
  other_masks = {"Dense_0": masks["Dense_0"]}
  common = dict(apply_fn=apply_fn, sparsity=0.9)
  return [
      ("masks of another tree", dict(criterion="snip", batches=batches, masks=other_masks), "masks="),
      ("mask leaf of the wrong shape", dict(criterion="snip", batches=batches, masks=jax.tree.map(
          lambda m: jnp.ones((2, 2), bool) if m.ndim else m, masks)), "masks= leaf"),
      ("params of another model", dict(criterion="snip", batches=batches, params=dict(
          params, Conv_0={"kernel": jnp.zeros((3, 3, 1, 8)), "bias": jnp.zeros(8)})),
       "params do not fit apply_fn's model: params leaf 'Conv_0/kernel' has shape \\(3, 3, 1, 8\\), but the "
       "model makes it \\(3, 3, 1, 4\\)"),
      ("params without a layer", dict(criterion="snip", batches=batches, params={"Conv_0": params["Conv_0"]}),
       "params do not fit apply_fn's model: it reads params leaf 'Dense_0/kernel'"),
      ("params a raw apply_fn cannot use", dict(criterion="snip", batches=batches, params={"w": jnp.zeros((1024, 10))},
                                                apply_fn=lambda p, x: x.reshape(len(x), -1) @ p["w"]),
       "params leaf 'w' has shape \\(1024, 10\\)"),
      ("NCHW batches", dict(criterion="snip", batches=[(np.transpose(x, (0, 3, 1, 2)), y)]), "batches="),
      ("flattened batches", dict(criterion="snip", batches=[(x.reshape(len(x), -1), y)]), "batches="),
      ("integer leaf", dict(criterion="magnitude", params=dict(params, step=jnp.zeros((3, 3), jnp.int32))),
       "params leaf 'step'"),
      ("labels 1..10", dict(criterion="snip", batches=[(x, np.arange(1, 17) % 10 + 1)]), "labels in batches="),
      ("one-hot labels", dict(criterion="snip", batches=[(x, np.eye(10)[y])]), "batches\\[0\\]\\[1\\]"),
      ("key=0", dict(criterion="snip", batches=batches, key=0), "key=0 is an integer"),
      ("a float key", dict(criterion="snip", batches=batches, key=np.zeros(2, np.float32)), "key="),
      ("min_per_layer under erk", dict(criterion="snip", batches=batches, distribution="erk", min_per_layer=5),
       "min_per_layer=5 applies to distribution='global' only"),
      ("unknown criterion", dict(criterion="snp", batches=batches), "criterion='snp' is not known"),
      ("empty batches", dict(criterion="snip", batches=[]), "batches= is empty"),
      ("batches not pairs", dict(criterion="snip", batches=[x]), "batches\\[0\\] must be a pair"),
      ("one pair, not a list", dict(criterion="snip", batches=(x, y)), "batches= looks like one \\(x, y\\) pair"),
      ("x and y lengths", dict(criterion="snip", batches=[(x, y[:3])]), "batches\\[0\\]: x has 16"),
      ("scorer of the wrong kind", dict(criterion="autos", batches=batches, scorer=42), "scorer=42"),
      ("scorer for another criterion", dict(criterion="snip", batches=batches, scorer="dir"),
       "scorer= is for criterion 'autos' only"),
      ("another criterion's option", dict(criterion="snip", batches=batches, grasp_temperature=2.0),
       "grasp_temperature= is not an option of criterion 'snip' \\(it is another criterion's\\)"),
      ("a misspelt option", dict(criterion="grasp", batches=batches, grasp_temprature=2.0),
       "did you mean grasp_temperature="),
      ("an option of the wrong type", dict(criterion="grasp", batches=batches, grasp_samples_per_class=2.5),
       "grasp_samples_per_class=2.5 must be an integer"),
      ("batch_size is the batches'", dict(criterion="snip", batches=batches, batch_size=4), "batch_size= is set"),
      ("sparsity 1", dict(criterion="snip", batches=batches, sparsity=1.0), "sparsity=1.0 must lie in"),
      ("input_shape not a shape", dict(criterion="synflow", input_shape=8), "input_shape=8"),
      ("input_shape NCHW", dict(criterion="synflow", input_shape=(1, 1, 8, 8)), "input_shape="),
      ("apply_fn not logits", dict(criterion="snip", batches=batches,
                                   apply_fn=lambda p, x: apply_fn(p, x).sum(-1)), "must return logits"),
      ("apply_fn not callable", dict(criterion="snip", batches=batches, apply_fn="net"), "apply_fn="),
      ("masks and prunable", dict(criterion="snip", batches=batches, masks=masks, prunable="kernel"),
       "pass masks= or prunable="),
      ("prunable selects nothing", dict(criterion="snip", batches=batches, prunable="nothing_here"),
       "prunable='nothing_here' selects no parameter"),
      ("a bad regex", dict(criterion="snip", batches=batches, prunable="(kernel"), "prunable='\\(kernel'"),
      ("num_classes disagrees", dict(criterion="snip", batches=batches, num_classes=5), "num_classes=5"),
      ("invalid ablation", dict(criterion="snip", batches=batches, ablation="reinit"), "ablation='reinit'"),
      ("rounds for a host criterion", dict(criterion="npb", input_shape=(1, 8, 8, 1), rounds=3), "rounds=3"),
      ("N:M at another density", dict(criterion="snip", batches=batches, structure="2:4"),
       "structure='2:4' keeps exactly 2 of every 4 .* set sparsity to 0.5"),
      ("N > M", dict(criterion="snip", batches=batches, structure="5:4", sparsity=0.5), "N:M needs 0 < N < M"),
      ("an unknown structure", dict(criterion="snip", batches=batches, structure="blocks:4x4"),
       "structure='blocks:4x4' is not a sparsity structure"),
      ("a layer that does not divide", dict(criterion="snip", batches=batches, structure="block:3x3"),
       "structure block:3x3: layer .* does not tile into 3 x 3 blocks"),
      ("an unknown group reduction", dict(criterion="snip", batches=batches, structure="channel",
                                          group_reduce="median"), "group_reduce='median' is not known"),
  ], common


def test_the_api_refuses_bad_input_naming_the_argument_before_any_compute(cnn, no_compute):
  net, params, apply_fn, batches = cnn
  cases, common = _bad_cases(net, params, apply_fn, batches)
  for label, case, message in cases:
    case = dict(common, **case)
    criterion = case.pop("criterion")
    p = case.pop("params", params)
    with pytest.raises(ValueError, match=message) as info:
      asj.prune(criterion, p, **case)
    assert type(info.value) in (ValueError, ConfigError), label
    assert "Traceback" not in str(info.value) and len(str(info.value)) < 800, label


def test_apply_masks_and_masked_refuse_masks_of_another_model_naming_the_leaf(cnn):
  """The mask half of the bad-input table: every door that takes masks runs the one check (masks.check_masks)."""
  import optax
  _, params, _, _ = cnn
  masks = asj.init_masks(params)
  doors = {"apply_masks": lambda m: asj.apply_masks(params, m),
           "masked": lambda m: asj.masked(optax.sgd(0.1), m).init(params)}
  bad = [
      ("masks of another tree", {"Dense_0": masks["Dense_0"]}, "masks= must have the tree structure of params="),
      ("a leaf of another shape", jax.tree.map(lambda m: jnp.ones((3, 3, 1, 16), bool) if m.ndim == 4 else m, masks),
       "masks= leaf 'Conv_0/kernel' has shape \\(3, 3, 1, 16\\) but params= leaf 'Conv_0/kernel' has \\(3, 3, 1, 4\\)"),
      ("values other than 0/1", jax.tree.map(lambda m: jnp.full(m.shape, 0.5) if m.ndim else m, masks),
       "holds values other than 0 and 1"),
      ("strings", jax.tree.map(lambda m: np.full(m.shape, "x") if m.ndim else m, masks), "has dtype <U1"),
  ]
  for door, call in doors.items():
    for label, case, message in bad:
      with pytest.raises(ValueError, match=message):
        call(case)
    ones = jax.tree.map(lambda m: jnp.ones(m.shape, jnp.float32) if m.ndim else m, masks)  # 0/1 numbers: accepted.
    call(ones)


def test_the_unknown_criterion_message_lists_no_jobs_only_name(cnn):
  _, params, _, _ = cnn
  with pytest.raises(ValueError) as info:
    asj.score("nope", params)
  assert "'none'" not in str(info.value) and ", none," not in str(info.value) and "snip" in str(info.value)


def test_the_jobs_refuse_min_per_layer_under_erk_with_one_line():
  from autosparse_jax.lab import jobs
  config = apply_overrides(load_config("prune", "lenet_digits"), {
      "prune.distribution": "erk", "prune.min_per_layer": 3})
  with pytest.raises(ConfigError, match="config.prune.min_per_layer=3 applies to config.prune.distribution="):
    jobs.validate(config)
