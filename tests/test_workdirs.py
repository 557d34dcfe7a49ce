"""Workdirs nobody can corrupt: one writer per workdir, damaged files named with their fix (nothing
changed on disk), every write atomic (killed at random instants, a full disk on each writer)."""
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import autosparse_jax as asj
from autosparse_jax import artefacts, score_dataset
from autosparse_jax.lab import jobs
from autosparse_jax.errors import ConfigError, OutputError
from autosparse_jax.lab.workdir import WorkdirBusy, WorkdirLock
from tests.conftest import apply_overrides, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree_hash(path):
  """One digest of every file's relative path and bytes under `path`, but the lock file's record of its
  last holder (a refused run held the lock while it checked the files)."""
  digest = hashlib.sha256()
  for root, dirs, files in sorted(os.walk(path)):
    dirs.sort()
    for name in sorted(files):
      if name == ".lock":
        continue
      full = os.path.join(root, name)
      digest.update(os.path.relpath(full, path).encode())
      with open(full, "rb") as f:
        digest.update(f.read())
  return digest.hexdigest()


def cli(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "autosparse_jax.lab.main", *args], capture_output=True, text=True,
                        cwd=REPO, timeout=timeout)


# ---- One writer per workdir.

def test_a_second_lock_on_a_workdir_is_refused_naming_the_holder(tmp_path):
  first = WorkdirLock(str(tmp_path / "wd")).acquire()
  try:
    with pytest.raises(WorkdirBusy, match=f"in use by another run \\(pid {os.getpid()} on host "):
      WorkdirLock(str(tmp_path / "wd")).acquire()  # Another open file description: refused like a process.
  finally:
    first.release()
  WorkdirLock(str(tmp_path / "wd")).acquire().release()  # Released: free again.


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  wd = str(tmp_path / "wd")
  code = ("import sys, time; from autosparse_jax.lab.workdir import WorkdirLock; WorkdirLock(sys.argv[1]).acquire(); "
          "print('locked', flush=True); time.sleep(60)")
  holder = subprocess.Popen([sys.executable, "-c", code, wd], stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env=dict(os.environ, AUTOSPARSE_COMPILATION_CACHE="off"))
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirBusy, match=f"pid {holder.pid} "):
      WorkdirLock(wd).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    WorkdirLock(wd).acquire().release()  # The kernel dropped the dead holder's lock.
  finally:
    if holder.poll() is None:
      holder.kill()
    holder.stdout.close()


def test_restart_does_not_move_a_workdir_a_live_run_holds(tmp_path):
  wd = str(tmp_path / "wd")
  lock = WorkdirLock(wd).acquire()
  try:
    from autosparse_jax.lab import main as main_lib
    with pytest.raises(WorkdirBusy, match="--restart does not move a running workdir"):
      main_lib.set_aside_workdir(wd)
    assert os.path.exists(os.path.join(wd, ".lock"))
  finally:
    lock.release()


def test_a_run_refused_before_writing_leaves_no_workdir(tmp_path):
  config = apply_overrides(load_config("irp", "lenet_digits"), {"irp.rewind_step": 10 ** 6})
  with pytest.raises(ConfigError, match="rewind_step"):
    jobs.run(config, str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()


def test_without_working_locks_the_policy_decides(tmp_path, monkeypatch):
  import fcntl

  def no_locks(fd, op):
    raise OSError(errno.ENOLCK, "No locks available")
  monkeypatch.setattr(fcntl, "flock", no_locks)
  with pytest.raises(ConfigError, match="without working file locks .*--config.workdir_lock=warn"):
    WorkdirLock(str(tmp_path / "a")).acquire()
  WorkdirLock(str(tmp_path / "b"), policy="warn").acquire().release()


# ---- Damaged files named with their fix, nothing changed on disk.

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished prune job's workdir (config.json, results.json, runs.jsonl, metrics.jsonl) and its config."""
  config = apply_overrides(load_config("prune", "lenet_digits"), {"train.epochs": 1, "sparsity": 0.5,
                                                                   "width": 0.25, "tensorboard": False})
  wd = str(tmp_path_factory.mktemp("finished") / "wd")
  jobs.run(config, wd)
  return config, wd


FAULTS = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "wrong type": lambda text: json.dumps([json.loads(text)]),
    "missing key": lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "job"}),
    "another version": lambda text: json.dumps(dict(json.loads(text), job=7)),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("artefact", ["config.json", "results.json"])
def test_a_damaged_workdir_file_is_named_with_its_fix_and_nothing_changes(finished, tmp_path, artefact, fault):
  config, source = finished
  wd = str(tmp_path / "wd")
  shutil.copytree(source, wd)
  path = os.path.join(wd, artefact)
  with open(path) as f:
    text = f.read()
  with open(path, "w") as f:
    f.write(FAULTS[fault](text))
  before = tree_hash(wd)
  with pytest.raises(ConfigError) as refused:
    jobs.run(config, wd)
  message = str(refused.value)
  assert path in message and "nothing was changed" in message and "--restart" in message, message
  assert "\n" not in message and "Traceback" not in message
  assert tree_hash(wd) == before


def test_the_cli_says_it_in_one_line_with_exit_2(finished, tmp_path):
  _, source = finished
  wd = str(tmp_path / "wd")
  shutil.copytree(source, wd)
  with open(os.path.join(wd, "results.json"), "a") as f:
    f.write("{")  # Trailing garbage: not JSON any more.
  before = tree_hash(wd)
  proc = cli("--config=prune:lenet_digits", f"--workdir={wd}", "--config.train.epochs=1", "--config.sparsity=0.5",
             "--config.width=0.25", "--config.tensorboard=False")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "results.json is damaged" in proc.stderr and "Traceback" not in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert tree_hash(wd) == before


def test_a_jsonl_log_loses_a_torn_last_line_but_not_a_torn_middle_one(tmp_path, capsys):
  path = str(tmp_path / "runs.jsonl")
  with open(path, "w") as f:
    f.write('{"a": 1}\n{"a": 2}\n{"a": ')
  assert artefacts.read_jsonl(path) == [{"a": 1}, {"a": 2}]
  assert "dropping the cut-short last line" in capsys.readouterr().out
  with open(path, "w") as f:
    f.write('{"a": 1}\n{"a\n{"a": 3}\n')
  with pytest.raises(artefacts.DamagedFile, match=f"{path} is damaged \\(line 2 of 3 is not valid JSON\\)"):
    artefacts.read_jsonl(path)


def test_a_prune_job_with_a_damaged_runs_log_is_refused(finished, tmp_path):
  config, source = finished
  wd = str(tmp_path / "wd")
  shutil.copytree(source, wd)
  os.remove(os.path.join(wd, "results.json"))  # Unfinished: the job reads runs.jsonl to skip finished work.
  with open(os.path.join(wd, "runs.jsonl")) as f:
    line = f.read()
  with open(os.path.join(wd, "runs.jsonl"), "w") as f:
    f.write(line[:20] + "\n" + line)
  before = tree_hash(wd)
  with pytest.raises(artefacts.DamagedFile, match="runs.jsonl is damaged \\(line 1 of 2"):
    jobs.run(config, wd)
  assert tree_hash(wd) == before


SCORER_FAULTS = {
    "truncated": lambda info, text: text[: len(text) // 3],
    "empty": lambda info, text: "",
    "wrong type": lambda info, text: json.dumps(info["features"]),
    "missing key": lambda info, text: json.dumps({k: v for k, v in info.items() if k != "backbone"}),
    "another version": lambda info, text: json.dumps(dict(info, backbone="transformer")),
    "other backbone": lambda info, text: json.dumps(dict(info, backbone="vgg19")),
    "other width": lambda info, text: json.dumps(dict(info, width=2 * info["width"])),
    "other features": lambda info, text: json.dumps(dict(info, features=["theta0"], mean=[0.0], std=[1.0])),
}


@pytest.mark.parametrize("fault", sorted(SCORER_FAULTS))
def test_a_damaged_or_mismatched_scorer_is_named_before_any_compute(tmp_path, fault):
  source = os.path.join(REPO, "autosparse_jax", "autos", "pretrained", "lenet_mnist")
  directory = str(tmp_path / "scorer")
  shutil.copytree(source, directory)
  path = os.path.join(directory, "scorer.json")
  with open(path) as f:
    text = f.read()
  with open(path, "w") as f:
    f.write(SCORER_FAULTS[fault](json.loads(text), text))
  before = tree_hash(directory)
  with pytest.raises(ValueError) as refused:  # The API's error (a ConfigError for the jobs: exit 2).
    asj.autos.load_scorer(directory)
  message = str(refused.value)
  assert path in message and "autos_train" in message, message
  if fault.startswith("other"):
    assert "variables" in message and "describe different networks" in message
  assert tree_hash(directory) == before


def test_a_damaged_score_dataset_is_named_with_its_fix(tmp_path):
  theta = [np.ones((4, 3), np.float32), np.ones((3, 2), np.float32)]
  meta = {"model": "m", "dataset": "d", "seed": 0, "criterion": "snip"}
  target = score_dataset.export_score_dataset(str(tmp_path / "data"), ["a", "b"], theta, theta,
                                              [np.ones((4, 3), np.int32), np.ones((3, 2), np.int32)], meta)
  info, metadata = os.path.join(target, "dataset_info.json"), os.path.join(target, "metadata.json")
  with open(info) as f:
    info_text = f.read()
  with open(metadata) as f:
    meta_text = f.read()
  other_version = json.dumps({"autosparse": json.dumps(dict(meta, layers="a, b"))})
  for path, damaged in ((info, info_text[: len(info_text) // 2]), (metadata, other_version)):
    with open(path, "w") as f:
      f.write(damaged)
    before = tree_hash(target)
    with pytest.raises(artefacts.DamagedFile, match=f"score dataset {target} .*IRP job that wrote it"):
      score_dataset.load_score_dataset(target)
    assert tree_hash(target) == before
    with open(info, "w") as f:
      f.write(info_text)
    with open(metadata, "w") as f:
      f.write(meta_text)


# ---- Every write atomic.

WRITERS = {
    "json": lambda path, i: artefacts.write_json(path, {"i": i, "pad": "x" * 20000}),
    "text": lambda path, i: artefacts.write_text(path, f"| i | {i} |\n" * 2000),
    "jsonl": lambda path, i: artefacts.write_jsonl(path, [{"i": i, "k": k} for k in range(500)]),
    "figure": lambda path, i: _figure(path, i),
}


def _figure(path, i):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots()
  ax.plot(np.arange(50) * i)
  artefacts.save_figure(fig, path)
  plt.close(fig)


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_full_disk_leaves_the_earlier_file_and_names_it(tmp_path, monkeypatch, writer):
  suffix = {"json": ".json", "text": ".md", "jsonl": ".jsonl", "figure": ".png"}[writer]
  path = str(tmp_path / f"out{suffix}")
  WRITERS[writer](path, 1)
  with open(path, "rb") as f:
    earlier = f.read()

  def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OutputError, match=f"could not write {path} \\(No space left on device\\); the earlier one is "
                                        "intact"):
    WRITERS[writer](path, 2)
  with open(path, "rb") as f:
    assert f.read() == earlier
  assert os.listdir(tmp_path) == [os.path.basename(path)]  # No temporary file left behind.


def test_appending_to_a_full_disk_names_the_file(tmp_path, monkeypatch):
  path = str(tmp_path / "runs.jsonl")
  artefacts.append_jsonl(path, [{"a": 1}])

  def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OutputError, match=f"could not append to {path}"):
    artefacts.append_jsonl(path, [{"a": 2}])


KILL_LOOP = """
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from autosparse_jax import artefacts
directory = sys.argv[1]
fig, ax = plt.subplots()
print("ready", flush=True)
i = 0
while True:
  artefacts.write_json(f"{directory}/out.json", {"i": i, "pad": "x" * 20000})
  artefacts.write_text(f"{directory}/out.md", f"| i | {i} |\\n" * 2000)
  artefacts.write_jsonl(f"{directory}/out.jsonl", [{"i": i, "k": k} for k in range(500)])
  ax.plot([0, i])
  artefacts.save_figure(fig, f"{directory}/out.png")
  i += 1
"""


def test_writers_killed_at_random_instants_leave_only_whole_files(tmp_path):
  from soak import torn_files
  rng = np.random.default_rng(0)
  directory = str(tmp_path / "out")
  os.makedirs(directory)
  env = dict(os.environ, AUTOSPARSE_COMPILATION_CACHE="off", MPLBACKEND="Agg")
  kills = 0
  for _ in range(4):
    proc = subprocess.Popen([sys.executable, "-c", KILL_LOOP, directory], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env=env)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(float(rng.uniform(0.05, 0.6)))  # Any instant of the write loop.
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    kills += 1
    assert torn_files(directory) == [], torn_files(directory)
    for name in os.listdir(directory):
      if name.endswith(".json"):
        assert "i" in artefacts.read_json(os.path.join(directory, name), "")
  assert kills == 4 and any(n.startswith("out") for n in os.listdir(directory))


def test_a_workdir_of_the_previous_version_resumes_under_the_new_defaults():
  from autosparse_jax.lab.workdir import config_differences
  from autosparse_jax.lab.config_tools import config_to_dict
  current = config_to_dict(load_config("prune", "lenet_digits"))
  old = json.loads(json.dumps(current))
  for field in ("structure", "group_reduce"):
    del old["prune"][field]
  del old["export"]
  old["prune"]["prunable"] = r"(^|/)kernel$"  # The jobs' default regex before the 'default' rule.
  assert config_differences(old, current) == []
  old["prune"]["prunable"] = "bias$"
  assert [d[0] for d in config_differences(old, current)] == ["prune.prunable"]
