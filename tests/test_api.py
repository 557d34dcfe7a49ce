"""The public API on networks outside the registry: same masks as the jobs, exact counts for any
pytree (linen, NNX, a plain function), masked optax, plugins through config.imports."""
import os

import flax.linen as nn
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import autosparse_jax as asj
from autosparse_jax import masks as masks_lib
from autosparse_jax.lab import engine, jobs
from autosparse_jax.data import batching
from autosparse_jax.lab import runs
from autosparse_jax import prune_spec
from tests.conftest import apply_overrides, load_config
from tests.test_pruning import fake_scorer

# In CI: one of each kind (data, Hessian, float64 rounds, reviving rounds, host); all with -m slow.
API_CRITERIA = ["snip", "grasp", "synflow", "force", "autos"] + [
    pytest.param(c, marks=pytest.mark.slow) for c in ("random", "magnitude", "grasp_abs", "synflow_l2", "fisher")]


@pytest.fixture(scope="module")
def digits_lenet(tmp_path_factory):
  """theta_0 of the prune job's LeNet-300-100 on digits, and the same data as user batches."""
  config = load_config("prune", "lenet_digits")
  config.autos.scorer_dir = fake_scorer(str(tmp_path_factory.mktemp("scorer") / "scorer"))
  task = engine.build_task(config)
  states = engine.init_states(config, task)
  images = batching.normalize(task.train_images, task.trainer.spec)  # What the jobs feed the network.
  labels = task.train_labels
  batches = [(images[i:i + 128], labels[i:i + 128]) for i in range(0, len(labels), 128)]
  model = task.trainer.model
  # Computes in x's dtype, as the jobs' model does for SynFlow's float64 pass (LeNet fixes its dtype).
  apply_fn = lambda p, x: model.clone(dtype=x.dtype).apply({"params": p}, x, train=False)
  return config, task, states, batches, apply_fn


@pytest.mark.parametrize("criterion", API_CRITERIA)
def test_api_masks_equal_the_prune_jobs_masks_bit_for_bit(digits_lenet, criterion):
  config, task, states, batches, apply_fn = digits_lenet
  config = apply_overrides(config, {"criterion": criterion, "sparsity": 0.9})
  job_masks = runs.prune_states(prune_spec.from_config(config, criterion, density=1.0 - 0.9), task, states)[0].masks
  params = jax.tree.map(lambda x: x[0], states.params)
  extra = {"scorer": config.autos.scorer_dir} if criterion == "autos" else {}
  masks = asj.prune(criterion, params, apply_fn=apply_fn, batches=batches, input_shape=(1, 8, 8, 1),
                    sparsity=0.9, key=jax.random.PRNGKey(0), prunable=masks_lib.DEFAULT_PRUNABLE, **extra)
  chex.assert_trees_all_equal(jax.tree.map(lambda a: np.asarray(a)[0], job_masks), jax.tree.map(np.asarray, masks),
                              custom_message=criterion)


class NnxNet(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 8, (3, 3), rngs=rngs)
    self.norm = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
    self.head = nnx.Linear(8 * 8 * 8, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.norm(self.conv(x)))
    return self.head(x.reshape(x.shape[0], -1))


def nnx_network():
  graphdef, params, rest = nnx.split(NnxNet(nnx.Rngs(0)), nnx.Param, ...)
  return params, lambda p, x: nnx.merge(graphdef, p, rest)(x)


def mlp_network():
  """A plain function of a dict of arrays (no Flax at all)."""
  rng = np.random.default_rng(0)
  params = {"w1": jnp.asarray(rng.normal(size=(64, 32)) / 8, jnp.float32), "b1": jnp.zeros(32),
            "w2": jnp.asarray(rng.normal(size=(32, 10)) / 6, jnp.float32), "b2": jnp.zeros(10)}
  apply_fn = lambda p, x: jax.nn.relu(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
  return params, apply_fn


@pytest.mark.parametrize("network", [nnx_network, mlp_network])
@pytest.mark.parametrize("distribution", ["global", "layerwise", "erk"])
def test_exact_keep_counts_on_nnx_and_plain_function_networks(network, distribution):
  params, apply_fn = network()
  rng = np.random.default_rng(1)
  batches = [(rng.normal(size=(32, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 32)) for _ in range(2)]
  masks = asj.prune("snip", params, apply_fn=apply_fn, batches=batches, sparsity=0.8, key=jax.random.key(3),
                    distribution=distribution)
  expected = masks_lib.keep_counts(asj.init_masks(params), 0.2, distribution)
  kept = [int(m.sum()) for _, m in masks_lib.prunable_items(masks, masks)]
  if distribution == "global":
    assert sum(kept) == expected
  else:
    assert kept == list(expected)
  assert jax.tree.structure(masks) == jax.tree.structure(params)
  scores = asj.score("magnitude", params)
  assert jax.tree.structure(scores) == jax.tree.structure(params)


def test_masked_adam_with_weight_decay_keeps_pruned_entries_exactly_zero():
  params, _ = mlp_network()
  masks = asj.prune("random", params, sparsity=0.7, key=jax.random.key(0))
  params = asj.apply_masks(params, masks)
  tx = asj.masked(optax.adamw(1e-2, weight_decay=0.1), masks)
  state, start = tx.init(params), params
  for i in range(50):
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(i), p.shape), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  for p, p0, m in zip(jax.tree.leaves(params), jax.tree.leaves(start), jax.tree.leaves(masks)):
    m = np.broadcast_to(np.asarray(m), p.shape)
    assert np.all(np.asarray(p)[~m] == 0.0)  # Exactly zero, never revived.
    assert np.all(np.asarray(p)[m] != np.asarray(p0)[m])  # Every kept entry moved.


def test_wrong_or_missing_arguments_name_the_fix():
  params, apply_fn = mlp_network()
  with pytest.raises(ValueError, match="needs the input's shape: pass input_shape="):
    asj.prune("synflow", params, apply_fn=apply_fn, sparsity=0.9)
  with pytest.raises(ValueError, match="reads data: pass batches="):
    asj.prune("snip", params, apply_fn=apply_fn, sparsity=0.9)
  with pytest.raises(ValueError, match="grasp_temprature= is not an option.*did you mean grasp_temperature="):
    asj.score("grasp", params, apply_fn=apply_fn, batches=[(np.zeros((4, 64)), np.zeros(4))],
              grasp_temprature=100.0)
  with pytest.raises(ValueError, match="criterion='snp' is not known.*Did you mean 'snip'"):
    asj.prune("snp", params, sparsity=0.9)
  with pytest.raises(ValueError, match="needs scorer="):
    asj.prune("autos", params, apply_fn=apply_fn, batches=[(np.zeros((4, 64)), np.zeros(4))], sparsity=0.9)
  with pytest.raises(ValueError, match="asj.autos.pretrained\\(name\\)='nope' is not known"):
    asj.autos.pretrained("nope")


def test_a_plugin_criterion_runs_through_configs_prune_py(tmp_path):
  config = apply_overrides(load_config("prune", "lenet_digits"), {
      "imports": ("tests.plugin_criterion",), "criterion": "plugin_squared_magnitude", "sparsity": 0.9,
      "train.epochs": 1})
  results = jobs.run(config, str(tmp_path / "wd"))
  run = results["runs"][0]
  assert run["kept_per_seed"][0] == int(np.floor(0.1 * run["total"] + 0.5))
  assert run["test_accuracy"] > 0.15  # Chance is 0.1 (one epoch).
  bad = apply_overrides(load_config("prune", "lenet_digits"), {"imports": ("no_such_module",),
                                                                 "criterion": "snip", "sparsity": 0.5})
  with pytest.raises(Exception, match="config.imports names 'no_such_module'"):
    jobs.validate(bad)
  assert not os.path.exists(tmp_path / "never")


@pytest.mark.skipif(not asj.autos.pretrained_names(), reason="no pretrained scorer in this checkout")
def test_the_pretrained_scorer_prunes_lenet_on_digits_to_the_exact_count(digits_lenet):
  _, _, states, batches, apply_fn = digits_lenet
  params = jax.tree.map(lambda x: x[0], states.params)
  scorer = asj.autos.pretrained("lenet_mnist")
  assert scorer.info["g0_reduction"] == "mean"
  for distribution in ("global", "erk"):
    masks = asj.prune("autos", params, apply_fn=apply_fn, batches=batches, sparsity=0.95, scorer=scorer,
                      distribution=distribution)
    expected = masks_lib.keep_counts(asj.init_masks(params), 0.05, distribution)
    kept = [int(m.sum()) for _, m in masks_lib.prunable_items(masks, masks)]
    assert (sum(kept) == expected) if distribution == "global" else (kept == list(expected))


def test_the_prune_your_own_model_example_runs_and_prints_its_table():
  import subprocess
  import sys
  from tests.conftest import REPO
  proc = subprocess.run([sys.executable, "examples/prune_your_own_model.py", "--epochs=1"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
  assert {"dense", "random", "magnitude", "snip", "grasp", "synflow"} <= set(rows)
  kept = {name: int(line.split("|")[2]) for name, line in rows.items() if name != "criterion"}
  assert len({v for k, v in kept.items() if k != "dense"}) == 1  # Every criterion kept exactly k.


@pytest.mark.slow  # ~15 s; CI's tests/test_install.py runs the snippet in the wheel's venv and compares the same.
def test_the_readme_snippet_prints_what_the_readme_shows(capsys):
  """The README's API snippet, run here as written: its output is the README's block, line for line."""
  from tests.test_install import readme_snippet, readme_snippet_output
  exec(compile(readme_snippet(), "README.md snippet", "exec"), {})
  assert capsys.readouterr().out == readme_snippet_output()


class SnippetNet(nn.Module):
  """The README's snippet model."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(16, (3, 3))(x))
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


@pytest.mark.slow  # ~35 s cold (14 criteria compiled): CI's 12-minute budget; run with -m slow.
def test_every_registered_criterion_prunes_a_user_model_to_the_exact_count():
  net = SnippetNet()
  params = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  rng = np.random.default_rng(0)
  batches = [(rng.normal(size=(40, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 40))]
  common = dict(apply_fn=lambda p, x: net.apply({"params": p}, x), batches=batches, input_shape=(1, 8, 8, 1),
                init_fn=lambda k: net.init(k, jnp.zeros((1, 8, 8, 1)))["params"], sparsity=0.9,
                key=jax.random.key(1))
  total = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params) if p.ndim >= 2)
  fast = {"synflow": 10, "synflow_l2": 10, "px": 10, "ntk_sap": 4, "force": 4}  # Fewer rounds: CI time.
  from autosparse_jax import criteria
  builtin = [n for n in asj.criterion_names() if criteria.get(n).score.__module__.startswith("autosparse_jax")]
  for criterion in builtin:  # Not the test plugins other tests register (one gives NaN on purpose).
    if criterion == "survival":  # Replays an IRP run of a registered model: the jobs' criterion only.
      with pytest.raises(ValueError, match="score datasets of an IRP job"):
        asj.prune(criterion, params, **common)
      continue
    extra = {"scorer": asj.autos.pretrained("lenet_mnist")} if criterion == "autos" else {}
    if criterion in fast:
      extra["rounds"] = fast[criterion]
    masks = asj.prune(criterion, params, **common, **extra)
    kept = sum(int(m.sum()) for _, m in masks_lib.prunable_items(masks, masks))
    assert kept == int(np.floor(0.1 * total + 0.5)), criterion
  with pytest.raises(ValueError, match="pass init_fn="):
    asj.prune("ntk_sap", params, apply_fn=common["apply_fn"], input_shape=(1, 8, 8, 1), sparsity=0.9)
