r"""One vmapped grid against the same networks trained one by one.

  python benchmarks/sweep_grid.py [--models=lenet,resnet18] [--sparsities=0.9,0.98] [--seeds=2]
      [--steps=20] [--resnet_width=0.25] [--resnet_batch=32] [--json=out.json]

For each model: P sparsities x S seeds of magnitude-pruned networks (masks differ,
shapes do not) train --steps steps (a) stacked on the vmapped axis in one compiled
program, as the sweep job does, and (b) one network at a time with the same program
at size 1, as a loop of separate runs would. Synthetic data of the real shapes
(MNIST 28x28x1 for LeNet-300-100, CIFAR 32x32x3 for ResNet-18): timing only
depends on shapes. Compile time is reported separately; the timed figure is the
best of --repeats runs. Steps are driven as the jobs drive them (training.LOOPS "auto":
one unrolled step per call for conv nets on CPU, a lax.scan otherwise).
"""
import json
import time

from absl import app, flags

import autosparse_jax  # noqa: F401  (sets XLA flags before jax starts)
import jax
import jax.numpy as jnp

from autosparse_jax import prune_spec, training
from autosparse_jax.lab import engine, recipes
from autosparse_jax.lab.jobs import sweep

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["lenet", "resnet18"], "lenet and/or resnet18.")
flags.DEFINE_list("sparsities", ["0.9", "0.98"], "Sparsities of the grid.")
flags.DEFINE_integer("seeds", 2, "Seeds per sparsity.")
flags.DEFINE_integer("steps", 20, "Timed training steps per network.")
flags.DEFINE_integer("repeats", 2, "Timed repeats (best is reported).")
flags.DEFINE_float("resnet_width", 0.25, "ResNet-18 width (1.0 on GPUs).")
flags.DEFINE_integer("resnet_batch", 32, "ResNet-18 batch size (128 on GPUs).")
flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")


def make(model):
  config = recipes.base_config()
  config.dataset = "synthetic"
  if model == "lenet":
    config.model, batch, shape, n = "lenet_300_100", 128, (28, 28, 1), 128 * FLAGS.steps
  else:
    config.model, batch, shape, n = "resnet18", FLAGS.resnet_batch, (32, 32, 3), FLAGS.resnet_batch * FLAGS.steps
    config.width = FLAGS.resnet_width
  config.data.synthetic = dict(image_shape=shape, num_classes=10, num_train=n, num_test=batch, seed=0)
  config.train.batch_size = batch
  config.num_seeds = FLAGS.seeds
  return config, engine.build_task(config)


def driver(config, task):
  """A function training `steps` steps of stacked states, as run_training drives them."""
  trainer = task.trainer
  loop = training.resolve_loop("auto", trainer, jax.default_backend())
  if loop == "python":
    step = training.jit_epoch(trainer, 1, unroll=True)

    def run(states):
      for _ in range(trainer.steps_per_epoch):
        states, _ = step(states, task.train_images, task.train_labels)
      return states
    return run, loop
  epoch = training.jit_epoch(trainer)
  return lambda states: epoch(states, task.train_images, task.train_labels)[0], loop


def copy(states):
  return jax.tree.map(jnp.copy, states)  # The step donates its input.


def best_time(fn, states, repeats):
  out = jax.block_until_ready(fn(copy(states)))  # Compiles.
  best = float("inf")
  for _ in range(repeats):
    fresh = copy(states)
    t = time.perf_counter()
    out = jax.block_until_ready(fn(fresh))
    best = min(best, time.perf_counter() - t)
  return best, out


def main(argv):
  del argv
  rows = []
  sparsities = [float(s) for s in FLAGS.sparsities]
  for model in FLAGS.models:
    config, task = make(model)
    seeds = list(range(FLAGS.seeds))
    cells = [(p, s) for p in sparsities for s in seeds]
    specs = {p: (prune_spec.from_config(config, "magnitude", density=1.0 - p), None) for p in sparsities}
    grid, _ = sweep.grid_states(config, task, specs, cells, seeds)
    run, loop = driver(config, task)
    t = time.perf_counter()
    jax.block_until_ready(run(copy(grid)))
    grid_compile = time.perf_counter() - t
    grid_s, _ = best_time(run, grid, FLAGS.repeats)
    singles = [jax.tree.map(lambda x, i=i: x[i:i + 1], grid) for i in range(len(cells))]
    t = time.perf_counter()
    jax.block_until_ready(run(copy(singles[0])))
    one_compile = time.perf_counter() - t
    one_by_one = 0.0
    for single in singles:
      seconds, _ = best_time(run, single, FLAGS.repeats)
      one_by_one += seconds
    row = {"model": model, "backend": jax.default_backend(), "networks": len(cells), "steps": FLAGS.steps,
           "batch": int(config.train.batch_size), "width": float(config.width), "loop": loop,
           "grid_seconds": grid_s, "one_by_one_seconds": one_by_one, "speedup": one_by_one / grid_s,
           "grid_compile_seconds": grid_compile, "single_compile_seconds": one_compile}
    rows.append(row)
    print(f"{model:9s} {len(cells)} networks x {FLAGS.steps} steps ({loop}): grid {grid_s:.2f} s, "
          f"one by one {one_by_one:.2f} s, speed-up {row['speedup']:.2f}x "
          f"(compile: grid {grid_compile:.1f} s, single {one_compile:.1f} s; one-by-one "
          f"separate runs would also compile once each)", flush=True)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
