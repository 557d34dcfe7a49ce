r"""Training throughput: masked LeNet-300-100 epoch on MNIST and conv-net CIFAR steps.

  python benchmarks/train_throughput.py [--data_dir=DIR] [--conv_models=resnet18,vgg16]
      [--dtypes=float32,bfloat16] [--resnet_steps=3] [--resnet_batch=128] [--json=out.json]

Prints images/s and the achieved GFLOP/s (XLA's own cost analysis of one training
step) against matmul peaks measured on the same machine (f32, and bf16 on GPUs).
Uses real MNIST when it is prepared in --data_dir, else MNIST-shaped synthetic
data (the timing only depends on shapes). Compile time is reported separately.

Conv nets run as config.train.loop="auto" drives them: one jitted unrolled step
per call on CPU, an epoch of --resnet_steps steps as one lax.scan elsewhere.
--dtypes=bfloat16 builds the conv net with dtype=bfloat16 (bf16 compute, f32
params, BN statistics and loss), which the jobs do not expose yet.
"""
import dataclasses
import json
import time

from absl import app, flags

import autosparse_jax  # noqa: F401  (sets XLA flags before jax starts)
import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import prune_spec, training, pruning
from autosparse_jax.lab import recipes, engine, runs
from measure import hlo_flops, matmul_peak_gflops  # benchmarks/measure.py
from autosparse_jax.data import DatasetNotPreparedError, load_dataset
from autosparse_jax.data.specs import SPECS
from autosparse_jax.models import get_model

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "", "TFDS data dir with MNIST prepared (optional).")
flags.DEFINE_integer("lenet_epochs", 3, "Timed LeNet epochs (after one warm-up epoch).")
flags.DEFINE_list("conv_models", ["resnet18"], "Conv nets to time: resnet18, vgg16, vgg19.")
flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes of the conv nets: float32, bfloat16.")
flags.DEFINE_integer("resnet_steps", 3, "Timed conv-net steps: calls on CPU, steps of one scan elsewhere.")
flags.DEFINE_integer("resnet_batch", 128, "Conv-net batch size.")
flags.DEFINE_integer("scan_repeats", 3, "Timed calls of the scanned epoch (non-CPU backends).")
flags.DEFINE_enum("loop", "auto", list(training.LOOPS), "How conv-net steps are driven (auto = as the jobs).")
flags.DEFINE_integer("matmul_n", 0, "Matmul peak size (0 = 2048 on CPU, 8192 elsewhere).")
flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")

RECIPE = {"resnet18": "resnet18_cifar10", "vgg16": "vgg16_cifar10", "vgg19": "vgg19_cifar100"}
from autosparse_jax.models import DTYPES  # noqa: E402


def step_flops(trainer, states, args):
  """FLOPs of one training step (analyses count a while loop's body once: no scanned epoch)."""
  return hlo_flops(training.jit_epoch(trainer, 1, unroll=True), states, *args)


def compile_timed(jitted, *args):
  t = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t


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
  except (DatasetNotPreparedError, ImportError):  # ImportError: no tensorflow_datasets here.
    config.dataset = "synthetic"
    config.data.synthetic.update(dict(image_shape=(28, 28, 1), num_train=60000, num_test=10000))
    source = "synthetic MNIST-shaped"
  task = engine.build_task(config)
  if config.dataset == "synthetic":  # Same preprocessing as MNIST.
    task = with_spec(task, SPECS["mnist"])
  states, _ = runs.prune_states(prune_spec.from_config(config, "random", density=1.0 - 0.98), task, engine.init_states(config, task))
  args = (task.train_images, task.train_labels)
  flops = step_flops(task.trainer, states, args) * task.trainer.steps_per_epoch
  fn, compile_s = compile_timed(training.jit_epoch(task.trainer), states, *args)
  _, seconds = time_calls(fn, states, args, epochs)
  images = task.trainer.steps_per_epoch * task.trainer.batch_size
  return {"benchmark": "lenet_300_100 masked epoch (batch 128, Adam, 98% sparse masks)",
          "data": source, "dtype": "float32", "loop": "scan", "seconds_per_epoch": seconds,
          "images_per_s": images / seconds, "gflops": flops / seconds / 1e9, "compile_s": compile_s}


def conv_steps(model, dtype_name, steps, batch):
  config = recipes.recipe_config(RECIPE[model])
  dataset = config.dataset
  config.dataset = "synthetic"
  config.train.batch_size = batch
  config.data.synthetic.update(dict(image_shape=(32, 32, 3), num_train=batch * steps,
                                    num_test=batch, num_classes=SPECS[dataset].num_classes))
  task = engine.build_task(config)
  trainer = dataclasses.replace(
      task.trainer, spec=SPECS[dataset],  # CIFAR augmentation + normalisation.
      model=get_model(model, SPECS[dataset].num_classes, dtype=DTYPES[dtype_name]))
  task = dataclasses.replace(task, trainer=trainer)
  states = engine.init_states(config, task)
  loop = training.resolve_loop(FLAGS.loop, trainer, jax.default_backend())
  unroll = loop == "python"
  args = (task.train_images, task.train_labels)
  flops = step_flops(trainer, states, args)
  fn, compile_s = compile_timed(training.jit_epoch(trainer, 1 if unroll else steps, unroll=unroll),
                                states, *args)
  _, seconds = time_calls(fn, states, args, steps if unroll else FLAGS.scan_repeats)
  if not unroll:
    seconds /= steps
  optimizer = "SGD+Nesterov" if config.train.optimizer == "sgd" else config.train.optimizer
  return {"benchmark": f"{model} CIFAR train step (batch {batch}, {optimizer}, augmentation on device)",
          "data": "synthetic CIFAR-shaped", "dtype": dtype_name, "loop": loop,
          "seconds_per_step": seconds, "images_per_s": batch / seconds,
          "gflops": flops / seconds / 1e9, "compile_s": compile_s}


def main(argv):
  del argv
  device = jax.devices()[0]
  cpu = device.platform == "cpu"
  n = FLAGS.matmul_n or (2048 if cpu else 8192)
  out = {"device": f"{device.platform}: {device.device_kind}", "jax": jax.__version__,
         "matmul_n": n, "matmul_peak_gflops": matmul_peak_gflops(n)}
  peaks = {"float32": out["matmul_peak_gflops"]}
  line = f"device {out['device']}, jax {out['jax']}, f32 matmul peak {peaks['float32']:.0f} GFLOP/s"
  if not cpu:  # f32 at JAX's default precision may run on TF32 tensor cores; also give true f32.
    out["matmul_peak_gflops_f32_highest"] = matmul_peak_gflops(n, precision="highest")
    out["matmul_peak_gflops_bf16"] = peaks["bfloat16"] = matmul_peak_gflops(n, jnp.bfloat16)
    line += (f" (precision=highest: {out['matmul_peak_gflops_f32_highest']:.0f}), "
             f"bf16 {peaks['bfloat16']:.0f} GFLOP/s")
  print(line + f" (n={n})", flush=True)
  out["results"] = []

  def report(r):
    per = r.get("seconds_per_epoch", r.get("seconds_per_step"))
    r["peak_dtype"] = r["dtype"] if r["dtype"] in peaks else "float32"
    r["pct_of_matmul_peak"] = 100 * r["gflops"] / peaks[r["peak_dtype"]]
    print(f"{r['benchmark']} [{r['data']}, {r['dtype']}, {r['loop']} loop]: {per:.4f} s, "
          f"{r['images_per_s']:.0f} images/s, {r['gflops']:.1f} GFLOP/s "
          f"({r['pct_of_matmul_peak']:.0f}% of {r['peak_dtype']} matmul peak), compile {r['compile_s']:.1f} s",
          flush=True)
    out["results"].append(r)

  report(lenet_epoch(FLAGS.data_dir, FLAGS.lenet_epochs))
  for model in FLAGS.conv_models:
    for dtype_name in FLAGS.dtypes:
      report(conv_steps(model, dtype_name, FLAGS.resnet_steps, FLAGS.resnet_batch))
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  app.run(main)
