"""The main job end to end, through the CLI exactly as `make quickstart` runs it (fewer epochs/rounds),
and (slow) the README's quickstart table against what the full command writes."""
import json
import os
import re
import subprocess
import sys

import pytest

from autosparse_jax.lab import report
from tests.conftest import REPO

# The README command with smaller sizes; every stage and criterion still runs.
SMALLER = ["--config.irp_snip.irp.rounds=3", "--config.irp_snip.train.epochs=1",
           "--config.irp_lth.irp.rounds=3", "--config.irp_lth.train.epochs=1",
           "--config.autos.train.epochs=1", "--config.sweep.train.epochs=1"]


def test_quickstart_runs_every_stage_and_writes_the_table_and_figures(tmp_path):
  workdir = str(tmp_path / "quickstart")
  command = [sys.executable, "-m", "autosparse_jax.lab.main", "--config=configs/quickstart.py",
             f"--workdir={workdir}", *SMALLER]
  stats_file = str(tmp_path / "compile_stats.json")
  proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, AUTOSPARSE_COMPILE_STATS=stats_file))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  # Each XLA program of the whole pipeline is built once (the stages share their task's programs):
  # JAX's persistent-cache records name every executable by the hash of its HLO (compile_stats).
  stats = json.load(open(stats_file))
  assert stats["programs"] > 50 and stats["built_twice"] == {}, stats
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert results["stages"] == ["irp_snip", "irp_lth", "autos", "sweep"]
  sweep_dir = results["stage_workdirs"]["sweep"]
  for name in ("table.md", "table.csv", "accuracy_vs_sparsity.png", "layer_density.png", "results.jsonl"):
    assert os.path.getsize(os.path.join(sweep_dir, name)) > 0, name
  assert os.path.getsize(os.path.join(workdir, "survival_score.png")) > 0
  with open(os.path.join(sweep_dir, "table.md")) as f:
    table = report.parse_markdown(f.read())
  criteria = ("random", "magnitude", "snip", "grasp", "synflow", "npb", "autos", "snip_iter", "lth")
  assert {c for c, _ in table} == {"dense", *criteria}
  assert {s for c, s in table if c != "dense"} == {0.8, 0.9, 0.95}
  assert "| autos |" in proc.stdout  # The table is printed at the end.
  assert len(proc.stdout.splitlines()) < 200, len(proc.stdout.splitlines())  # Sparse when not a terminal.
  said = proc.stdout + proc.stderr  # No TFDS banner (nothing is downloaded), no absl INFO lines, no compile line.
  assert "Downloading and preparing" not in said and not re.search(r"^I\d{4} ", said, re.M), said[-3000:]
  assert "XLA programs" not in said
  assert os.listdir(os.path.join(workdir, "autos", "checkpoints")) == ["1"]  # The scorer and its last checkpoint.
  # The stages were wired: the sweep used this run's scorer and IRP datasets.
  sweep_config = json.load(open(os.path.join(sweep_dir, "config.json")))
  assert sweep_config["autos"]["scorer_dir"] == os.path.join(workdir, "autos", "scorer")
  assert all(d.startswith(os.path.join(workdir, "irp_lth"))
             for d in sweep_config["sweep"]["variants"]["lth"]["survival"]["score_datasets"])
  # Running the command again finds every stage finished and recomputes nothing.
  again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert again.returncode == 0 and "already holds results.json" in again.stdout
  assert "epoch 1/" not in again.stdout


def readme_quickstart_table():
  """The table block the README shows under `make quickstart`."""
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  block = re.search(r"```\n(test accuracy \(%\), mean ± std over 2 seeds\n.*?)```", text, re.S)
  assert block, "README.md lost its quickstart table"
  return block.group(1)


@pytest.mark.slow
def test_readme_quickstart_table_is_what_make_quickstart_writes(tmp_path):
  """Deterministic on one machine: the README's numbers are the command's, digit for digit."""
  workdir = str(tmp_path / "quickstart")
  proc = subprocess.run([sys.executable, "-m", "autosparse_jax.lab.main", "--config=configs/quickstart.py",
                         f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(os.path.join(workdir, "sweep", "table.md")) as f:
    written = report.parse_markdown(f.read())
  assert report.parse_markdown(readme_quickstart_table()) == written
