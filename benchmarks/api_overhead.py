r"""The public API against the job path: SNIP on LeNet-300-100 / MNIST, both compiled.

  python benchmarks/api_overhead.py --data_dir=$TFDS_DATA_DIR [--repeats=5]

Times the second and later calls (compilation excluded) of pruning.prune_states (what the
jobs run) and asj.prune (what users call, on the same theta_0, data and key), and checks
that their masks are equal. Prints the medians and the ratio.
"""
import time

import jax
import numpy as np
from absl import app, flags

import autosparse_jax as asj
from autosparse_jax import prune_spec, masks as masks_lib, pruning
from autosparse_jax.lab import config_tools, engine, runs
from autosparse_jax.data import batching

flags.DEFINE_string("data_dir", "", "TFDS data dir with MNIST prepared.")
flags.DEFINE_integer("repeats", 5, "Timed calls of each (after one compiling call).")
FLAGS = flags.FLAGS


def median_seconds(fn, repeats):
  jax.block_until_ready(fn())  # Compiles.
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times)), out


def main(argv):
  del argv
  config = config_tools.load_config("prune", "lenet_mnist")
  config.criterion, config.sparsity, config.data.data_dir = "snip", 0.98, FLAGS.data_dir
  task = engine.build_task(config)
  states = engine.init_states(config, task)
  job_s, job_out = median_seconds(lambda: runs.prune_states(prune_spec.from_config(config, "snip", density=1.0 - 0.98), task, states)[0].masks,
                                  FLAGS.repeats)
  params = jax.tree.map(lambda x: x[0], states.params)
  images = np.asarray(batching.normalize(task.train_images, task.trainer.spec))
  labels = np.asarray(task.train_labels)
  batches = [(images[i:i + 128], labels[i:i + 128]) for i in range(0, len(labels), 128)]
  model = task.trainer.model
  apply_fn = lambda p, x: model.apply({"params": p}, x, train=False)
  api_s, api_out = median_seconds(lambda: asj.prune("snip", params, apply_fn=apply_fn, batches=batches,
                                                    sparsity=0.98, key=jax.random.PRNGKey(0),
                                                    prunable=masks_lib.DEFAULT_PRUNABLE), FLAGS.repeats)
  same = all(np.array_equal(np.asarray(a)[0], np.asarray(b))
             for a, b in zip(jax.tree.leaves(job_out), jax.tree.leaves(api_out)))
  print(f"SNIP, LeNet-300-100 / MNIST (60000 images, 468 batches of 128), median of {FLAGS.repeats}:")
  print(f"  job path (pruning.prune_states): {job_s:.3f} s")
  print(f"  public API (asj.prune):          {api_s:.3f} s   ratio API / job {api_s / job_s:.2f}")
  print(f"  masks equal: {same}")


if __name__ == "__main__":
  app.run(main)
