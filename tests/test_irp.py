"""IRP: kill-and-resume bit identity, nested masks on schedule, vmapped seeds, datasets, CCC."""
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from autosparse_jax import prune_spec, masks as masks_lib, score_dataset
from autosparse_jax.lab import main as main_lib, preemption
from autosparse_jax.errors import ConfigError
from autosparse_jax.lab.engine import build_task, init_states
from autosparse_jax.lab.jobs import ccc, irp
from tests.conftest import apply_overrides, load_config

# LeNet-300-100 on the embedded digits: 22 steps per epoch; chunks of 5 steps
# (log_every_steps) so checkpoints land inside epochs.
IRP_ARGS = ["--config.irp.rounds=3", "--config.train.epochs=2", "--config.train.log_every_steps=5",
            "--config.irp.checkpoint_every_steps=5", "--config.width=0.5", "--config.checkpoint_min_seconds=0"]


def irp_config(**overrides):
  config = load_config("irp", "lenet_digits")
  config.irp.rounds, config.train.epochs, config.width = 3, 1, 0.5
  return apply_overrides(config, overrides)


def cli(workdir, *extra):
  return [sys.executable, "-m", "autosparse_jax.lab.main", "--config=configs/irp.py:lenet_digits",
          f"--workdir={workdir}", *IRP_ARGS, *extra]


def final_checkpoint(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                           meta=ocp.args.JsonRestore()))
  manager.close()
  return restored.state, restored.meta


def run_until(command, marker, timeout=300, at_marker=None, sig=signal.SIGKILL):
  """Starts `command`, sends it `sig` (SIGKILL) once a stdout line contains `marker`; returns the
  output (to its end) and the exit code.

  at_marker(proc): called first, with the job stopped (SIGSTOP: alive, holding its workdir).
  """
  proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=os.path.dirname(os.path.dirname(__file__)),
                          env=dict(os.environ, AUTOSPARSE_PLAIN_OUTPUT="0"))  # Step lines: kill points.
  lines = []
  try:
    for line in proc.stdout:
      lines.append(line)
      if marker in line:
        if at_marker is not None:
          proc.send_signal(signal.SIGSTOP)
          at_marker(proc)
        proc.send_signal(sig)
        if at_marker is not None and sig != signal.SIGKILL:
          proc.send_signal(signal.SIGCONT)
        lines.append(proc.stdout.read())
        break
    proc.wait(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
  return "".join(lines), proc.returncode


def test_sigkilled_and_interrupted_irp_resumes_bit_identical_to_an_uninterrupted_run(tmp_path):
  root = os.path.dirname(os.path.dirname(__file__))
  straight = str(tmp_path / "straight")
  done = subprocess.run(cli(straight), capture_output=True, text=True, timeout=600, cwd=root)
  assert done.returncode == 0, done.stdout + done.stderr
  killed = str(tmp_path / "killed")
  refused = []

  def second_writer(first):
    """A second run on the workdir the first one holds: refused within seconds, naming the first."""
    start = time.time()
    second = subprocess.run(cli(killed), capture_output=True, text=True, timeout=300, cwd=root)
    refused.append(time.time() - start)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"is in use by another run (pid {first.pid} on host " in second.stderr, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr

  # Kill inside round 0 (mid-epoch, between checkpoints; a second writer refused first).
  out, code = run_until(cli(killed), "round 0 epoch 1 step 15", at_marker=second_writer)
  assert code == -signal.SIGKILL, out
  assert refused and refused[0] < 60, refused  # Its start-up (imports) and the checks: no compute.
  # Ctrl-C inside round 1: it stops at the next chunk with a checkpoint, says so in one line, exit 130.
  out, code = run_until(cli(killed), "round 1 epoch 2 step 10", sig=signal.SIGINT)
  assert code == preemption.INTERRUPT_EXIT_CODE, out
  tail = out.strip().splitlines()[-1]
  assert re.fullmatch(r"interrupted at (epoch 2 of round 1|the end of round 1): run the same command to resume",
                      tail), out
  assert "Traceback" not in out and "preempted" not in out, out
  resumed = subprocess.run(cli(killed), capture_output=True, text=True, timeout=600, cwd=root)
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert "resuming from checkpoint" in resumed.stdout + resumed.stderr
  (a, meta_a), (b, meta_b) = final_checkpoint(straight), final_checkpoint(killed)
  assert meta_a["level"] == meta_b["level"] == 3
  chex.assert_trees_all_equal(a, b)  # The whole state, bit for bit.
  data_a, _ = score_dataset.load_score_dataset(f"{straight}/scores/seed_0/autosparse_scores/1.0.0")
  data_b, _ = score_dataset.load_score_dataset(f"{killed}/scores/seed_0/autosparse_scores/1.0.0")
  for field in score_dataset.FIELDS:
    np.testing.assert_array_equal(data_a[field], data_b[field])


@pytest.mark.parametrize("criterion", ["magnitude", "snip"])
def test_masks_are_nested_and_each_round_keeps_exactly_its_schedule(criterion):
  config = irp_config(criterion=criterion, **{"irp.rounds": 4, "irp.schedule": "geometric"})
  task = build_task(config)
  state = jax.jit(jax.vmap(lambda s: irp.initial_state(prune_spec.data_options_from_config(config), task, s)))(init_states(config, task))
  prune = jax.jit(jax.vmap(lambda s, c, r: irp.prune_and_rewind(prune_spec.irp_spec(config), task, s, c, r, drop_zero_scores=bool(config.irp.prune_zero_scores))[0], (0, None, None)))
  step = jax.jit(jax.vmap(lambda st: task.trainer.train_steps(st, task.train_images, task.train_labels, 10)[0]))
  plan = irp.levels(prune_spec.irp_spec(config), jax.tree.map(lambda m: m[0], state.train.masks), bool(config.irp.train_first))
  seed0 = lambda tree: jax.tree.map(lambda x: np.asarray(x[0]), tree)
  total = sum(m.size for _, m in masks_lib.prunable_items(seed0(state.train.masks), seed0(state.train.masks)))
  previous = state.train.masks
  for level in plan:
    state = prune(state, jnp.asarray(level.counts), level.round)
    masks = seed0(state.train.masks)
    kept = sum(int(m.sum()) for _, m in masks_lib.prunable_items(masks, masks))
    assert kept == round(level.density * total)
    for old, new in zip(jax.tree.leaves(previous), jax.tree.leaves(state.train.masks)):
      assert not np.any(np.asarray(new) & ~np.asarray(old))  # Nested.
    # Rewound: surviving weights are theta_0, pruned ones 0.
    for p, p0, m in zip(jax.tree.leaves(state.train.params), jax.tree.leaves(state.init_params),
                        jax.tree.leaves(state.train.masks)):
      np.testing.assert_array_equal(np.asarray(p), np.asarray(p0) * np.asarray(m) if m.ndim > 1 else np.asarray(p))
    previous = state.train.masks
    state = state.replace(train=step(state.train))
  survived = np.concatenate([v.reshape(-1) for _, v in
                             masks_lib.prunable_items(seed0(state.survived), seed0(state.train.masks))])
  assert np.bincount(survived, minlength=5)[4] == round(plan[-1].density * total)


def test_a_terminal_gets_one_bar_for_all_rounds_and_no_epoch_lines(tmp_path, monkeypatch, capsys):
  """On a terminal: one live bar over every level of the run (its time left is the run's), no per-epoch
  or per-prune lines (metrics.jsonl keeps every epoch), no compile summary; one line per round."""
  from autosparse_jax import console
  bars = []
  monkeypatch.setattr(console, "bars_on", lambda: True)
  monkeypatch.setattr(console, "bar", lambda description, total, completed=0: bars.append((description, total))
                      or len(bars))
  config = irp_config(**{"irp.rounds": 2})
  main_lib.run(config, str(tmp_path / "wd"))
  out = capsys.readouterr().out
  steps = build_task(config).trainer.steps_per_epoch * int(config.train.epochs)
  assert bars == [(f"irp {config.criterion}: round 0", 2 * steps)], bars  # Its label follows the round.
  assert not re.search(r"epoch \d", out) and "(target " not in out, out
  assert out.count(" done: test ") == 2 and "XLA programs" not in out, out
  from autosparse_jax.lab.workdir import read_jsonl
  epochs = [r for r in read_jsonl(str(tmp_path / "wd" / "metrics.jsonl")) if "epoch" in r]
  assert len(epochs) == 2 * int(config.train.epochs)


def test_three_vmapped_seeds_equal_three_separate_runs(tmp_path):
  together = main_lib.run(irp_config(num_seeds=3, **{"irp.rounds": 2}), str(tmp_path / "s3"))
  for i in range(3):
    alone = main_lib.run(irp_config(seed=i, **{"irp.rounds": 2}), str(tmp_path / f"s{i}"))
    a, _ = score_dataset.load_score_dataset(together["score_dataset_dir"][i])
    b, _ = score_dataset.load_score_dataset(alone["score_dataset_dir"])
    for field in score_dataset.FIELDS:
      np.testing.assert_array_equal(a[field], b[field])
    # Final params bit for bit; accuracies to float32 rounding of the eval division.
    params_3 = final_checkpoint(str(tmp_path / "s3"))[0]["train"]["params"]
    params_1 = final_checkpoint(str(tmp_path / f"s{i}"))[0]["train"]["params"]
    chex.assert_trees_all_equal(jax.tree.map(lambda x: np.asarray(x)[i], params_3),
                                jax.tree.map(lambda y: np.asarray(y)[0], params_1))
    assert together["rounds"][-1]["test_accuracy"][i] == pytest.approx(
        alone["rounds"][-1]["test_accuracy"][0], rel=1e-6)
  first, _ = score_dataset.load_score_dataset(together["score_dataset_dir"][0])
  second, _ = score_dataset.load_score_dataset(together["score_dataset_dir"][1])
  assert not np.array_equal(first["survival"], second["survival"])  # Seeds differ.
  assert not np.array_equal(first["g0"], second["g0"])


def test_irp_refuses_a_different_config_on_its_workdir(tmp_path):
  main_lib.run(irp_config(**{"irp.rounds": 1}), str(tmp_path / "wd"))
  with pytest.raises(ConfigError, match="irp.rounds: 1 -> 2"):
    main_lib.run(irp_config(**{"irp.rounds": 2}), str(tmp_path / "wd"))


def test_score_dataset_round_trip_is_exact_without_tensorflow(tmp_path):
  rng = np.random.default_rng(0)
  shapes = [(3, 3, 4, 5), (40000,), (7, 3)]  # 40000 spans several slices.
  theta = [rng.normal(size=s).astype(np.float32) for s in shapes]
  g0 = [rng.normal(size=s).astype(np.float32) * 1e-3 for s in shapes]
  survival = [rng.integers(0, 21, size=s).astype(np.int32) for s in shapes]
  out = score_dataset.export_score_dataset(str(tmp_path), ["a", "b", "c"], theta, g0, survival,
                                           {"model": "toy", "seed": 3})
  arrays, meta = score_dataset.load_score_dataset(out)
  assert meta["model"] == "toy" and meta["num_weights"] == sum(int(np.prod(s)) for s in shapes)
  for layer, t, g, s in zip(arrays["by_layer"], theta, g0, survival):
    np.testing.assert_array_equal(layer["theta0"], t)
    np.testing.assert_array_equal(layer["g0"], g)
    np.testing.assert_array_equal(layer["survival"], s)
  flat = np.concatenate([s.reshape(-1) for s in survival]).astype(np.float64)
  np.testing.assert_allclose(arrays["score"], (flat - flat.min()) / (flat.max() - flat.min()), rtol=1e-6)
  assert "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow") is None
  with pytest.raises(ConfigError, match="not overwriting"):
    score_dataset.export_score_dataset(str(tmp_path), ["a"], theta[:1], g0[:1], survival[:1], {})
  np.testing.assert_array_equal(arrays["by_layer"][0]["theta0"], theta[0])  # Untouched.


def test_ccc_matches_its_definition_and_its_limits():
  rng = np.random.default_rng(0)
  x = rng.normal(size=100000)
  y = 0.5 * x + rng.normal(size=x.size) + 0.3
  r = np.corrcoef(x, y)[0, 1]
  expected = 2 * r * x.std() * y.std() / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
  assert ccc.concordance(x, y) == pytest.approx(expected, rel=1e-12)
  assert ccc.concordance(x, x) == pytest.approx(1.0)
  assert abs(ccc.concordance(x, rng.normal(size=x.size))) < 0.01
  assert ccc.concordance(x, x + 1.0) < 1.0  # Shifts are penalised (Pearson would say 1).


def test_late_rewinding_restarts_later_rounds_from_the_weights_at_step_k(tmp_path):
  config = irp_config(**{"irp.rounds": 2, "irp.rewind_step": 10, "train.log_every_steps": 5})
  main_lib.run(config, str(tmp_path / "wd"))
  saved, _ = final_checkpoint(str(tmp_path / "wd"))
  # Independently: prune at init, train 10 steps in the same 5-step chunks, take those weights.
  task = build_task(config)
  state = jax.jit(jax.vmap(lambda s: irp.initial_state(prune_spec.data_options_from_config(config), task, s)))(init_states(config, task))
  plan = irp.levels(prune_spec.irp_spec(config), jax.tree.map(lambda m: m[0], state.train.masks), bool(config.irp.train_first))
  state = jax.jit(jax.vmap(lambda s, c: irp.prune_and_rewind(prune_spec.irp_spec(config), task, s, c, 0, drop_zero_scores=bool(config.irp.prune_zero_scores))[0], (0, None)))(
      state, jnp.asarray(plan[0].counts))
  five = jax.jit(jax.vmap(lambda st: task.trainer.train_steps(st, task.train_images, task.train_labels, 5)[0]))
  at_k = five(five(state.train))
  assert int(at_k.step[0]) == 10
  chex.assert_trees_all_equal(saved["rewind_params"], jax.tree.map(np.asarray, at_k.params))
  for x, y in zip(jax.tree.leaves(saved["rewind_params"]), jax.tree.leaves(saved["init_params"])):
    assert not np.array_equal(np.asarray(x), np.asarray(y))


def test_prune_zero_scores_switch_also_prunes_zero_scores_like_the_original():
  for compat in (False, True):
    config = irp_config(criterion="magnitude", **{"irp.prune_zero_scores": compat})
    task = build_task(config)
    state = jax.jit(jax.vmap(lambda s: irp.initial_state(prune_spec.data_options_from_config(config), task, s)))(init_states(config, task))
    # Zero the whole first layer: more zero scores (9600) than round 0 prunes (a third of 17600).
    zeroed = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.zeros_like(x) if masks_lib.path_name(p) == "Dense_0/kernel" else x,
        state.train.params)
    state = state.replace(train=state.train.replace(params=zeroed))
    plan = irp.levels(prune_spec.irp_spec(config), jax.tree.map(lambda m: m[0], state.train.masks), bool(config.irp.train_first))
    pruned = jax.jit(jax.vmap(lambda s, c: irp.prune_and_rewind(prune_spec.irp_spec(config), task, s, c, 0, drop_zero_scores=bool(config.irp.prune_zero_scores))[0], (0, None)))(
        state, jnp.asarray(plan[0].counts))
    masks = jax.tree.map(lambda m: np.asarray(m[0]), pruned.train.masks)
    kept = {name: int(m.sum()) for name, m in masks_lib.prunable_items(masks, masks)}
    nonzero = 17600 - 9600
    if compat:  # Exactly the non-zero weights survive: the original's over-pruning.
      assert kept["Dense_0/kernel"] == 0 and sum(kept.values()) == nonzero
    else:  # Exact top-k: the schedule's count, ties among the zeros broken by index.
      assert sum(kept.values()) == plan[0].counts > nonzero
