r"""What mid-run checkpoints cost: seconds and MB per save, and the slowdown of a sweep saving every epoch.

  python benchmarks/checkpoint_cost.py

Saves (checkpoints.RunCheckpoints, Orbax, synchronous) the stacked TrainStates of (a) one
LeNet-300-100 and (b) a sweep program of 12 ResNet-18 at 1/4 width (CIFAR shapes): median of
3 saves and the size on disk. Then a LeNet-300-100 / digits sweep (2 criteria x 2 sparsities
x 3 seeds, 10 epochs) with a checkpoint at every epoch end (checkpoint_min_seconds=0) against
the same sweep with checkpoints off (a minimum interval longer than the run): the ratio.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from autosparse_jax.lab import config_tools, engine
from autosparse_jax.lab.checkpoints import RunCheckpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def size_mb(directory):
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(directory) for f in fs) / 2**20


def save_cost(config, label):
  task = engine.build_task(config)
  states = engine.init_states(config, task)
  directory = tempfile.mkdtemp()
  ckpt = RunCheckpoints(os.path.join(directory, "ckpt"), config, keep=1)
  times = []
  for step in range(1, 4):
    t = time.perf_counter()
    ckpt.save(states, step)
    times.append(time.perf_counter() - t)
  ckpt.close()
  print(f"{label}: {np.median(times):.3f} s per save (median of 3), {size_mb(os.path.join(directory, 'ckpt')):.1f} MB "
        "on disk (one checkpoint kept)", flush=True)
  shutil.rmtree(directory)


def sweep_seconds(min_seconds):
  workdir = tempfile.mkdtemp()
  t = time.perf_counter()
  subprocess.run([sys.executable, "-m", "autosparse_jax.lab.main", "--config=configs/pai_sweep.py:lenet_digits",
                  f"--workdir={workdir}/wd", "--config.train.epochs=10", "--config.sweep.criteria=('snip','random')",
                  "--config.sparsities=(0.8,0.95)", "--config.sweep.dense=False", "--config.tensorboard=False",
                  f"--config.checkpoint_min_seconds={min_seconds}"], cwd=REPO, check=True, capture_output=True)
  seconds = time.perf_counter() - t
  shutil.rmtree(workdir)
  return seconds


def main():
  lenet = config_tools.load_config("train", "lenet_mnist")
  lenet.dataset, lenet.data.synthetic.image_shape, lenet.data.synthetic.num_train = "synthetic", (28, 28, 1), 256
  save_cost(lenet, "LeNet-300-100, 1 network")
  resnet = config_tools.load_config("train", "resnet18_cifar10")
  resnet.dataset, resnet.width, resnet.num_seeds = "synthetic", 0.25, 12
  resnet.data.synthetic.image_shape, resnet.data.synthetic.num_train = (32, 32, 3), 256
  save_cost(resnet, "ResNet-18 (1/4 width), a program of 12 networks")
  sweep_seconds(1e9)  # Warm the compilation cache so both runs below compile alike.
  off, on = sweep_seconds(1e9), sweep_seconds(0)
  print(f"sweep, 4 programs x 10 epochs: {off:.1f} s without checkpoints, {on:.1f} s with one per epoch: "
        f"ratio {on / off:.2f}")


if __name__ == "__main__":
  main()
