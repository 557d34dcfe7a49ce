r"""Training throughput: masked LeNet-300-100 epoch on MNIST and ResNet-18 CIFAR steps.

  python benchmarks/train_throughput.py [--data_dir=DIR] [--resnet_steps=3] [--json=out.json]

Prints images/s and the achieved GFLOP/s (XLA's own cost analysis of the
compiled program) against a matmul peak measured on the same machine. Uses real
MNIST when it is prepared in --data_dir, else MNIST-shaped synthetic data (the
timing only depends on shapes). Compile time is reported separately.
"""
import dataclasses
import json
import time

from absl import app, flags

import autosparse_jax  # noqa: F401  (sets XLA flags before jax starts)
import jax
import numpy as np

from autosparse_jax import recipes, train, train_job
from autosparse_jax.data import DatasetNotPreparedError, load_dataset
from autosparse_jax.data.specs import SPECS

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "", "TFDS data dir with MNIST prepared (optional).")
flags.DEFINE_integer("lenet_epochs", 3, "Timed LeNet epochs (after one warm-up epoch).")
flags.DEFINE_integer("resnet_steps", 3, "Timed ResNet-18 steps (after one warm-up step).")
flags.DEFINE_integer("resnet_batch", 128, "ResNet-18 batch size.")
flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")


def matmul_peak_gflops(n=2048, repeats=10):
  """Best f32 GFLOP/s of an n x n matmul on the default device."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best / 1e9


def compile_with_flops(jitted, *args):
  """(compiled program, its FLOPs per call by XLA's cost analysis, compile seconds)."""
  t = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  seconds = time.perf_counter() - t
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return compiled, float(analysis.get("flops", float("nan"))), seconds


def time_calls(fn, states, args, repeats):
  """(states, median seconds per call over `repeats` calls after one warm-up call)."""
  states = jax.block_until_ready(fn(states, *args)[0])
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    states = jax.block_until_ready(fn(states, *args)[0])
    times.append(time.perf_counter() - t)
  return states, float(np.median(times))


def with_spec(task, spec):
  return dataclasses.replace(task, trainer=dataclasses.replace(task.trainer, spec=spec))


def lenet_epoch(data_dir, epochs):
  config = recipes.recipe_config("lenet_mnist")
  config.data.data_dir = data_dir
  config.criterion, config.sparsity = "random", 0.98
  try:
    load_dataset("mnist", data_dir)
    source = "real MNIST"
  except DatasetNotPreparedError:
    config.dataset = "synthetic"
    config.data.synthetic.update(dict(image_shape=(28, 28, 1), num_train=60000, num_test=10000))
    source = "synthetic MNIST-shaped"
  task = train_job.build_task(config)
  if config.dataset == "synthetic":  # Same preprocessing as MNIST.
    task = with_spec(task, SPECS["mnist"])
  states, _ = train_job.prune_states(config, task, train_job.init_states(config, task.trainer),
                                     "random", 0.98)
  args = (task.train_images, task.train_labels)
  # XLA's cost analysis counts a while-loop body once: take one straight-line step's FLOPs.
  _, step_flops, _ = compile_with_flops(train.jit_epoch(task.trainer, 1, unroll=True), states, *args)
  flops = step_flops * task.trainer.steps_per_epoch
  fn, _, compile_s = compile_with_flops(train.jit_epoch(task.trainer), states, *args)
  _, seconds = time_calls(fn, states, args, epochs)
  images = task.trainer.steps_per_epoch * task.trainer.batch_size
  return {"benchmark": "lenet_300_100 masked epoch (batch 128, Adam, 98% sparse masks)",
          "data": source, "seconds_per_epoch": seconds, "images_per_s": images / seconds,
          "gflops": flops / seconds / 1e9, "compile_s": compile_s}


def resnet_steps(steps, batch):
  config = recipes.recipe_config("resnet18_cifar10")
  config.dataset = "synthetic"
  config.train.batch_size = batch
  config.data.synthetic.update(dict(image_shape=(32, 32, 3), num_train=batch * steps,
                                    num_test=batch))
  task = train_job.build_task(config)
  task = with_spec(task, SPECS["cifar10"])  # CIFAR augmentation + normalisation.
  states = train_job.init_states(config, task.trainer)
  # One unrolled step per call: the "python" loop that config.train.loop="auto" picks for
  # conv nets on CPU; a GPU runs the whole epoch as one lax.scan (the "scan" loop).
  unroll = train.resolve_loop("auto", task.trainer, jax.default_backend()) == "python"
  fn = train.jit_epoch(task.trainer, 1 if unroll else steps, unroll=unroll)
  args = (task.train_images, task.train_labels)
  fn, flops, compile_s = compile_with_flops(fn, states, *args)
  _, seconds = time_calls(fn, states, args, steps if unroll else 1)
  if not unroll:
    seconds /= steps
    flops /= steps
  return {"benchmark": f"resnet18 CIFAR train step (batch {batch}, SGD, augmentation on device)",
          "data": "synthetic CIFAR-shaped", "seconds_per_step": seconds,
          "images_per_s": batch / seconds, "gflops": flops / seconds / 1e9,
          "compile_s": compile_s}


def main(argv):
  del argv
  device = jax.devices()[0]
  out = {"device": f"{device.platform}: {device.device_kind}", "jax": jax.__version__,
         "matmul_peak_gflops": matmul_peak_gflops()}
  print(f"device {out['device']}, jax {out['jax']}, f32 matmul peak {out['matmul_peak_gflops']:.0f} GFLOP/s")
  out["results"] = [lenet_epoch(FLAGS.data_dir, FLAGS.lenet_epochs),
                    resnet_steps(FLAGS.resnet_steps, FLAGS.resnet_batch)]
  for r in out["results"]:
    per = r.get("seconds_per_epoch", r.get("seconds_per_step"))
    print(f"{r['benchmark']} [{r['data']}]: {per:.3f} s, {r['images_per_s']:.0f} images/s, "
          f"{r['gflops']:.1f} GFLOP/s ({100 * r['gflops'] / out['matmul_peak_gflops']:.0f}% of peak)")
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  app.run(main)
