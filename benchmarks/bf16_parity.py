r"""config.dtype=bfloat16 against float32: accuracy (seeds) and epoch time of the same train job.

  python benchmarks/bf16_parity.py [--data_dir=$TFDS_DATA_DIR] [--epochs=5] [--seeds=3]

For each recipe (lenet_digits always; lenet_mnist when MNIST is prepared in
--data_dir) it runs configs/prune.py with SNIP at --sparsity, --seeds seeds
vmapped, once per dtype, interleaved, and prints final test accuracy mean / std
over seeds and the median epoch time after the first (compiling) epoch. The masks
are the same in both runs (scores are float32); only the compute dtype differs.
"""
import json
import os
import tempfile

from absl import app, flags

import autosparse_jax  # noqa: F401  (sets XLA flags before jax starts)
import numpy as np

from autosparse_jax.lab import config_tools
from autosparse_jax.data import DatasetNotPreparedError, load_dataset
from autosparse_jax.lab.jobs import run

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "", "TFDS data dir with MNIST prepared (optional).")
flags.DEFINE_integer("epochs", 5, "Epochs per run.")
flags.DEFINE_integer("seeds", 3, "Seeds per run (vmapped).")
flags.DEFINE_float("sparsity", 0.9, "SNIP sparsity.")
flags.DEFINE_string("json", "", "Also write the figures here.")



def one_run(recipe, dtype, workdir):
  config = config_tools.load_config("prune", recipe)
  config.dtype, config.num_seeds, config.train.epochs = dtype, FLAGS.seeds, FLAGS.epochs
  config.criterion, config.sparsity = "snip", FLAGS.sparsity
  config.data.data_dir, config.tensorboard = FLAGS.data_dir, False
  results = run(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    epochs = [json.loads(line) for line in f if '"epoch_seconds"' in line]
  seconds = [e["epoch_seconds"] for e in epochs[1:]] or [epochs[0]["epoch_seconds"]]
  return {"accuracy": results["test_accuracy_seeds"]["per_seed"], "epoch_seconds": float(np.median(seconds))}


def main(argv):
  del argv
  recipes = ["lenet_digits"]
  try:
    load_dataset("mnist", FLAGS.data_dir)
    recipes.append("lenet_mnist")
  except DatasetNotPreparedError:
    print("MNIST is not prepared in --data_dir: digits only.")
  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    for recipe in recipes:
      for dtype in ("float32", "bfloat16"):
        out[(recipe, dtype)] = one_run(recipe, dtype, os.path.join(tmp, f"{recipe}_{dtype}"))
  print(f"\nSNIP {FLAGS.sparsity:.0%}, {FLAGS.epochs} epochs, {FLAGS.seeds} seeds\n")
  print("| recipe | dtype | test accuracy (mean ± std) | per seed | epoch (s) | f32 / bf16 time |")
  print("|---|---|---|---|---|---|")
  for (recipe, dtype), r in out.items():
    acc = 100 * np.asarray(r["accuracy"])
    speed = out[(recipe, "float32")]["epoch_seconds"] / r["epoch_seconds"]
    print(f"| {recipe} | {dtype} | {acc.mean():.2f} ± {acc.std():.2f} | "
          f"{', '.join(f'{a:.2f}' for a in acc)} | {r['epoch_seconds']:.3f} | {speed:.2f}x |")
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump({f"{k[0]}/{k[1]}": v for k, v in out.items()}, f, indent=1)


if __name__ == "__main__":
  app.run(main)
