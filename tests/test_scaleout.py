"""Scale-out: data parallelism on 4 CPU devices, 2 processes x 2 devices, launch scripts.

Tolerance of the sharded-vs-one-device comparisons: the sharded programs sum the
loss and the gradients in another order (per-device partial sums, then an
all-reduce), so each step differs from the one-device step by a few float32
ulps (~1e-7 relative); over the 32-44 steps here the differences grow to
~1e-7..1e-6 in the weights. atol=2e-6 / rtol=1e-5 leaves that room and nothing
more: a wrongly split batch (a device training on the wrong examples) or a
gradient scaled by the device count moves weights by 1e-3 or more.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import REPO, small_config

ATOL, RTOL = 2e-6, 1e-5
TIMEOUT = 180  # Seconds for one subprocess (or one multi-process launch).

DATA_PARALLEL = textwrap.dedent("""
    import json, os, re, sys
    import chex
    chex.set_n_cpu_devices(4)  # Before jax starts its backend.
    import jax, numpy as np
    from jax.sharding import NamedSharding
    from tests.conftest import small_config
    from autosparse_jax import prune_spec, pruning, training
    from autosparse_jax.lab import engine, runs
    from autosparse_jax.lab.workdir import Workdir
    assert jax.device_count() == 4

    def run(model, seeds, data, **kw):
      c = small_config(**{"model": model, "num_seeds": 2, "mesh.seeds": seeds, "mesh.data": data, **kw})
      task = engine.build_task(c)
      states = engine.init_states(c, task)
      if c.criterion != "none":
        states, _ = runs.prune_states(prune_spec.from_config(c, c.criterion, density=1.0 - float(c.sparsity)), task, states)
      states, last = engine.run_training(c, task, states, Workdir("/nonexistent", c, is_writer=False))
      return task, states, last

    model, ATOL, RTOL, kw = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
    _, ref, ref_last = run(model, 1, 1, **kw)  # One device: the plain, unsharded programs.
    assert isinstance(jax.tree.leaves(ref.params)[0].sharding, jax.sharding.SingleDeviceSharding)
    replicated = None
    for seeds, data, split in [(1, 4, False), (2, 2, False), (1, 4, True)]:
      task, got, last = run(model, seeds, data, **{"mesh.shard_train_set": split, **kw})
      if split:  # Each device stores a quarter of the training images, and nothing changes.
        n = task.train_labels.shape[0]
        assert {s.data.shape[0] for s in task.train_images.addressable_shards} == {-(-n // 4)}
        for a, b in zip(jax.tree.leaves(replicated), jax.tree.leaves(got)):
          np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
      elif seeds == 1:
        replicated = got
      # The state really lives on the mesh, and the step really splits the batch.
      leaf = jax.tree.leaves(got.params)[0]
      assert isinstance(leaf.sharding, NamedSharding) and leaf.sharding.mesh.devices.shape == (seeds, data)
      if model == "lenet_300_100":  # First layer: [seeds per device, examples per device, 60].
        hlo = training.jit_epoch(task.trainer, 1).lower(got, task.train_images, task.train_labels).compile().as_text()
        assert "all-reduce" in hlo and re.search(rf"f32\\[{2 // seeds},{32 // data},60\\]", hlo), (seeds, data)
      for a, b in zip(jax.tree.leaves(ref.masks), jax.tree.leaves(got.masks)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
      ref_leaves = jax.tree_util.tree_leaves_with_path({"params": ref.params, "bn": ref.batch_stats})
      got_leaves = jax.tree.leaves({"params": got.params, "bn": got.batch_stats})
      assert len(ref_leaves) == len(got_leaves)
      for (path, a), b in zip(ref_leaves, got_leaves):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=RTOL, atol=ATOL,
                                   err_msg=f"{model} {seeds}x{data} {jax.tree_util.keystr(path)}")
      np.testing.assert_allclose(last["test_loss"], ref_last["test_loss"], rtol=RTOL)
      assert int(np.asarray(got.step)[0]) == int(np.asarray(ref.step)[0]) > 0
    print("ok")
""")


def env_with_repo():
  env = dict(os.environ)
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  for name in ("AUTOSPARSE_COORDINATOR", "AUTOSPARSE_NUM_PROCESSES", "AUTOSPARSE_PROCESS_ID", "XLA_FLAGS"):
    env.pop(name, None)
  return env


def data_parallel(model, atol, rtol, overrides):
  out = subprocess.run([sys.executable, "-c", DATA_PARALLEL, model, str(atol), str(rtol), json.dumps(overrides)],
                       capture_output=True, text=True, cwd=REPO, env=env_with_repo(), timeout=TIMEOUT)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout[-3000:] + out.stderr[-5000:]


def test_data_parallel_training_on_4_devices_equals_one_device():
  """LeNet pruned to 20%, 2 seeds, 32 steps: mesh 1x4 (data parallel), 2x2 (seeds too), and 1x4
  with the training images split over the devices (bit-identical to 1x4 replicated)."""
  data_parallel("lenet_300_100", ATOL, RTOL, {"criterion": "magnitude", "sparsity": 0.8})


@pytest.mark.slow  # ~25 s of ResNet compilation.
def test_data_parallel_batchnorm_uses_the_whole_batch():
  """ResNet: batch statistics over a sharded batch are the whole batch's (synchronised BN).

  BatchNorm's variance over 8 examples per device is sensitive to the order of
  its sums: the one-device and sharded weights drift apart ~2x per step (1e-6
  after one step, 5e-6 after three), so this compares 2 steps at atol 2e-5.
  Per-device statistics would move them by ~1e-2.
  """
  data_parallel("resnet18", 2e-5, 1e-4, {"width": 0.0625, "data.synthetic.image_shape": [8, 8, 3],
                                         "data.synthetic.num_train": 64, "train.epochs": 1})


# shard_train_set: each process puts only its devices' rows of the training images.
OVERRIDES = {"criterion": "magnitude", "sparsity": 0.9, "train.epochs": 2, "num_seeds": 2,
             "mesh.shard_train_set": True}


def launch(workdir, num_processes, cpu_devices, overrides, tmp_path):
  command = [sys.executable, os.path.join(REPO, "launch", "local_multiprocess.py"),
             f"--num_processes={num_processes}", f"--cpu_devices={cpu_devices}", f"--timeout={TIMEOUT}",
             f"--log_dir={tmp_path / 'logs'}", "--", sys.executable,
             os.path.join(REPO, "tests", "multiprocess_worker.py"), str(workdir), json.dumps(overrides)]
  # The launcher stops every process at its --timeout; this outer bound is only a backstop.
  return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env_with_repo(),
                        timeout=TIMEOUT + 30)


def metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow  # ~30 s cold: CI's 12-minute budget.
def test_two_processes_of_two_devices_train_and_score_as_one_process(tmp_path):
  multi, single = tmp_path / "multi", tmp_path / "single"
  # The one-process, one-device reference runs alongside (compilation is mostly single-threaded).
  ref = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "multiprocess_worker.py"), str(single),
                          json.dumps(OVERRIDES)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, cwd=REPO, env=env_with_repo())
  try:
    out = launch(multi, 2, 2, OVERRIDES, tmp_path)
    ref_out, _ = ref.communicate(timeout=TIMEOUT)
  finally:
    if ref.poll() is None:
      ref.kill()
      ref.wait()
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
  assert ref.returncode == 0, ref_out[-5000:]

  got, want = np.load(multi / "scores.npz"), np.load(single / "scores.npz")
  assert (int(got["devices"]), int(got["processes"])) == (4, 2)
  assert (int(want["devices"]), int(want["processes"])) == (1, 1)
  np.testing.assert_array_equal(got["scores"], want["scores"])  # Pointwise: no sums reordered.
  # Independent of both: the scorer's MLP applied to all rows at once, no padding or batches.
  import jax
  import jax.numpy as jnp
  from autosparse_jax.autos.scorer import make_scorer
  module = make_scorer("mlp", 2, 0.25)
  variables = jax.jit(lambda k: module.init(k, jnp.zeros((2, 2)), train=False))(jax.random.PRNGKey(0))
  x = (want["x"] - np.array([0.1, 0.0], np.float32)) / np.array([2.0, 0.5], np.float32)
  direct = np.asarray(module.apply(variables, x, train=False))
  np.testing.assert_allclose(got["scores"], direct, rtol=1e-5, atol=1e-6)

  # Process 0 alone writes: one metrics line per epoch, not one per process.
  m, s = metrics(multi), metrics(single)
  assert [r["epoch"] for r in m] == [r["epoch"] for r in s] == [1, 2]
  for a, b in zip(m, s):
    for key in ("train_loss", "test_loss"):
      np.testing.assert_allclose(a[key], b[key], rtol=RTOL, err_msg=key)
    np.testing.assert_array_equal(a["test_accuracy"], b["test_accuracy"])
  with open(multi / "results.json") as f:
    assert json.load(f)["density"] == pytest.approx(0.1, abs=1e-3)


def test_processes_with_different_configs_stop_with_a_config_error(tmp_path):
  sys.path.insert(0, os.path.join(REPO, "launch"))
  from local_multiprocess import free_port, process_env, stop
  coordinator = f"127.0.0.1:{free_port()}"
  procs = []
  try:
    for i, lr in enumerate(("0.1", "0.2")):
      env = process_env(env_with_repo(), coordinator, 2, i, 1)
      procs.append(subprocess.Popen(
          [sys.executable, "-m", "autosparse_jax.lab.main", "--config=configs/train.py:lenet_digits",
           f"--workdir={tmp_path / 'w'}", f"--config.train.lr={lr}"],
          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
  finally:
    stop(procs)
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 2, err[-3000:]
    assert "processes were given different configs: process(es) [1] differ from process 0" in err
  assert "train.lr differ" in outs[1][1]
  assert not os.path.exists(tmp_path / "w")  # Nothing written.


def test_mesh_validation_names_the_field_and_the_fix():
  from autosparse_jax.errors import ConfigError
  from autosparse_jax.lab.sharding import mesh_shape
  assert mesh_shape(small_config(), 4) == (1, 4)
  assert mesh_shape(small_config(**{"mesh.seeds": 2, "num_seeds": 4}), 4) == (2, 2)
  assert mesh_shape(small_config(**{"mesh.data": 1}), 4) == (1, 1)
  with pytest.raises(ConfigError, match=r"config.train.batch_size=30 must be divisible by the 4 devices"):
    mesh_shape(small_config(**{"train.batch_size": 30}), 4)
  with pytest.raises(ConfigError, match=r"config.num_seeds=3 must be a multiple of config.mesh.seeds=2"):
    mesh_shape(small_config(**{"mesh.seeds": 2, "num_seeds": 3}), 4)
  with pytest.raises(ConfigError, match=r"config.mesh.seeds=3 must divide the 4 devices"):
    mesh_shape(small_config(**{"mesh.seeds": 3, "num_seeds": 3}), 4)
  with pytest.raises(ConfigError, match=r"needs 8 devices; this run has 4"):
    mesh_shape(small_config(**{"mesh.data": 8}), 4)


def test_distributed_starts_only_when_the_environment_asks():
  from autosparse_jax.lab.distributed import wanted
  from autosparse_jax.errors import ConfigError
  assert not wanted("auto", {})
  assert not wanted("auto", {"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "1"})  # One task.
  assert wanted("auto", {"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "4"})
  assert wanted("auto", {"OMPI_COMM_WORLD_SIZE": "2"})
  assert wanted("auto", {"AUTOSPARSE_COORDINATOR": "127.0.0.1:1234"})
  assert wanted("yes", {}) and not wanted("no", {"AUTOSPARSE_COORDINATOR": "x:1"})
  with pytest.raises(ConfigError, match="config.distributed.initialize='maybe' is not known"):
    wanted("maybe", {})


def test_launch_scripts_parse_and_the_array_script_runs_its_grid_cell(tmp_path):
  scripts = [os.path.join(REPO, "launch", n) for n in sorted(os.listdir(os.path.join(REPO, "launch")))
             if n.endswith((".sh", ".sbatch"))]
  assert len(scripts) >= 3
  for script in scripts:
    out = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    assert out.returncode == 0, f"{script}: {out.stderr}"
  grid = tmp_path / "grid.txt"
  grid.write_text("# comment\n--config.criterion=snip --config.sparsity=0.9\n"
                  "--config.criterion=magnitude --config.sparsity=0.98\n")
  env = dict(env_with_repo(), SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_JOB_ID="77", PYTHON="echo",
             WORKDIR_ROOT=str(tmp_path / "runs"))
  out = subprocess.run(["bash", os.path.join(REPO, "launch", "slurm_array.sbatch"), str(grid),
                        "--config=configs/prune.py:lenet_digits"], capture_output=True, text=True,
                       env=env, timeout=30)
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ["-m", "autosparse_jax.lab.main", "--config=configs/prune.py:lenet_digits",
                                f"--workdir={tmp_path / 'runs' / 'cell_1'}", "--config.criterion=magnitude",
                                "--config.sparsity=0.98"]


@pytest.mark.slow  # ~2 min: three IRP runs.
def test_two_process_irp_with_seeds_across_processes_checkpoints_and_resumes(tmp_path):
  """Seeds sharded over the processes (mesh 2x2); Orbax saves and restores the global arrays."""
  args = ["--config=configs/irp.py:lenet_digits", "--config.irp.rounds=2", "--config.train.epochs=1",
          "--config.irp.checkpoint_every_steps=10", "--config.num_seeds=2",
          "--config.checkpoint_min_seconds=0"]
  multi, single = tmp_path / "multi", tmp_path / "single"

  def run_multi():
    command = [sys.executable, os.path.join(REPO, "launch", "local_multiprocess.py"), "--num_processes=2",
               "--cpu_devices=2", f"--timeout={2 * TIMEOUT}", f"--log_dir={tmp_path / 'logs'}", "--",
               sys.executable, "-m", "autosparse_jax.lab.main", f"--workdir={multi}", *args,
               "--config.mesh.seeds=2"]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env_with_repo(),
                         timeout=2 * TIMEOUT + 30)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]

  run_multi()
  with open(multi / "results.json") as f:
    first = json.load(f)
  # Resume from the last checkpoint: the results and score datasets are made again from it.
  os.remove(multi / "results.json")
  subprocess.run(["rm", "-r", str(multi / "scores")], check=True)
  run_multi()
  with open(multi / "results.json") as f:
    resumed = json.load(f)
  assert any(r.get("event") == "resumed" for r in metrics(multi))
  out = subprocess.run([sys.executable, "-m", "autosparse_jax.lab.main", f"--workdir={single}", *args],
                       capture_output=True, text=True, cwd=REPO, env=env_with_repo(), timeout=2 * TIMEOUT)
  assert out.returncode == 0, out.stderr[-5000:]
  with open(single / "results.json") as f:
    ref = json.load(f)
  assert resumed["survival_histogram"] == first["survival_histogram"]
  assert resumed["test_accuracy_seeds"] == first["test_accuracy_seeds"]
  assert [r["kept"] for r in first["rounds"]] == [r["kept"] for r in ref["rounds"]]
  np.testing.assert_allclose(first["test_accuracy_seeds"]["per_seed"], ref["test_accuracy_seeds"]["per_seed"],
                             atol=2 / 360)  # At most two of the 360 test digits flip.


def _pid_of_process(rank, workdir):
  """The PID of the jax.distributed process `rank` whose command line names `workdir`."""
  for pid in os.listdir("/proc"):
    if not pid.isdigit():
      continue
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().decode(errors="replace")
      with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read().decode(errors="replace").split("\0")
    except OSError:
      continue
    if f"--workdir={workdir}" in cmdline and f"AUTOSPARSE_PROCESS_ID={rank}" in environ:
      return int(pid)
  return None


def test_sigterm_to_one_of_two_processes_stops_both_after_one_checkpoint_and_resumes_identically(tmp_path):
  """preemption.requested() is an all-gather: process 1 alone gets SIGTERM, both stop after the same
  chunk with one (collective) checkpoint and exit 75; the same command then finishes the run, equal
  to an uninterrupted 2-process run."""
  import signal
  import time
  args = ["--config=configs/prune.py:lenet_digits", "--config.train.epochs=2", "--config.criterion=snip",
          "--config.sparsity=0.9", "--config.train.log_every_steps=5", "--config.checkpoint_every_steps=5",
          "--config.checkpoint_min_seconds=0", "--config.tensorboard=False"]

  def launch(workdir):
    command = [sys.executable, os.path.join(REPO, "launch", "local_multiprocess.py"), "--num_processes=2",
               "--cpu_devices=1", f"--timeout={2 * TIMEOUT}", f"--log_dir={workdir}.logs", "--",
               sys.executable, "-m", "autosparse_jax.lab.main", f"--workdir={workdir}", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env=dict(env_with_repo(), AUTOSPARSE_PLAIN_OUTPUT="0"))

  straight, stopped = tmp_path / "straight", tmp_path / "stopped"
  proc = launch(straight)
  out = proc.communicate(timeout=2 * TIMEOUT + 30)[0]
  assert proc.returncode == 0, out[-4000:]
  proc = launch(stopped)
  lines = []
  for line in proc.stdout:  # Process 0's output; process 1 gets the signal.
    lines.append(line)
    if "epoch 1 step 10/" in line:
      pid = None
      for _ in range(50):
        pid = pid or _pid_of_process(1, stopped)
        if pid:
          break
        time.sleep(0.1)
      assert pid, "process 1 not found"
      os.kill(pid, signal.SIGTERM)
      break
  out = "".join(lines) + proc.communicate(timeout=2 * TIMEOUT + 30)[0]
  assert proc.returncode == 75, out[-4000:]
  assert "preempted" in out  # Process 0 stopped too, without a signal of its own.
  assert not (stopped / "results.json").exists()
  proc = launch(stopped)
  out = proc.communicate(timeout=2 * TIMEOUT + 30)[0]
  assert proc.returncode == 0, out[-4000:]
  assert any(r.get("event") == "resumed" for r in metrics(stopped))
  a, b = (json.loads((d / "results.json").read_text()) for d in (straight, stopped))
  for key in ("test_accuracy", "test_loss", "train_loss", "density"):
    assert a[key] == b[key], key
