r"""Measures the figures of a pretrained AutoS scorer's model card and writes MODEL_CARD.md.

  python benchmarks/pretrained_card.py --workdir=workdirs/pretrained --data_dir=$TFDS_DATA_DIR \
    --out=autosparse_jax/autos/pretrained/lenet_mnist

--workdir: the pipeline of configs/pretrained_autos.py (its autos stage's results.json and
scorer). Accuracies: LeNet-300-100 / real MNIST through configs/prune.py (10 epochs, seed 0),
and the SmallCNN of examples/prune_your_own_model.py on digits through the public API
(15 epochs), each at 90 / 95 / 98% sparsity, with random and SNIP beside them.
"""
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
from absl import app, flags, logging

import autosparse_jax as asj
from autosparse_jax.lab import config_tools, jobs

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import prune_your_own_model as example  # noqa: E402

flags.DEFINE_string("workdir", None, "The configs/pretrained_autos.py pipeline's workdir.")
flags.DEFINE_string("data_dir", "", "TFDS data dir with MNIST prepared.")
flags.DEFINE_string("out", None, "Where the scorer and its MODEL_CARD.md go.")
flags.DEFINE_integer("lenet_epochs", 10, "Epochs of each pruned LeNet-300-100.")
FLAGS = flags.FLAGS
SPARSITIES = (0.9, 0.95, 0.98)


def lenet_rows(scorer_dir):
  rows = {}
  for criterion in ("random", "snip", "autos"):
    config = config_tools.load_config("prune", "lenet_mnist")
    config.criterion, config.sparsities = criterion, SPARSITIES
    config.train.epochs, config.data.data_dir = FLAGS.lenet_epochs, FLAGS.data_dir
    config.prune.grad_reduction, config.autos.scorer_dir = "mean", scorer_dir
    results = jobs.run(config, os.path.join(FLAGS.workdir, "card", f"lenet_{criterion}"))
    rows[criterion] = [100 * r["test_accuracy"] for r in results["runs"]]
  return rows


def cnn_rows(scorer):
  data = example.user_data()
  net = example.SmallCNN()
  params = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  apply_fn = lambda p, x: net.apply({"params": p}, x)
  batches = [(data[0][i:i + 128], data[1][i:i + 128]) for i in range(0, len(data[1]), 128)]
  rows = {}
  for criterion in ("random", "snip", "autos"):
    extra = {"scorer": scorer} if criterion == "autos" else {}
    rows[criterion] = []
    for s in SPARSITIES:
      masks = asj.prune(criterion, params, apply_fn=apply_fn, batches=batches, sparsity=s,
                        key=jax.random.key(1), **extra)
      rows[criterion].append(100 * example.train(net, params, masks, data, 15, seed=0)[0])
  return rows


def table(rows):
  out = ["| criterion | " + " | ".join(f"{100 * s:g}%" for s in SPARSITIES) + " |",
         "|---" * (len(SPARSITIES) + 1) + "|"]
  out += [f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |" for name, values in rows.items()]
  return "\n".join(out)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax's INFO lines.
  stage = os.path.join(FLAGS.workdir, "autos")
  with open(os.path.join(stage, "results.json")) as f:
    trained = json.load(f)
  with open(os.path.join(FLAGS.workdir, "irp", "results.json")) as f:
    irp = json.load(f)
  if os.path.abspath(FLAGS.out) != os.path.abspath(trained["scorer_dir"]):
    shutil.copytree(trained["scorer_dir"], FLAGS.out, dirs_exist_ok=True)
  scorer = asj.autos.load_scorer(FLAGS.out)
  lenet, cnn = lenet_rows(FLAGS.out), cnn_rows(scorer)
  info = scorer.info
  card = f"""# AutoS scorer `lenet_mnist`

Learns, for each weight, how many rounds of iterative rewind pruning it survives, from its
initial value and initial gradient. Load it with `asj.autos.pretrained("lenet_mnist")`.

- **Made by:** `python -m autosparse_jax.lab.main --config=configs/pretrained_autos.py --workdir=WORKDIR
  --config.irp.data.data_dir=$TFDS_DATA_DIR`, then `python benchmarks/pretrained_card.py
  --workdir=WORKDIR --data_dir=$TFDS_DATA_DIR --out=autosparse_jax/autos/pretrained/lenet_mnist`.
- **Trained on:** IRP-SNIP (SNIP-iter) of LeNet-300-100 on real MNIST, seed 0, {irp['rounds'][-1]['round'] + 1}
  rounds to density {irp['final_density']:.2f} (equal count per round), 2 epochs per round; its
  {irp['num_weights']} weights, {trained['held_out_weights']} of them held out.
- **Network:** {info['backbone']} backbone, width {info['width']}, {info['dtype']}.
- **Features:** {', '.join(info['features'])} (theta_0 and g_0), standardised with the training
  split's statistics (saved with the scorer).
- **g_0 reduction:** `{info['g0_reduction']}`: the mean over batches of the batch-mean loss gradient,
  so its scale does not depend on how many batches you pass (`grad_reduction="mean"` in the jobs;
  the API uses the scorer's own).
- **Held-out MSE:** {trained['held_out_mse']:.5f} (variance of the held-out scores
  {trained['held_out_variance']:.5f}).

## Test accuracy (%) when pruning at initialisation with it

LeNet-300-100 on real MNIST, {FLAGS.lenet_epochs} epochs, seed 0 (configs/prune.py:lenet_mnist):

{table(lenet)}

The SmallCNN of examples/prune_your_own_model.py on the embedded digits (a network and a dataset
the scorer never saw), 15 epochs of Adam, through the public API:

{table(cnn)}

Measured on the 2-core CPU. One seed: differences under about one point are noise.
"""
  with open(os.path.join(FLAGS.out, "MODEL_CARD.md"), "w") as f:
    f.write(card)
  print(card)


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)
