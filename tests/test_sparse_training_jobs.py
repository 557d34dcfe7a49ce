"""Masks that change while training, in the jobs: inside the compiled epoch (the update's lax.cond stays a
branch under vmap), exact counts after every update, resume after SIGKILL bit for bit, bad input named."""
import json
import os
import signal

import jax
import numpy as np
import pytest

from autosparse_jax import dynamic_sparsity as ds, masks as masks_lib, prune_spec, training
from autosparse_jax.errors import ConfigError
from autosparse_jax.lab import engine, jobs, runs
from tests.conftest import apply_overrides, load_config, small_config
from tests.test_irp import run_until
from tests.test_preemption import command, finish, results


def rigl_config(**overrides):
  return small_config(**{
      "job": "prune", "criterion": "random", "sparsity": 0.8, "num_seeds": 2, "prune.distribution": "erk",
      "sparse_training.method": "rigl", "sparse_training.update_every_steps": 3,
      "sparse_training.end_fraction": 1.0, "train.epochs": 2, **overrides})


@pytest.mark.parametrize("method", ["rigl", "set", "gmp"])
def test_every_update_keeps_exact_per_layer_counts_and_pruned_weights_at_zero(method):
  config = rigl_config(**({"sparse_training.method": method} if method != "gmp" else {
      "sparse_training.method": "gmp", "sparse_training.initial_sparsity": 0.5, "prune.distribution": "layerwise"}))
  spec = prune_spec.from_config(config)
  task = engine.build_task(config)
  record = prune_spec.resolve_sparse_training(spec.sparse_training, engine.total_steps(config, task))
  states, _ = runs.prune_states(runs.init_spec(spec), task, engine.init_states(config, task))
  one = jax.tree.map(lambda m: np.asarray(m[0]), states.masks)
  step = jax.jit(training.over_seeds(lambda s, i, l, f: task.trainer.train_steps(
      s, i, l, 1, record=record, first_step=f), (0, None, None, None)))
  before = states.masks
  changed = False
  for t in range(engine.total_steps(config, task)):
    states, _ = step(states, task.train_images, task.train_labels, np.int32(t))
    for seed in range(2):
      masks = jax.tree.map(lambda m: np.asarray(m[seed]), states.masks)
      params = jax.tree.map(lambda p: np.asarray(p[seed]), states.params)
      counts = [int(m.sum()) for _, m in masks_lib.prunable_items(masks, masks)]
      if method == "gmp":  # Layerwise: each layer on its own cubic, at its scheduled count.
        table = ds.gmp_keep_counts(record, one)
        done = np.searchsorted(ds.update_steps(record), t, side="right")
        expected = table[done - 1] if done else [int(m.sum()) for _, m in masks_lib.prunable_items(one, one)]
        assert counts == list(expected), (t, counts)
      else:
        assert counts == [int(m.sum()) for _, m in masks_lib.prunable_items(one, one)], t
      for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)):
        assert np.all(p[~np.broadcast_to(m, p.shape)] == 0), t  # Pruned weights exactly 0.
    changed |= any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(states.masks)))
    before = states.masks
  assert changed


def test_the_update_runs_under_lax_cond_inside_the_vmapped_epoch():
  config = rigl_config()
  task = engine.build_task(config)
  record = prune_spec.resolve_sparse_training(prune_spec.from_config(config).sparse_training, 50)
  states = engine.init_states(config, task)
  epoch = training.jit_epoch(task.trainer, 3, record=record)
  text = epoch.lower(states, task.train_images, task.train_labels, np.int32(0)).as_text()
  assert "stablehlo.case" in text or "stablehlo.if" in text  # A branch, not a select of both.


def test_the_prune_job_trains_rigl_and_reports_its_training_flops(tmp_path):
  config = rigl_config()
  results_ = jobs.run(config, str(tmp_path / "rigl"))
  row = results_["runs"][0]
  assert row["sparse_training"] == "rigl" and row["density"] == pytest.approx(0.2, abs=1e-3)
  assert row["training_flops_total"] < row["training_flops_total_dense"]
  steps = 2 * engine.build_task(config).trainer.steps_per_epoch
  static = 3 * row["inference_flops"] * config.train.batch_size * steps
  assert row["training_flops_total"] > static  # RigL's dense gradients on its update steps.


def test_a_rigl_prune_job_killed_mid_schedule_resumes_bit_identical(tmp_path):
  extra = ["--config.train.epochs=2", "--config.criterion=random", "--config.sparsity=0.9",
           "--config.sparse_training.method=rigl", "--config.sparse_training.update_every_steps=4",
           "--config.sparse_training.end_fraction=1.0"]
  config = "configs/prune.py:lenet_digits"
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  finish(command(config, straight, *extra))
  out, code = run_until(command(config, killed, *extra), "random@0.9 epoch 1 step 15")
  assert code == -signal.SIGKILL, out
  resumed = finish(command(config, killed, *extra))
  assert "resuming from its checkpoint" in resumed.stdout
  assert results(straight) == results(killed)


@pytest.mark.parametrize("overrides, message", [
    ({"sparse_training.drop_fraction": 1.5}, "config.sparse_training.drop_fraction=1.5 must be in \\(0, 1\\)"),
    ({"sparse_training.update_every_steps": 0}, "config.sparse_training.update_every_steps=0 must be"),
    ({"sparse_training.start_step": 10, "sparse_training.end_step": 5, "sparse_training.end_fraction": -1.0},
     "config.sparse_training.end_step=5 is before start_step=10"),
    ({"sparse_training.end_step": 10**6, "sparse_training.end_fraction": -1.0},
     "config.sparse_training.end_step=1000000 is beyond the run"),
    ({"sparse_training.end_step": 10}, "config.sparse_training.end_step=10 and end_fraction=1.0 are both given"),
    ({"sparse_training.method": "gmp", "sparse_training.initial_sparsity": 0.95},
     "config.sparse_training.initial_sparsity=0.95 must lie in"),
    ({"prune.structure": "2:4", "sparsity": 0.5}, "cannot keep config.prune.structure='2:4'"),
    ({"criterion": "none"}, "trains sparse from its first step: set config.criterion"),
    ({"sparse_training.method": "sgd"}, "config.sparse_training.method='sgd'"),
])
def test_bad_sparse_training_settings_are_refused_naming_the_field(tmp_path, overrides, message):
  config = rigl_config(**overrides)
  with pytest.raises(ConfigError, match=message):
    jobs.run(config, str(tmp_path / "wd"))
  assert not os.path.exists(tmp_path / "wd" / "results.json")


def test_irp_refuses_sparse_training():
  config = apply_overrides(load_config("irp", "lenet_digits"), {"sparse_training.method": "rigl"})
  with pytest.raises(ConfigError, match="sparse_training"):
    jobs.validate(config)


def test_a_sweep_compares_gmp_from_dense_snip_with_rigl_and_static_snip_in_one_table(tmp_path):
  config = apply_overrides(load_config("pai_sweep", "lenet_digits"), {
      "sweep.criteria": ("snip", "snip_rigl", "gmp"), "sparsities": (0.8, 0.9), "num_seeds": 1, "train.epochs": 2,
      "sweep.dense": False, "width": 0.25,
      "sweep.variants": {"snip_rigl": {"criterion": "snip", "sparse_training": {
                             "method": "rigl", "update_every_steps": 5, "end_fraction": 1.0}},
                         "gmp": {"criterion": "none", "sparse_training": {"method": "gmp", "update_every_steps": 5}}}})
  results_ = jobs.run(config, str(tmp_path / "sweep"))
  assert "accuracy_vs_training_flops.png" in results_["files"]
  with open(tmp_path / "sweep" / "table.md") as f:
    training_table = f.read().split("training FLOPs of the run relative to dense")[1].split("\n\n", 2)[1]
  assert "| gmp | gmp |" in training_table and "| snip | static |" in training_table
  with open(tmp_path / "sweep" / "results.jsonl") as f:
    rows = [json.loads(line) for line in f]
  by = {(r["criterion"], r["sparsity"]): r for r in rows}
  assert {r["sparse_training"] for r in rows} == {"static", "rigl", "gmp"}
  for (label, sparsity), r in by.items():
    assert r["density"] == pytest.approx(1 - sparsity, abs=2e-3), label  # Each method ends at its target.
    assert 0 < r["training_flops_total"] < r["training_flops_total_dense"]
  assert by[("gmp", 0.9)]["method"] == "none" and by[("gmp", 0.9)]["networks_in_program"] == 1  # One per target.
  assert by[("snip_rigl", 0.8)]["networks_in_program"] == 2  # RigL's schedule is the same at both sparsities.
  # GMP starts dense: it trains with more FLOPs than static SNIP at the same final sparsity.
  assert by[("gmp", 0.9)]["training_flops_total"] > by[("snip", 0.9)]["training_flops_total"]
