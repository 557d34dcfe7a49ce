"""The spec is the one value every part uses: criteria declare what they need (a data-free criterion
that runs the network gets its own network's program), the task cache is keyed by what a Task is built
from, every process-wide cache is reachable by programs.reset()."""
import ast
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import autosparse_jax as asj
from autosparse_jax import criteria, programs, prune_spec
from autosparse_jax.errors import ConfigError
from autosparse_jax.lab import engine, jobs, runs
from tests import plugin_criterion
from tests.conftest import apply_overrides, load_config, small_config

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "autosparse_jax")


def two_networks():
  """Two networks whose params have the same shapes but compute different functions."""
  rng = np.random.default_rng(0)
  params = {"w1": jnp.asarray(rng.normal(size=(16, 12)), jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(12, 4)), jnp.float32)}
  relu_net = lambda p, x: jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]
  cubic_net = lambda p, x: jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"] ** 3) @ p["w2"]
  return params, relu_net, cubic_net


def direct_masks(params, apply_fn, sparsity):
  """The criterion computed by hand on `apply_fn`, then exact top-k (ties to the lower index)."""
  x = jnp.ones((1, 16), jnp.float32)
  grads = jax.grad(lambda p: jnp.sum(apply_fn(p, x)))(params)
  scores = jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads)
  masks = asj.init_masks(params)
  return asj.prune("magnitude", scores, sparsity=sparsity, masks=masks)  # Top-k of the scores themselves.


def test_a_data_free_criterion_that_runs_the_network_gets_each_networks_own_masks():
  params, relu_net, cubic_net = two_networks()
  for apply_fn in (relu_net, cubic_net):  # The same shapes: one program would be reused if keyed by shapes.
    masks = asj.prune("plugin_output_saliency", params, apply_fn=apply_fn, input_shape=(1, 16), sparsity=0.5)
    expected = direct_masks(params, apply_fn, 0.5)
    for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(expected)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  relu_masks = asj.prune("plugin_output_saliency", params, apply_fn=relu_net, input_shape=(1, 16), sparsity=0.5)
  cubic_masks = asj.prune("plugin_output_saliency", params, apply_fn=cubic_net, input_shape=(1, 16), sparsity=0.5)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(relu_masks), jax.tree.leaves(cubic_masks)))


def test_a_runs_network_criterion_asks_for_the_input_shape_and_one_that_does_not_declare_it_is_named():
  params, relu_net, _ = two_networks()
  with pytest.raises(ValueError, match="needs the input's shape: pass input_shape="):
    asj.prune("plugin_output_saliency", params, apply_fn=relu_net, sparsity=0.5)
  with pytest.raises(ValueError, match="runs the network: pass apply_fn="):
    asj.prune("plugin_output_saliency", params, input_shape=(1, 16), sparsity=0.5)
  undeclared = criteria.register("test_undeclared_network", plugin_criterion.output_saliency, data=False,
                                 replace=True)
  try:
    with pytest.raises(ValueError, match="registered without runs_network=True"):
      asj.prune(undeclared.name, params, apply_fn=relu_net, sparsity=0.5)
  finally:
    criteria.REGISTRY.pop(undeclared.name)


def test_the_prune_job_and_the_api_give_the_same_masks_for_a_plugin_that_runs_the_network(tmp_path):
  config = load_config("prune", "lenet_digits")
  config = apply_overrides(config, {"criterion": "plugin_output_saliency", "sparsity": 0.9, "num_seeds": 1,
                                    "imports": ("tests.plugin_criterion",)})
  jobs.validate(config)
  task = engine.build_task(config)
  states = engine.init_states(config, task)
  job = runs.prune_states(prune_spec.from_config(config), task, states)[0].masks
  model = task.trainer.model
  params = jax.tree.map(lambda x: x[0], states.params)
  api = asj.prune("plugin_output_saliency", params, input_shape=(1, 8, 8, 1), sparsity=0.9,
                  apply_fn=lambda p, x: model.apply({"params": p}, x, train=False))
  for a, b in zip(jax.tree.leaves(job), jax.tree.leaves(api)):
    np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b))


def test_what_each_criterion_needs_is_its_records_not_its_name():
  needs = {name: (c.data, c.runs_network, c.needs_input_shape, c.needs_init_fn, c.needs_scorer, bool(c.job_only))
           for name, c in criteria.REGISTRY.items() if name in criteria.BUILTIN}
  assert needs["synflow"] == (False, True, True, False, False, False)
  assert needs["magnitude"] == (False, False, False, False, False, False)
  assert needs["ntk_sap"][3] and needs["autos"][4] and needs["survival"][5]
  assert all(n[1] for name, n in needs.items() if criteria.REGISTRY[name].data)  # Data criteria run it.
  # No module decides by a criterion's name what it needs (the registry's own registrations aside).
  for path in ("api.py", "pruning.py", "prune_spec.py", "lab/runs.py", "lab/engine.py", "lab/jobs/prune.py",
               "lab/jobs/sweep.py", "lab/jobs/irp.py"):
    with open(os.path.join(ROOT, path)) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.Compare) and any(isinstance(c, ast.Constant) and c.value in criteria.BUILTIN
                                               for c in node.comparators):
        raise AssertionError(f"{path}:{node.lineno} compares with a criterion's name")


# ---- The task cache: keyed by what a Task is built from.

def test_the_task_cache_is_keyed_by_the_task_definition_and_checks_run_on_every_job(monkeypatch):
  config = small_config(**{"train.epochs": 1})
  first = engine.build_task(config)
  assert engine.build_task(small_config(**{"train.epochs": 3})) is first  # Epochs: the jobs', not the task's.
  assert engine.build_task(small_config(num_seeds=3)) is first  # Seeds: a field the Task does not hold.
  changed = {"dataset": "digits", "data.eval_batch_size": 7, "data.synthetic.num_train": 96, "model": "lenet_300_100",
             "width": 0.3, "dtype": "bfloat16", "conv": "im2col", "train.batch_size": 16, "train.optimizer": "adam",
             "train.lr": 0.01, "train.momentum": 0.5, "train.nesterov": False, "train.weight_decay": 0.0,
             "train.lr_drop_epochs": (1,), "train.lr_drop_factor": 0.5, "mesh.seeds": 1, "mesh.data": 1,
             "mesh.shard_train_set": True}
  definition = engine.task_definition(config)
  for name, value in changed.items():
    other = engine.task_definition(small_config(**{name: value}))
    if name in ("model", "mesh.seeds", "mesh.data"):  # Values equal to the config's: the same task.
      assert other == definition, name
      continue
    assert other != definition, name
  # _build_task reads the definition alone (no config): a field it does not hold cannot change a task.
  assert list(engine._build_task.__code__.co_varnames[:engine._build_task.__code__.co_argcount]) == ["definition"]
  assert engine.build_task(small_config(**{"train.lr": 0.01})) is not first
  # The mesh check reads num_seeds: it runs for a cached task too.
  engine.build_task(small_config())
  monkeypatch.setattr(jax, "device_count", lambda: 2)
  with pytest.raises(ConfigError, match="config.num_seeds=3 must be a multiple of config.mesh.seeds=2"):
    engine.validate(small_config(num_seeds=3, **{"mesh.seeds": 2, "mesh.data": 1}))


def test_every_process_wide_cache_is_registered_and_reset_empties_them():
  for path, _, files in os.walk(ROOT):
    for name in files:
      if name.endswith(".py"):
        source = open(os.path.join(path, name)).read()
        assert "lru_cache" not in source and "functools.cache" not in source, os.path.join(path, name)
  params, relu_net, _ = two_networks()
  asj.prune("plugin_output_saliency", params, apply_fn=relu_net, input_shape=(1, 16), sparsity=0.5)
  engine.build_task(small_config())
  assert any(len(c) for c in programs._CACHES)
  programs.reset()
  assert all(len(c) == 0 for c in programs._CACHES)
