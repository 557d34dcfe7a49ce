"""Masked training: pruned weights stay zero, optimizers match PyTorch's update rules,
vmapped seeds equal separate runs, mid-epoch resume and reruns are bit-identical; the prune job
is the one way to prune at init and train."""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from autosparse_jax import prune_spec, keys, training
from autosparse_jax.lab import engine, jobs, runs
from autosparse_jax.errors import ConfigError
from autosparse_jax.lab.jobs import prune as prune_job
from autosparse_jax.lab.workdir import Workdir
from tests.conftest import small_config


def _states(config, task, sparsity=0.8, criterion="random"):
  states = engine.init_states(config, task)
  return runs.prune_states(prune_spec.from_config(config, criterion, density=1.0 - sparsity), task, states)[0] if sparsity else states


def _steps(task, states, n):
  fn = training.jit_epoch(task.trainer, n)
  return fn(states, task.train_images, task.train_labels)[0]


def test_pruned_weights_stay_exactly_zero_through_momentum_and_weight_decay():
  config = small_config(**{"train.weight_decay": 5e-3, "train.lr": 0.1})
  task = engine.build_task(config)
  states = _states(config, task, sparsity=0.9)
  start = jax.tree.map(np.asarray, states.params)
  for _ in range(5):  # 5 epochs x 16 steps.
    states = _steps(task, states, task.trainer.steps_per_epoch)
  changed = 0
  for name in ("Dense_0", "Dense_1", "Dense_2"):
    m = np.asarray(states.masks[name]["kernel"])
    w = np.asarray(states.params[name]["kernel"])
    assert (~m).sum() > 0 and np.all(w[~m] == 0.0)
    changed += np.sum(w[m] != start[name]["kernel"][m])
    trace = np.asarray(states.opt_state[1][0].trace[name]["kernel"])  # SGD momentum buffer.
    assert np.all(trace[~m] == 0.0)
  assert changed > 0.9 * sum(np.asarray(states.masks[n]["kernel"]).sum() for n in ("Dense_0", "Dense_1", "Dense_2"))


def _reference_torch_sgd(p, grads, lr, momentum, wd, nesterov):
  """torch.optim.SGD (dampening 0) written out in numpy."""
  buf = None
  for g in grads:
    d = g + wd * p
    buf = d if buf is None else momentum * buf + d
    p = p - lr * ((d + momentum * buf) if nesterov else buf)
  return p


def _reference_torch_adam(p, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
  """torch.optim.Adam with weight_decay (L2 added to the gradient) in numpy."""
  m = v = 0
  for t, g in enumerate(grads, 1):
    d = g + wd * p
    m = b1 * m + (1 - b1) * d
    v = b2 * v + (1 - b2) * d * d
    p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
  return p


@pytest.mark.parametrize("optimizer,nesterov", [("sgd", True), ("sgd", False), ("adam", False)])
def test_optimizer_matches_pytorch_update_rule(optimizer, nesterov):
  cfg = ml_collections.ConfigDict(dict(optimizer=optimizer, lr=0.1, momentum=0.9, nesterov=nesterov,
                                       weight_decay=0.01, lr_drop_epochs=(), lr_drop_factor=0.1))
  tx = training.make_optimizer(cfg, steps_per_epoch=10)
  rng = np.random.default_rng(0)
  p0 = rng.standard_normal(5)
  grads = [rng.standard_normal(5) for _ in range(6)]
  p, state = jnp.asarray(p0), tx.init(jnp.asarray(p0))
  for g in grads:
    u, state = tx.update(jnp.asarray(g), state, p)
    p = p + u
  want = (_reference_torch_sgd(p0, grads, 0.1, 0.9, 0.01, nesterov) if optimizer == "sgd"
          else _reference_torch_adam(p0, grads, 0.1, 0.01))
  np.testing.assert_allclose(np.asarray(p), want, rtol=1e-5, atol=1e-6)


def test_learning_rate_drops_at_epoch_boundaries():
  cfg = ml_collections.ConfigDict(dict(optimizer="sgd", lr=1.0, momentum=0.0, nesterov=False,
                                       weight_decay=0.0, lr_drop_epochs=(2, 3), lr_drop_factor=0.2))
  tx = training.make_optimizer(cfg, steps_per_epoch=5)
  p, state, steps = jnp.zeros(()), tx.init(jnp.zeros(())), []
  for _ in range(20):
    u, state = tx.update(jnp.ones(()), state, p)
    steps.append(-float(u))
  np.testing.assert_allclose(steps, [1.0] * 10 + [0.2] * 5 + [0.04] * 5, rtol=1e-6)


def test_vmapped_seeds_equal_separate_runs_bit_for_bit():
  config = small_config(num_seeds=3, seed=4, **{"train.optimizer": "adam", "train.lr": 1e-3})
  task = engine.build_task(config)
  together = _steps(task, _states(config, task), 2 * task.trainer.steps_per_epoch)
  for i in range(3):
    alone_cfg = small_config(num_seeds=1, seed=4 + i, **{"train.optimizer": "adam", "train.lr": 1e-3})
    alone = _steps(task, _states(alone_cfg, task), 2 * task.trainer.steps_per_epoch)
    for a, b in zip(jax.tree.leaves(together), jax.tree.leaves(alone)):
      np.testing.assert_array_equal(np.asarray(a)[i], np.asarray(b)[0])
  # Different seeds really are different networks and data orders.
  assert not np.array_equal(together.params["Dense_0"]["kernel"][0], together.params["Dense_0"]["kernel"][1])


@pytest.mark.slow  # ~55 s on a cold CI machine (conv nets on XLA:CPU); CI's 12-minute budget.
def test_vmapped_conv_seeds_match_separate_runs_to_float_tolerance():
  # XLA lowers a conv vmapped over per-seed kernels to a grouped conv, whose sums run in
  # another order than the single conv: ~1e-7 relative per conv, which BatchNorm over a
  # batch of 8 amplifies to ~1e-5 after two steps; not bit for bit. (~40 s: compiles.)
  config = small_config(num_seeds=2, model="resnet18", width=1 / 16, **{
      "data.synthetic.image_shape": (8, 8, 3), "data.synthetic.num_train": 64, "train.batch_size": 8})
  task = engine.build_task(config)
  task = dataclasses.replace(task, trainer=dataclasses.replace(
      task.trainer, spec=dataclasses.replace(task.trainer.spec, augment=True)))
  together = _steps(task, _states(config, task), 2)
  alone = _steps(task, _states(small_config(num_seeds=1, seed=1, model="resnet18", width=1 / 16, **{
      "data.synthetic.image_shape": (8, 8, 3), "data.synthetic.num_train": 64,
      "train.batch_size": 8}), task), 2)
  for a, b in zip(jax.tree.leaves(together.params), jax.tree.leaves(alone.params)):
    np.testing.assert_allclose(np.asarray(a)[1], np.asarray(b)[0], rtol=1e-3, atol=1e-4)


def test_mid_epoch_resume_sees_the_same_batches():
  config = small_config()
  task = engine.build_task(config)
  spe = task.trainer.steps_per_epoch
  straight = _steps(task, _states(config, task), spe)
  split = _steps(task, _steps(task, _states(config, task), 5), spe - 5)
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(split)):
    np.testing.assert_array_equal(a, b)


def test_same_config_same_bits_and_training_learns():
  config = small_config(**{"train.epochs": 3})
  task = engine.build_task(config)
  s1 = _steps(task, _states(config, task, sparsity=0), 3 * task.trainer.steps_per_epoch)
  s2 = _steps(task, _states(config, task, sparsity=0), 3 * task.trainer.steps_per_epoch)
  for x, y in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
    np.testing.assert_array_equal(x, y)
  metrics = training.jit_evaluate(task.trainer)(s1, *task.eval_arrays)
  assert float(metrics["accuracy"][0]) > 0.3  # 10 classes: chance is 0.1.


def test_scan_and_per_step_loops_train_the_same_network():
  config = small_config()
  task = engine.build_task(config)
  spe = task.trainer.steps_per_epoch
  scanned = _steps(task, _states(config, task), spe)
  stepped, one_step = _states(config, task), training.jit_epoch(task.trainer, 1, unroll=True)
  for _ in range(spe):
    stepped = one_step(stepped, task.train_images, task.train_labels)[0]
  assert int(stepped.step[0]) == spe
  for a, b in zip(jax.tree.leaves(scanned.params), jax.tree.leaves(stepped.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_conv_net_job_runs_one_step_per_call_on_cpu(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("AUTOSPARSE_PLAIN_OUTPUT", "0")  # Progress lines as on a terminal.
  config = small_config(model="resnet18", width=1 / 16, criterion="magnitude", sparsity=0.5, **{
      "data.synthetic.image_shape": (8, 8, 3), "data.synthetic.num_train": 32,
      "data.synthetic.num_test": 16, "train.batch_size": 8, "train.epochs": 1,
      "train.log_every_steps": 2})
  task = engine.build_task(config)
  assert training.resolve_loop("auto", task.trainer, "cpu") == "python"
  assert training.resolve_loop("auto", task.trainer, "gpu") == "scan"
  results = prune_job.run(config, str(tmp_path / "wd"))
  assert np.isfinite(results["test_loss"]) and abs(results["density"] - 0.5) < 1e-3
  assert "epoch 1 step 2/4" in capsys.readouterr().out  # Progress inside the epoch.


def test_train_seed_keeps_theta_0_and_changes_the_run():
  config = small_config(num_seeds=2)
  other = small_config(num_seeds=2, train_seed=7)
  task = engine.build_task(config)
  a, b = engine.init_states(config, task), engine.init_states(other, task)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # Same theta_0 per seed.
  np.testing.assert_array_equal(np.asarray(b.key),
                                np.stack([jax.random.PRNGKey(7), jax.random.PRNGKey(8)]))
  np.testing.assert_array_equal(np.asarray(keys.run_keys(config)), np.asarray(a.key))
  step = jax.jit(jax.vmap(lambda s: task.trainer.train_steps(s, task.train_images, task.train_labels, 1)[0]))
  ta, tb = step(a), step(b)  # Another data order: the first step already differs.
  assert not np.array_equal(np.asarray(jax.tree.leaves(ta.params)[0]), np.asarray(jax.tree.leaves(tb.params)[0]))


def test_the_prune_job_is_the_one_way_to_prune_at_init_and_train(tmp_path):
  """One sparsity: the prune job trains the networks the train job trained when it took a criterion
  (theta_0 -> prune_states -> run_training: the code it ran) and reports them at the top level of
  results.json as it did; a train config with a criterion is refused, naming the prune job."""
  config = small_config(job="prune", criterion="magnitude", sparsity=0.9, num_seeds=2)
  results = jobs.run(config, str(tmp_path / "prune"))
  task = engine.build_task(config)
  states, _ = runs.prune_states(prune_spec.from_config(config, "magnitude", density=1.0 - 0.9), task, engine.init_states(config, task))
  reports = engine.density_reports(states)
  _, last = engine.run_training(config, task, states, Workdir("/nonexistent", config, is_writer=False))
  assert results["test_accuracy_seeds"]["per_seed"] == [float(a) for a in last["test_accuracy"]]
  assert results["test_loss"] == float(np.mean(last["test_loss"]))
  assert results["kept_per_seed"] == [r["kept"] for r in reports] and results["seeds"] == [0, 1]
  assert results["runs"][0]["test_loss"] == results["test_loss"]
  with pytest.raises(ConfigError, match="the train job trains dense networks only; prune at init and train "
                                        "with the prune job"):
    jobs.run(small_config(criterion="magnitude", sparsity=0.9), str(tmp_path / "train"))
  assert not (tmp_path / "train").exists()
