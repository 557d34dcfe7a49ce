r"""Scoring time of each pruning criterion (one seed), compile excluded and included.

  python benchmarks/scoring_time.py [--data_dir=DIR] [--models=lenet,resnet18] [--json=out.json]

LeNet-300-100 on MNIST (real when prepared in --data_dir, else MNIST-shaped synthetic)
and ResNet-18 on CIFAR-10-shaped synthetic data (timing depends on shapes only).
Pruning data: --num_batches batches of 128 for SNIP (0 = the whole training set),
10 samples per class for GraSP; SynFlow runs its 100 rounds. Also prints GraSP's
cost in units of one gradient evaluation over the same samples.
"""
import dataclasses
import json
import time

from absl import app, flags

import autosparse_jax  # noqa: F401  (sets XLA flags before jax starts)
import jax

from autosparse_jax import criteria, engine, pruning, recipes
from autosparse_jax.criteria import base, saliency
from autosparse_jax.data import DatasetNotPreparedError, load_dataset
from autosparse_jax.data.specs import SPECS

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "", "TFDS data dir with MNIST prepared (optional).")
flags.DEFINE_list("models", ["lenet", "resnet18"], "Which of lenet, resnet18.")
flags.DEFINE_list("criteria", ["random", "magnitude", "snip", "grasp", "synflow"], "Criteria.")
flags.DEFINE_integer("num_batches", 1, "SNIP pruning batches (0 = whole training set).")
flags.DEFINE_integer("synflow_rounds", 100, "SynFlow rounds (fewer to estimate the per-round cost).")
flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")


def make_task(model):
  if model == "lenet":
    config = recipes.recipe_config("lenet_mnist")
    config.data.data_dir = FLAGS.data_dir
    try:
      load_dataset("mnist", FLAGS.data_dir)
    except (DatasetNotPreparedError, ImportError):  # ImportError: no tensorflow_datasets here.
      config.dataset = "synthetic"
      config.data.synthetic.update(dict(image_shape=(28, 28, 1), num_train=60000, num_test=100))
    spec = SPECS["mnist"]
  else:
    config = recipes.recipe_config("resnet18_cifar10")
    config.dataset = "synthetic"
    config.data.synthetic.update(dict(image_shape=(32, 32, 3), num_train=2560, num_test=128))
    spec = SPECS["cifar10"]
  config.prune.num_batches = FLAGS.num_batches
  config.prune.rounds = 0  # Criterion defaults; SynFlow's is set below.
  task = engine.build_task(config)
  task = dataclasses.replace(task, trainer=dataclasses.replace(task.trainer, spec=spec))
  return config, task


def timed(fn):
  t = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - t


def main(argv):
  del argv
  rows = []
  for model in FLAGS.models:
    config, task = make_task(model)
    states = engine.init_states(config, task)
    for name in FLAGS.criteria:
      config.prune.rounds = FLAGS.synflow_rounds if name == "synflow" else 0
      prune = lambda: pruning.prune_states(config, task, states, name, 0.98)  # Compiled once per task.
      _, first = timed(prune)
      _, second = timed(prune)
      rows.append({"model": model, "criterion": name, "with_compile_s": first, "scoring_s": second})
      print(f"{model:9s} {name:10s} with compilation {first:7.2f} s   scoring {second:7.2f} s", flush=True)
    # GraSP's cost in gradient evaluations over its own samples.
    trainer = task.trainer
    state = jax.tree.map(lambda x: x[0], states)
    ms = criteria.ModelState(state.batch_stats, trainer.model, trainer.spec)
    data = criteria.PruneData(task.train_images, task.train_labels)
    batches = saliency.grasp_batches(data, jax.random.PRNGKey(0), config.prune, trainer.spec.num_classes)
    grad = jax.jit(lambda p: base.accumulated_gradient(ms, p, state.masks, data, batches, "mean", 200.0))
    hvp = jax.jit(lambda p: saliency.hessian_gradient_product(ms, p, state.masks, data, batches, 200.0))
    timed(lambda: grad(state.params)), timed(lambda: hvp(state.params))
    _, g_s = timed(lambda: grad(state.params))
    _, h_s = timed(lambda: hvp(state.params))
    rows.append({"model": model, "grasp_cost_in_gradients": h_s / g_s})
    print(f"{model:9s} GraSP (g and Hg) = {h_s / g_s:.2f} gradient evaluations ({h_s:.3f} s vs {g_s:.3f} s)",
          flush=True)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
