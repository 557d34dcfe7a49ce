r"""Are vmapped seeds bit-identical to separate runs on this backend? Is a rerun?

  python benchmarks/seed_identity.py [--epochs=2] [--json=out.json]

LeNet-300-100 (random pruning at init to 80%, Adam) on the embedded digits
dataset: trains num_seeds=3 (seeds 0, 1, 2) in one vmapped program and each
seed alone (num_seeds=1), then compares every leaf of the final TrainStates
(params, masks, optimizer state) bit for bit; also the same num_seeds=1 run
twice. Then the conv case of tests/test_train.py (ResNet-18 at width 1/16 on
8x8 inputs, batch 8, 2 steps), compared to float tolerance. On CPU the LeNet
comparisons are bit-identical (tests/test_train.py); this script answers the
question where tests do not run, e.g. on a GPU.
"""
import dataclasses
import json

from absl import app, flags

import autosparse_jax  # noqa: F401  (sets XLA flags before jax starts)
import jax
import numpy as np

from autosparse_jax import prune_spec, training, pruning
from autosparse_jax.lab import recipes, engine, runs

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs", 2, "LeNet training epochs.")
flags.DEFINE_string("json", "", "Also write the answers to this JSON file.")


def lenet_config(num_seeds, seed):
  config = recipes.recipe_config("lenet_digits")
  config.num_seeds, config.seed = num_seeds, seed
  config.criterion, config.sparsity = "random", 0.8
  return config


def conv_config(num_seeds, seed):
  config = recipes.base_config()
  config.dataset, config.model, config.width = "synthetic", "resnet18", 1 / 16
  config.num_seeds, config.seed = num_seeds, seed
  config.data.synthetic.update(dict(image_shape=(8, 8, 3), num_train=64))
  config.train.update(dict(batch_size=8, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
                           weight_decay=5e-4))
  return config


def trained(config, task, steps_per_call, calls, prune=True):
  states = engine.init_states(config, task)
  if prune:
    states = runs.prune_states(prune_spec.from_config(config, "random", density=1.0 - 0.8), task, states)[0]
  fn = training.jit_epoch(task.trainer, steps_per_call)
  for _ in range(calls):
    states = fn(states, task.train_images, task.train_labels)[0]
  return jax.tree.map(np.asarray, states)


def compare(a_states, i, b_states, j):
  """(leaves that differ, total leaves, max |a - b|, the leaf where it is, max |a - b| / max |b|)."""
  diff, count, worst, where, rel = 0, 0, 0.0, "", 0.0
  leaves = jax.tree_util.tree_flatten_with_path(a_states)[0]
  for (path, a), b in zip(leaves, jax.tree.leaves(b_states)):
    a, b = a[i], b[j]
    count += 1
    if not np.array_equal(a, b):
      diff += 1
      d = np.abs(a.astype(np.float64) - b.astype(np.float64))
      rel = max(rel, float(np.max(d)) / max(float(np.max(np.abs(b))), 1e-30))
      if float(np.max(d)) > worst:
        worst, where = float(np.max(d)), jax.tree_util.keystr(path)
  return diff, count, worst, where, rel


def main(argv):
  del argv
  device = jax.devices()[0]
  out = {"device": f"{device.platform}: {device.device_kind}", "jax": jax.__version__, "checks": []}

  def check(name, result, bitwise):
    diff, count, worst, where, rel = result
    out["checks"].append({"check": name, "differing_leaves": diff, "leaves": count,
                          "max_abs_diff": worst, "max_abs_diff_leaf": where,
                          "max_diff_relative_to_leaf_max": rel, "bit_identical": diff == 0})
    verdict = ("bit-identical" if diff == 0 else f"{diff}/{count} leaves differ, max |diff| {worst:.3g} "
               f"in {where}, max |diff| / max |leaf| {rel:.3g}")
    print(f"{name}: {verdict}" + ("" if bitwise else " (float tolerance expected)"), flush=True)

  config = lenet_config(3, 0)
  task = engine.build_task(config)
  spe = task.trainer.steps_per_epoch
  together = trained(config, task, spe, FLAGS.epochs)
  for i in range(3):
    alone = trained(lenet_config(1, i), task, spe, FLAGS.epochs)
    check(f"lenet digits {FLAGS.epochs} epochs: seed {i} of num_seeds=3 vs num_seeds=1",
          compare(together, i, alone, 0), True)
  first = trained(lenet_config(1, 0), task, spe, FLAGS.epochs)
  second = trained(lenet_config(1, 0), task, spe, FLAGS.epochs)
  check("lenet digits: num_seeds=1 seed 0, run twice", compare(first, 0, second, 0), True)

  config = conv_config(2, 0)
  task = engine.build_task(config)
  task = dataclasses.replace(task, trainer=dataclasses.replace(
      task.trainer, spec=dataclasses.replace(task.trainer.spec, augment=True)))
  together = trained(config, task, 2, 1, prune=False)
  alone = trained(conv_config(1, 1), task, 2, 1, prune=False)
  check("resnet18 w/16 2 steps: seed 1 of num_seeds=2 vs num_seeds=1", compare(together, 1, alone, 0), False)
  check("resnet18 w/16 2 steps: num_seeds=1 seed 1, run twice",
        compare(alone, 0, trained(conv_config(1, 1), task, 2, 1, prune=False), 0), True)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  app.run(main)
