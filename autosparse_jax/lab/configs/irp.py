r"""Iterative rewind pruning: the surviving-score datasets AutoS learns from.

  python -m autosparse_jax.lab.main --config=configs/irp.py:RECIPE --workdir=DIR \
    [--config.criterion=snip|magnitude] [--config.irp.rounds=20] [--config.num_seeds=3]

criterion snip = SNIP-iter (the paper's default), magnitude = LTH; any jittable
criterion works. 20 rounds to density 0.01 (equal count per round: the
original's working schedule; `--config.irp.schedule=geometric` for d^(i/N)).
Round 0 prunes at initialisation (original code); --config.irp.train_first=True
trains the dense network first (standard LTH); --config.irp.rewind_step=K
rewinds to the weights at step K of the first training instead of theta_0.

Resume is the default: the job checkpoints (Orbax, DIR/checkpoints) after
rounds and every irp.checkpoint_every_steps steps inside them, at most one per
config.checkpoint_min_seconds (60 s: a resume redoes the rounds after it, bit
for bit; a digits round takes 0.2 s, a save 0.15 s), always on preemption
(config.preemption_signal) and after the last round; running the same
command again continues from the latest complete checkpoint, bit-identical to
an uninterrupted run. results.json: per-round density, accuracy and time, the
survival histogram, and `score_dataset_dir` (TFDS, array_record; a list with
one directory per seed when num_seeds > 1).

Cost: one round = one training run of the recipe (lenet_mnist: 100 epochs,
~60 s on the 2-core CPU; --config.train.epochs=2 gives the REFERENCE.md
reduced setting, ~1.5 s of training per round). ResNet-18/CIFAR-10 at 160
epochs per round is a GPU job: 20 x 160 epochs.
"""
import ml_collections

from autosparse_jax.lab import recipes


def get_config(arg="lenet_digits"):
  config = recipes.recipe_config(arg)
  config.job = "irp"
  config.criterion = "snip"
  config.irp = ml_collections.ConfigDict(dict(
      rounds=20, final_density=0.01,
      schedule="count",          # count: d_i = 1 - (1 - d)(i + 1)/N | geometric: d^((i + 1)/N)
      train_first=False,         # True: train dense first (standard LTH)
      rewind_step=0,             # 0: rewind to theta_0; K: to the weights at step K (late rewinding)
      prune_zero_scores=False,   # True: also prune every score == 0, as the original code does
      checkpoint_every_steps=0,  # 0: checkpoint after rounds only
      keep_checkpoints=2))
  return config
