"""Every long job survives preemption: SIGKILL mid-epoch / between programs and SIGTERM (graceful,
exit 75) resume to results bit-identical to an uninterrupted run; TensorBoard files; sparse output."""
import json
import os
import signal
import struct
import subprocess
import sys

import chex
import pytest

from autosparse_jax.lab import preemption
from autosparse_jax.lab.workdir import read_jsonl
from tests.conftest import REPO
from tests.test_irp import run_until

SMALL = ["--config.width=0.5", "--config.train.log_every_steps=5", "--config.checkpoint_every_steps=5",
         "--config.checkpoint_min_seconds=0"]


def command(config, workdir, *extra):
  return [sys.executable, "-m", "autosparse_jax.lab.main", f"--config={config}", f"--workdir={workdir}", *SMALL,
          *extra]


def finish(cmd):
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  return proc


def results(workdir, name="results.json"):
  with open(os.path.join(workdir, name)) as f:
    data = json.load(f)
  drop = lambda d: {k: v for k, v in d.items() if "seconds" not in k}
  return drop(data) if "runs" not in data else dict(drop(data), runs=[drop(r) for r in data["runs"]])


@pytest.mark.slow  # CI's 12-minute budget: the sweep test below covers the same engine loop in CI.
def test_train_and_prune_jobs_killed_mid_epoch_resume_bit_identical(tmp_path):
  for config, extra, marker in [
      ("configs/train.py:lenet_digits", ["--config.train.epochs=3"], "epoch 2 step 10"),
      ("configs/prune.py:lenet_digits", ["--config.train.epochs=2", "--config.criterion=magnitude",
                                         "--config.sparsities=(0.8,0.9)"], "magnitude@0.9 epoch 1 step 15")]:
    name = config.split("/")[1].split(".")[0]
    straight, killed = str(tmp_path / f"{name}_straight"), str(tmp_path / f"{name}_killed")
    finish(command(config, straight, *extra))
    out, code = run_until(command(config, killed, *extra), marker)
    assert code == -signal.SIGKILL, out
    resumed = finish(command(config, killed, *extra))
    assert "resuming from its checkpoint" in resumed.stdout
    assert results(straight) == results(killed), name


def test_sweep_killed_inside_and_between_programs_and_sigtermed_resumes_bit_identical(tmp_path):
  extra = ["--config.train.epochs=2", "--config.sweep.criteria=('snip','random')", "--config.sparsities=(0.5,0.9)",
           "--config.sweep.dense=False", "--config.num_seeds=1"]
  config = "configs/pai_sweep.py:lenet_digits"
  straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
  finish(command(config, straight, *extra))
  out, code = run_until(command(config, stopped, *extra), "snip x2 epoch 2 step 5")  # Inside program 1.
  assert code == -signal.SIGKILL, out
  out, code = run_until(command(config, stopped, *extra), "sweep: random: 2 networks")  # Between programs.
  assert code == -signal.SIGKILL, out
  assert len(read_jsonl(os.path.join(stopped, "results.jsonl"))) == 2  # Program 1's rows are safe.
  # SIGTERM inside program 2: it stops after the current chunk with its checkpoint, exit 75.
  proc = subprocess.Popen(command(config, stopped, *extra), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=dict(os.environ, AUTOSPARSE_PLAIN_OUTPUT="0"))
  for line in proc.stdout:
    if "random x2 epoch 1 step 10" in line:
      proc.send_signal(signal.SIGTERM)
      break
  rest = proc.stdout.read()
  assert proc.wait(timeout=120) == preemption.EXIT_CODE, rest
  assert "preempted" in rest and os.listdir(os.path.join(stopped, "checkpoints"))
  finish(command(config, stopped, *extra))
  rows = lambda w: sorted(json.dumps({k: v for k, v in r.items() if "seconds" not in k}, sort_keys=True)
                          for r in read_jsonl(os.path.join(w, "results.jsonl")))
  assert rows(straight) == rows(stopped)
  assert results(straight)["table"] == results(stopped)["table"]
  runs = tensorboard_scalars(os.path.join(straight, "tensorboard"))  # One run per criterion and seed.
  assert set(runs) == {"snip/seed_0", "random/seed_0", "schedule"}
  assert {"test_accuracy/sparsity_0.5", "test_accuracy/sparsity_0.9"} <= set(runs["random/seed_0"])


@pytest.mark.slow  # CI's 12-minute budget (an IRP and two scorer trainings in subprocesses).
def test_autos_train_killed_and_resumed_gives_the_identical_scorer(tmp_path):
  irp = str(tmp_path / "irp")
  finish([sys.executable, "-m", "autosparse_jax.lab.main", "--config=configs/irp.py:lenet_digits", f"--workdir={irp}",
          "--config.irp.rounds=2", "--config.train.epochs=1", "--config.width=0.5"])
  dataset = json.load(open(os.path.join(irp, "results.json")))["score_dataset_dir"]
  cmd = lambda w: [sys.executable, "-m", "autosparse_jax.lab.main", "--config=configs/autos_train.py:mlp",
                   f"--workdir={w}", "--config.train.epochs=4", "--config.scorer.width=0.25",
                   f"--config.scorer.datasets=('{dataset}',)"]
  finish(cmd(str(tmp_path / "straight")))
  out, code = run_until(cmd(str(tmp_path / "killed")), "epoch 2/4")
  assert code == -signal.SIGKILL, out
  finish(cmd(str(tmp_path / "killed")))
  a, b = (json.load(open(os.path.join(tmp_path, w, "results.json"))) for w in ("straight", "killed"))
  assert a["held_out_mse"] == b["held_out_mse"] and a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
  from autosparse_jax.autos import load_scorer
  va, vb = (load_scorer(os.path.join(tmp_path, w, "scorer")).variables for w in ("straight", "killed"))
  chex.assert_trees_all_equal(va, vb)


def test_a_finished_job_keeps_only_its_last_checkpoint(tmp_path):
  import numpy as np
  from autosparse_jax.lab.checkpoints import Checkpoints
  store = Checkpoints(str(tmp_path / "checkpoints"), 2)
  for epoch in (1, 2):
    store.save({"w": np.full(3, epoch, np.float32)}, {"epoch": epoch})
  assert sorted(store.manager.all_steps()) == [1, 2]
  store.keep_latest_only()  # What autos_train does once its scorer is saved.
  assert os.listdir(tmp_path / "checkpoints") == ["2"]
  state, meta = store.restore_latest({"w": np.zeros(3, np.float32)})
  assert meta["epoch"] == 2 and state["w"].tolist() == [2, 2, 2]
  store.close()


def test_ctrl_c_stops_at_the_next_chunk_and_a_second_one_at_once():
  """The first SIGINT is recorded (the loop stops at its next chunk; the CLI exits 130), the second raises
  KeyboardInterrupt; with preemption_signal='INT' every SIGINT is a preemption (exit 75), never an abort."""
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    preemption.reset()
    preemption.install(("TERM",))
    os.kill(os.getpid(), signal.SIGINT)
    assert preemption.requested() and preemption.interrupted()
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
    preemption.reset()
    preemption.install(("INT",))
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)
    assert preemption.requested() and not preemption.interrupted()
  finally:
    preemption.reset()
    preemption._INSTALLED.clear()
    for s, handler in before.items():
      signal.signal(s, handler)


def tensorboard_scalars(directory):
  """{run: {tag: [(step, value)]}} read back from the event files under `directory` (a run is the
  subdirectory holding them; TFRecord framing, Event protos)."""
  from tensorboardX.proto import event_pb2
  out = {}
  for root, _, files in os.walk(directory):
    run = os.path.relpath(root, directory)
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        data = f.read()
      i = 0
      while i < len(data):
        (length,) = struct.unpack("<Q", data[i:i + 8])
        event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
        i += 12 + length + 4
        for value in event.summary.value:
          out.setdefault(run, {}).setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path):
  wd = str(tmp_path / "wd")
  finish(command("configs/train.py:lenet_digits", wd, "--config.train.epochs=2", "--config.num_seeds=2"))
  scalars = tensorboard_scalars(os.path.join(wd, "tensorboard"))
  metrics = [r for r in read_jsonl(os.path.join(wd, "metrics.jsonl")) if "epoch" in r]
  assert set(scalars) == {"seed_0", "seed_1", "schedule"}
  for seed in (0, 1):
    got = scalars[f"seed_{seed}"]["test_accuracy"]
    assert [s for s, _ in got] == [m["step"] for m in metrics]
    assert [v for _, v in got] == pytest.approx([m["test_accuracy"][seed] for m in metrics], rel=1e-6)
    assert set(scalars[f"seed_{seed}"]) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
  assert list(scalars["schedule"]) == ["learning_rate"]
  off = str(tmp_path / "off")
  finish(command("configs/train.py:lenet_digits", off, "--config.train.epochs=1", "--config.tensorboard=False"))
  assert not os.path.exists(os.path.join(off, "tensorboard"))


def test_tensorboard_writes_each_network_as_its_own_run_with_one_tag_per_metric(tmp_path):
  """What each job's records become: runs per criterion/variant and seed, tags per metric (and sparsity),
  so TensorBoard overlays every criterion on one chart; IRP on one global step; autos_train's losses."""
  from tests.conftest import small_config
  from autosparse_jax.lab.workdir import Workdir
  workdir = Workdir(str(tmp_path), small_config())
  epoch = lambda tag, networks, step, **extra: dict(
      {"epoch": 1, "step": step, "tag": tag, "networks": networks, "learning_rate": 0.1,
       **{k: [0.5] * len(networks) for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")}},
      **extra)
  cells = [f"{c}@{p}/seed_{s}" for c in ("snip", "snip_x6") for p in (0.5, 0.9) for s in (0, 1)]
  workdir.log_metrics(epoch("snip x8", cells, 10))                               # A sweep program.
  workdir.log_metrics(epoch("magnitude@0.8", ["seed_0"], 10))                    # The prune job.
  for level in range(3):                                                         # IRP levels.
    workdir.log_metrics(epoch(f"round {level}", ["seed_0"], 10, global_step=10 + 20 * level))
    workdir.log_metrics({"event": "round_done", "round": level, "density": [0.5], "test_accuracy": [0.9],
                         "networks": ["seed_0"]})
  workdir.log_metrics({"epoch": 1, "train_loss": 0.25, "held_out_loss": 0.5, "epoch_seconds": 1.0})  # autos_train.
  scalars = tensorboard_scalars(os.path.join(workdir.path, "tensorboard"))
  assert set(scalars) == {"snip/seed_0", "snip/seed_1", "snip/seed_mean", "snip_x6/seed_0", "snip_x6/seed_1",
                          "snip_x6/seed_mean", "magnitude/seed_0", "seed_0", "schedule", "scorer"}
  assert set(scalars["snip_x6/seed_1"]) == {f"{m}/sparsity_{p}" for m in ("train_loss", "train_accuracy",
                                                                         "test_loss", "test_accuracy")
                                            for p in ("0.5", "0.9")}
  assert "test_accuracy/sparsity_0.8" in scalars["magnitude/seed_0"]
  assert [s for s, _ in scalars["seed_0"]["test_accuracy"]] == [10, 30, 50]  # One curve over the levels.
  assert [s for s, _ in scalars["seed_0"]["irp/density"]] == [0, 1, 2]
  assert list(scalars["schedule"]) == ["learning_rate"]
  assert scalars["scorer"] == {"train_loss": [(1, 0.25)], "held_out_loss": [(1, 0.5)]}
