"""Sweeps: a vmapped grid equals separate runs; tables equal a direct computation; resume; IRP masks."""
import json
import os

import chex
import jax
import numpy as np
import pytest

from autosparse_jax.lab import jobs, report
from autosparse_jax.lab.engine import build_task, init_states, run_training
from autosparse_jax.errors import ConfigError
from autosparse_jax.lab.jobs import sweep
from autosparse_jax import prune_spec
from autosparse_jax.lab.runs import prune_states
from autosparse_jax.lab.workdir import read_jsonl
from autosparse_jax.lab.workdir import Workdir
from tests.conftest import apply_overrides, load_config, small_config

SPARSITIES = (0.5, 0.8)


def sweep_config(**overrides):
  config = small_config(job="sweep", num_seeds=2)
  config.sweep = load_config("pai_sweep").sweep
  config.sweep.criteria = ("snip", "random")
  config.sparsities = SPARSITIES
  return apply_overrides(config, overrides)


def started(path, config):
  workdir = Workdir(path, config)
  workdir.start()
  return workdir


def separate_run(task, criterion, sparsity, seed, path):
  """One standalone network (num_seeds=1), trained by the same functions as the train job."""
  one = sweep_config(seed=seed, num_seeds=1)
  states, _ = prune_states(prune_spec.from_config(one, criterion, density=1.0 - (sparsity)), task, init_states(one, task))
  return run_training(one, task, states, started(path, one))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sweep"))
  results = jobs.run(sweep_config(), workdir)
  return workdir, results, read_jsonl(os.path.join(workdir, report.ROWS))


def test_vmapped_grid_of_2_sparsities_x_2_seeds_equals_the_four_separate_runs(tmp_path):
  config = sweep_config()
  task = build_task(config)
  cells = [(p, s) for p in SPARSITIES for s in (0, 1)]
  specs = {p: (prune_spec.from_config(config, "snip", density=1.0 - p), None) for p in SPARSITIES}
  grid, info = sweep.grid_states(config, task, specs, cells, [0, 1])
  grid, last = run_training(config, task, grid, started(str(tmp_path / "grid"), config))
  single_task = build_task(config)  # Fresh compiled programs for the standalone runs.
  for i, (p, s) in enumerate(cells):
    assert (info[i]["sparsity"], info[i]["seed"]) == (p, s)
    alone, alone_last = separate_run(single_task, "snip", p, s, str(tmp_path / f"{p}_{s}"))
    for name in ("params", "masks", "opt_state", "batch_stats"):
      chex.assert_trees_all_equal(jax.tree.map(lambda x: np.asarray(x)[i], getattr(grid, name)),
                                  jax.tree.map(lambda y: np.asarray(y)[0], getattr(alone, name)),
                                  custom_message=f"{name} of {(p, s)}")
    assert last["test_accuracy"][i] == alone_last["test_accuracy"][0]
    assert last["test_loss"][i] == alone_last["test_loss"][0]


def test_sweep_rows_cover_the_grid_and_differ_between_cells(swept):
  workdir, results, rows = swept
  keys = sorted((r["criterion"], r["sparsity"], r["seed"]) for r in rows)
  assert keys == sorted([("dense", 0.0, s) for s in (0, 1)] +
                        [(c, p, s) for c in ("snip", "random") for p in SPARSITIES for s in (0, 1)])
  for r in rows:
    expected = 1.0 - r["sparsity"]
    assert abs(r["density"] - expected) <= 1.0 / r["total"], r  # Exact top-k counts.
  snip = {(r["sparsity"], r["seed"]): r["test_accuracy"] for r in rows if r["criterion"] == "snip"}
  assert len(set(snip.values())) > 1  # Not one network's number copied into every cell.
  for name in ("table.md", "table.csv", "accuracy_vs_sparsity.png", "layer_density.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert results["files"]["table.md"] == os.path.join(workdir, "table.md")


def test_markdown_and_csv_tables_equal_a_direct_computation_from_results_jsonl(swept):
  workdir, _, _ = swept
  with open(os.path.join(workdir, report.ROWS)) as f:
    rows = [json.loads(line) for line in f]
  with open(os.path.join(workdir, "table.md")) as f:
    table = report.parse_markdown(f.read())
  groups = {}
  for r in rows:
    groups.setdefault((r["criterion"], r["sparsity"]), []).append(100 * r["test_accuracy"])
  assert set(table) == set(groups)
  for key, values in groups.items():
    mean, std = table[key]
    assert mean == pytest.approx(np.mean(values), abs=0.005 + 1e-9), key
    assert std == pytest.approx(np.std(values), abs=0.005 + 1e-9), key
  with open(os.path.join(workdir, "table.csv")) as f:
    lines = f.read().splitlines()[1:]
  for line in lines:
    criterion, sparsity, n, mean, std, _ = line.split(",")
    values = np.asarray(groups[(criterion, float(sparsity))]) / 100
    assert int(n) == len(values)
    assert float(mean) == pytest.approx(values.mean(), abs=1e-6)
    assert float(std) == pytest.approx(values.std(), abs=1e-6)


def test_figures_give_each_criterion_one_look_and_the_cost_table_merges_equal_rows(swept, tmp_path):
  _, _, rows = swept
  names = report.criteria_order(report.aggregate(rows))
  styles = report.criterion_styles(names + ["extra_1", "extra_2"])
  looks = [(str(v["color"]), v["marker"]) for k, v in styles.items() if k != report.DENSE]
  assert len(set(looks)) == len(looks) and styles[report.DENSE]["color"] == "black"
  # Every criterion of one sparsity costs the same: no FLOPs figure, and one cost row per sparsity.
  same = [dict(r, inference_flops=1e6 * (1 - r["sparsity"]), bytes={"dense": 100, "bitmask": 50})
          for r in rows]
  (tmp_path / "same").mkdir()
  (tmp_path / "differ").mkdir()
  out = report.write_sweep_report(same, str(tmp_path / "same"))
  assert "accuracy_vs_flops.png" not in out["files"] and "layer_density.png" in out["files"]
  costs = out["markdown"].split("inference FLOPs per example and bytes")[1]
  assert "What each column compares" in costs and "values + bitmask" in costs
  merged = [line.split(" | ")[0] for line in costs.splitlines() if line.startswith("| ") and "criteria" not in line]
  assert [name for name in merged if name != "| dense"] == ["| snip, random"] * len(SPARSITIES)
  differ = [dict(r, inference_flops=1e6 * (1 - r["sparsity"]) * (2 if r["criterion"] == "snip" else 1))
            for r in rows]
  assert "accuracy_vs_flops.png" in report.write_sweep_report(differ, str(tmp_path / "differ"))["files"]


def test_a_rerun_trains_only_the_missing_networks_and_reproduces_them(swept, tmp_path, capsys):
  workdir, _, rows = swept
  copy = str(tmp_path / "resumed")
  os.makedirs(copy)
  kept = [r for r in rows if r["criterion"] != "random"]
  with open(os.path.join(workdir, "config.json")) as src, open(os.path.join(copy, "config.json"), "w") as dst:
    dst.write(src.read())
  with open(os.path.join(copy, report.ROWS), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
    f.write('{"criterion": "random", "spars')  # A write torn by a kill.
  jobs.run(sweep_config(), copy)
  out = capsys.readouterr().out
  assert f"resuming, {len(kept)} networks already" in out
  assert "sweep: snip:" not in out and "sweep: random: 4 networks" in out
  again = {(r["criterion"], r["sparsity"], r["seed"]): r["test_accuracy"]
           for r in read_jsonl(os.path.join(copy, report.ROWS))}
  assert again == {(r["criterion"], r["sparsity"], r["seed"]): r["test_accuracy"] for r in rows}


def test_sweep_config_errors_name_the_field():
  for overrides, message in [
      ({"sweep.criteria": ()}, "config.sweep.criteria is empty"),
      ({"sweep.criteria": ("snip", "snip")}, "repeats a name"),
      ({"sparsities": (0.5, 1.0)}, "config.sparsities="),
      ({"sparsities": ()}, "config.sparsities is empty"),
      ({"sweep.criteria": ("snipp",)}, "config.sweep.criteria='snipp' is not known.*Did you mean 'snip'"),
      ({"sweep.criteria": ("lth",)}, "needs config.survival.score_datasets"),
      ({"sweep.max_networks_per_program": -2}, "max_networks_per_program=-2"),
  ]:
    with pytest.raises(ConfigError, match=message):
      sweep.validate(sweep_config(**overrides))


def test_the_four_config_gaps_are_refused_before_anything_runs_naming_the_field():
  """A pipeline stage's unread field, an unused variant's bad value, a variant's own sparsities and
  config.sparsity on a sweep: each refused by the checks that run before the workdir is touched."""
  from autosparse_jax.lab import schema
  from autosparse_jax.lab.jobs import pipeline
  table1, defaults = load_config("paper/table1"), load_config("paper/table1")
  table1.irp_snip.sparsity = 0.5
  assert schema.unread_fields(table1, defaults) == [
      "config.irp_snip.sparsity=0.5 is not read by the irp job: it reads config.irp_snip.irp.final_density (now "
      "0.01) instead; set that (e.g. --config.irp_snip.irp.final_density=...)."]
  swept = sweep_config(sparsity=0.5)
  [message] = schema.unread_fields(swept, sweep_config())
  assert message.startswith("config.sparsity=0.5 is not read by the sweep job: it reads config.sparsities (now")
  unused = sweep_config(**{"sweep.variants": {"bad": {"criterion": "snip", "prune": {"distribution": "erkk"}}}})
  with pytest.raises(ConfigError, match="config.sweep.variants.bad.prune.distribution"):
    sweep.validate(unused)  # Not in sweep.criteria, checked all the same.
  own = sweep_config(**{"sweep.variants": {"dense90": {"criterion": "snip", "sparsities": (0.9,)}},
                        "sweep.criteria": ("dense90",)})
  with pytest.raises(ConfigError, match="config.sweep.variants.dense90.sparsities: a variant cannot set its own"):
    sweep.validate(own)
  stage = load_config("paper/table1")
  stage.sweep.sweep.variants = {"x": {"criterion": "snip", "sparsities": (0.9,)}}
  with pytest.raises(ConfigError, match="config.sweep.sweep.variants.x.sparsities"):
    pipeline.validate(stage)  # Up front, before the stages before it run.


def test_survival_criterion_replays_the_final_irp_masks_and_refuses_other_inits(tmp_path):
  from tests.test_irp import final_checkpoint, irp_config
  irp = irp_config(**{"num_seeds": 2})
  results = jobs.run(irp, str(tmp_path / "irp"))
  ckpt, _ = final_checkpoint(str(tmp_path / "irp"))
  config = apply_overrides(load_config("pai_sweep", "lenet_digits"), {
      "width": irp.width, "num_seeds": 2, "survival.score_datasets": tuple(reversed(results["score_dataset_dir"]))})
  task = build_task(config)
  dense = init_states(config, task)
  final_sparsity = 1.0 - float(irp.irp.final_density)
  pruned, _ = prune_states(prune_spec.from_config(config, "survival", density=1.0 - (final_sparsity)), task, dense)
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, pruned.masks), ckpt["train"]["masks"])  # Both seeds, by theta_0.
  between, _ = prune_states(prune_spec.from_config(config, "survival", density=1.0 - (final_sparsity - 0.2)), task, dense)
  for fine, coarse in zip(jax.tree.leaves(pruned.masks), jax.tree.leaves(between.masks)):
    assert np.all(np.asarray(coarse) >= np.asarray(fine))  # Nested: the sparser IRP mask inside.
  other = apply_overrides(config, {"seed": 7, "num_seeds": 1})
  with pytest.raises(ConfigError, match="was made from this network's theta_0"):
    prune_states(prune_spec.from_config(other, "survival", density=1.0 - (0.9)), task, init_states(other, task))


def test_auto_networks_per_program_runs_conv_nets_one_at_a_time_on_cpu():
  import types
  conv, mlp = (types.SimpleNamespace(trainer=types.SimpleNamespace(has_conv=lambda v=v: v)) for v in (True, False))
  config = sweep_config()
  assert config.sweep.max_networks_per_program == -1  # The default: auto.
  on_cpu = jax.default_backend() == "cpu"
  assert sweep.networks_per_program(config, conv) == (1 if on_cpu else 0)
  assert sweep.networks_per_program(config, mlp) == 0
  config.sweep.max_networks_per_program = 3
  assert sweep.networks_per_program(config, conv) == 3
