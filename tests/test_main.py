"""The CLI end to end: configs, workdir files, real MNIST accuracy, errors without tracebacks."""
import json
import os
import subprocess
import sys

import pytest

import numpy as np

from autosparse_jax.lab import config_tools, main as main_lib
from autosparse_jax.lab.workdir import read_jsonl
from autosparse_jax.errors import ConfigError
from tests.conftest import REPO, load_config

CONFIGS = config_tools.PACKAGED_CONFIGS


def cli(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "autosparse_jax.lab.main", *args], capture_output=True,
                        text=True, cwd=REPO, timeout=timeout)


@pytest.mark.slow  # The real-MNIST sweep and prune tests below cover this in CI.
def test_real_mnist_lenet_one_epoch_reaches_95_percent(prepared_data_dir, tmp_path):
  config = load_config("train", "lenet_mnist")
  config.train.epochs = 1
  config.data.data_dir = prepared_data_dir("mnist")
  results = main_lib.run(config, str(tmp_path / "wd"))
  assert results["test_accuracy"] >= 0.95, results
  lines = (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 1


def test_cli_writes_config_metrics_results_and_is_idempotent(tmp_path):
  wd = tmp_path / "digits"
  args = [f"--config={CONFIGS}/prune.py:lenet_digits", f"--workdir={wd}", "--config.train.epochs=3",
          "--config.num_seeds=2", "--config.criterion=magnitude", "--config.sparsity=0.9"]
  proc = cli(*args)
  assert proc.returncode == 0, proc.stderr
  assert "epoch 3/3" in proc.stdout
  config = json.loads((wd / "config.json").read_text())
  assert config["train"]["epochs"] == 3 and config["criterion"] == "magnitude"
  metrics = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [m["epoch"] for m in metrics] == [1, 2, 3] and len(metrics[0]["test_accuracy"]) == 2
  results = json.loads((wd / "results.json").read_text())
  assert results["seeds"] == [0, 1] and abs(results["density"] - 0.1) < 1e-4
  assert results["test_accuracy"] > 0.5
  before = (wd / "results.json").read_bytes()
  again = cli(*args)
  assert again.returncode == 0 and "not running again" in again.stdout
  assert (wd / "results.json").read_bytes() == before


def test_different_config_on_existing_workdir_is_refused(tmp_path):
  wd = tmp_path / "wd"
  assert cli(f"--config={CONFIGS}/train.py:lenet_digits", f"--workdir={wd}",
             "--config.train.epochs=1").returncode == 0
  before = (wd / "results.json").read_bytes()
  proc = cli(f"--config={CONFIGS}/train.py:lenet_digits", f"--workdir={wd}", "--config.train.epochs=2",
             "--config.seed=3")
  assert proc.returncode == 2
  assert "holds a run with a different config (seed: 0 -> 3; train.epochs: 1 -> 2)" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert (wd / "results.json").read_bytes() == before


def test_bad_input_at_the_cli_exits_2_with_the_message_and_no_traceback(tmp_path):
  """The CLI's exit path for bad input (the whole table runs in-process: test_reliability.py)."""
  proc = cli(f"--config={CONFIGS}/train.py:lenet_digits", f"--workdir={tmp_path / 'wd'}",
             "--config.model=resnet19")
  assert proc.returncode == 2, proc.stderr
  assert "config.model='resnet19' is not known" in proc.stderr and "Did you mean 'resnet18'?" in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "wd").exists()  # Nothing written for a rejected job.


VALID = ["--config.model=lenet_300_100", "--config.train.epochs=1"]  # Valid overrides of the prune config.


@pytest.mark.parametrize("args, message", [
    (VALID + ["--config.train.epoch=3"],
     "--config.train.epoch: config.train.epoch is not a config field. Did you mean --config.train.epochs?"),
    (VALID + ["--config.num_seeds=1.5"], "--config.num_seeds=1.5 must be an integer >= 1 "),
    (["--config.num_seeds=1.5"], "--config.num_seeds=1.5 must be an integer >= 1 "),
    (VALID + ["--config.irp.rounds=3"],
     "--config.irp.rounds: this config has no field irp.rounds (it belongs to the config of: irp)"),
    (VALID + ["--config.tensorboard=maybe"], "--config.tensorboard=maybe must be True or False "),
    (VALID + ["--config.sparsities=(0.5,"], "--config.sparsities=(0.5, must be a list of numbers in (0, 1) "),
    (VALID + ["--workdri=/tmp/x"], "Unknown command line flag 'workdri'"),
    (["--config.num_seeds", "two"], "--config.num_seeds=two must be an integer >= 1 "),
], ids=["typo", "float_for_int", "float_for_int_alone", "other_jobs_field", "bool_maybe", "list_garbage",
        "unknown_flag", "space_separated"])
def test_a_flag_that_fails_to_parse_is_named_with_the_reason_in_one_line(tmp_path, args, message):
  proc = cli("--config=configs/prune.py:lenet_digits", *args, f"--workdir={tmp_path / 'wd'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr[-2000:]
  assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
  assert not (tmp_path / "wd").exists()


def test_packaged_configs_run_by_name_with_valid_overrides(tmp_path):
  wd = tmp_path / "wd"
  proc = cli("--config=prune:lenet_digits", *VALID, "--config.num_seeds=1", "--config.criterion=magnitude",
             "--config.sparsity=0.5", f"--workdir={wd}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  config = json.loads((wd / "config.json").read_text())
  assert config["job"] == "prune" and config["train"]["epochs"] == 1 and config["sparsity"] == 0.5
  assert json.loads((wd / "results.json").read_text())["runs"][0]["test_accuracy"] > 0.5


def test_a_config_that_is_neither_a_file_nor_a_packaged_name_gets_the_packaged_one_suggested(tmp_path):
  """Outside a checkout configs/prune.py is no file: the packaged prune is named (and paper/ names work)."""
  proc = subprocess.run([sys.executable, "-m", "autosparse_jax.lab.main", "--config=configs/prune.py:lenet_mnist",
                         f"--workdir={tmp_path / 'wd'}"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                        env=dict(os.environ, PYTHONPATH=REPO))  # This checkout's package, from another cwd.
  assert proc.returncode == 2 and "Did you mean --config=prune:lenet_mnist?" in proc.stderr, proc.stderr
  assert "paper/table1" in proc.stderr and "Traceback" not in proc.stderr
  assert main_lib.with_packaged_configs(["prog", "--config", "paper/table1", "--config=irp:x"])[2:] == [
      os.path.join(CONFIGS, "paper", "table1.py"), f"--config={os.path.join(CONFIGS, 'irp.py')}:x"]


def test_every_config_loads_and_documents_its_command():
  from autosparse_jax.lab.recipes import RECIPES
  for name in config_tools.packaged_config_names():
    if "/" not in name:  # paper/: tests/test_paper_configs.py
      text = open(os.path.join(CONFIGS, f"{name}.py")).read()
      assert f"--config=configs/{name}.py" in text, f"{name}: docstring lacks its command"
  for recipe in RECIPES:
    config = load_config("train", recipe)
    assert config.job == "train" and config.train.epochs >= 1
  with pytest.raises(ConfigError, match="Did you mean 'lenet_mnist'"):
    load_config("train", "lenet_mnst")


@pytest.mark.parametrize("criterion", ["snip", pytest.param("random", marks=pytest.mark.slow),
                                       pytest.param("magnitude", marks=pytest.mark.slow),
                                       pytest.param("grasp", marks=pytest.mark.slow),
                                       pytest.param("synflow", marks=pytest.mark.slow),
                                       pytest.param("npb", marks=pytest.mark.slow)])
def test_every_criterion_prunes_real_mnist_lenet_to_98_percent(prepared_data_dir, tmp_path, criterion):
  """The prune job (configs/prune.py) end to end; CI runs snip here and every criterion in the sweep below."""
  config = load_config("prune", "lenet_mnist")
  config.criterion, config.sparsity = criterion, 0.98
  config.train.epochs = 1
  config.prune.num_batches = 8  # 1024 pruning examples: enough to score; the whole set is minutes for some.
  config.data.data_dir = prepared_data_dir("mnist")
  results = main_lib.run(config, str(tmp_path / "wd"))
  run = results["runs"][0]
  assert abs(run["kept_per_seed"][0] - 0.02 * run["total"]) <= 1  # Within one weight.
  assert run["test_accuracy"] > 0.2  # Chance is 0.1.
  assert run["effective_paths"][0] > 0 and run["effective_params"][0] <= run["kept_per_seed"][0]
  assert set(run["layer_density"]) == {"Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel"}


@pytest.mark.slow  # ~80 s cold on 2 cores (NPB's programmes, NTK-SAP's re-inits on MNIST): CI's budget.
def test_every_criterion_prunes_real_mnist_lenet_to_98_percent_in_one_sweep(prepared_data_dir, tmp_path):
  """Every jittable and NPB criterion through the same pruning path as configs/prune.py, in one sweep
  job (one task, one compiled training step: CI's time budget)."""
  config = load_config("pai_sweep", "lenet_mnist")
  newer = ("random", "magnitude", "snip", "grasp", "synflow", "npb", "grasp_abs", "synflow_l2", "ntk_sap", "px",
           "prospr", "force", "fisher")
  config.sweep.criteria, config.sparsities, config.sweep.dense = newer, (0.98,), False
  for name in ("synflow", "synflow_l2", "px"):  # 10 of their 100 rounds: CI's time budget.
    config.sweep.variants[name] = {"criterion": name, "prune": {"rounds": 10}}
  config.num_seeds, config.train.epochs, config.prune.num_batches = 1, 1, 8
  config.data.data_dir = prepared_data_dir("mnist")
  jobs_run = main_lib.run(config, str(tmp_path / "wd"))
  rows = {r["criterion"]: r for r in read_jsonl(os.path.join(str(tmp_path / "wd"), "results.jsonl"))}
  assert set(rows) == set(newer) and jobs_run["sparsities"] == [0.98]
  for criterion, row in rows.items():
    assert row["kept"] == int(np.floor(0.02 * row["total"] + 0.5)), criterion  # Exact density.
    assert row["test_accuracy"] > 0.2, criterion  # Chance is 0.1.
    assert row["effective_paths"] > 0, criterion


def test_the_compilation_cache_follows_xdg_unless_moved_and_jax_own_setting_wins(monkeypatch):
  import jax
  import autosparse_jax
  monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
  assert autosparse_jax.default_cache_dir() == "/xdg/autosparse_jax/xla"
  monkeypatch.setenv("XDG_CACHE_HOME", "")
  assert autosparse_jax.default_cache_dir() == os.path.expanduser("~/.cache/autosparse_jax/xla")
  updates = []
  monkeypatch.setattr(jax.config, "update", lambda name, value: updates.append((name, value)))
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("AUTOSPARSE_COMPILATION_CACHE", "/moved")
  autosparse_jax._enable_compilation_cache()
  assert ("jax_compilation_cache_dir", "/moved") in updates
  updates.clear()
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/jax_own")
  autosparse_jax._enable_compilation_cache()
  assert updates == []  # JAX reads its own variable: left alone.


def test_a_job_run_twice_in_fresh_processes_compiles_its_programs_once(tmp_path):
  """The persistent compilation cache (autosparse_jax/__init__.py), where XDG_CACHE_HOME puts it: the second
  process adds nothing."""
  cache = tmp_path / "xdg" / "autosparse_jax" / "xla"
  env = {k: v for k, v in os.environ.items() if k not in ("AUTOSPARSE_COMPILATION_CACHE", "JAX_COMPILATION_CACHE_DIR")}
  env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
  args = [f"--config={CONFIGS}/prune.py:lenet_digits", "--config.train.epochs=1", "--config.criterion=snip",
          "--config.sparsity=0.9"]
  runs, stats = [], []
  for name in ("first", "second"):
    stats_file = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, "-m", "autosparse_jax.lab.main", *args, f"--workdir={tmp_path / name}"],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(env, AUTOSPARSE_COMPILE_STATS=str(stats_file)))
    assert proc.returncode == 0, proc.stderr
    runs.append(sorted(os.listdir(cache)))
    stats.append(json.loads(stats_file.read_text()))
  assert len(runs[0]) >= 3 and runs[1] == runs[0]  # Every program of the second run came from the cache.
  # JAX's cache-hit records (compile_stats): the first process compiled each program once, the second none.
  assert stats[0]["compiled"] == stats[0]["programs"] >= 3 and not stats[0]["built_twice"], stats[0]
  assert stats[1]["compiled"] == 0 and stats[1]["from_cache"] == stats[1]["programs"] == stats[0]["programs"]
  first, second = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("first", "second"))
  assert first["test_loss"] == second["test_loss"]  # Cached executables compute the same bits.
