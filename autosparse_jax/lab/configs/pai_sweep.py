r"""Pruning at initialization, swept: criteria x sparsities x seeds, with a table and figures.

  python -m autosparse_jax.lab.main --config=configs/pai_sweep.py:RECIPE --workdir=DIR \
    [--config.sweep.criteria="('random','snip','grasp')"] [--config.sparsities="(0.9,0.98)"] \
    [--config.num_seeds=3] [--config.train.epochs=E]

RECIPE as in configs/train.py. For each criterion, every (sparsity, seed) network is
pruned from its seed's theta_0 and all of them train vmapped in one compiled program
(--config.sweep.max_networks_per_program=K splits it when memory is short; the default -1
trains conv nets on CPU one network per program, where a vmapped conv grid is ~2x slower). Output in
DIR: results.jsonl (one row per network: accuracy, density overall and per layer,
effective paths/nodes, scoring time), table.md / table.csv (mean +- std over seeds),
accuracy_vs_sparsity.png (paper Figures 3 and 6), layer_density.png, results.json.
Re-running the command resumes: networks already in results.jsonl are not retrained.

AutoS and IRP masks join the sweep as variants, e.g.
  --config.sweep.criteria="('snip','autos','snip_iter')" \
  --config.autos.scorer_dir=SCORER_DIR \
  --config.sweep.variants.snip_iter.survival.score_datasets="('IRP_DIR/scores/seed_0/...',)"
(configs/quickstart.py builds the whole chain: IRP -> score dataset -> AutoS -> sweep.)

Cost on the 2-core CPU: the quickstart's sweep stage (digits, 9 criteria x 3 sparsities x 2
seeds, 30 epochs) takes 45 s. LeNet-300-100 / MNIST: one vmapped grid of 12 networks
trains at 7.5 s per epoch (measured with other jobs on the machine); ResNet-18 / CIFAR-10 is a GPU job (BENCHMARKS.md).
"""
import ml_collections

from autosparse_jax.lab import recipes

ONE_SHOT = ("random", "magnitude", "snip", "grasp", "synflow", "npb")


def get_config(arg="lenet_digits"):
  config = recipes.recipe_config(arg)
  config.job = "sweep"
  config.num_seeds = 3
  config.sparsities = (0.9, 0.95, 0.98, 0.99)  # The same field as the prune job's.
  config.sweep = ml_collections.ConfigDict(dict(
      criteria=ONE_SHOT,
      dense=True,                  # Also train the dense network (one row per seed).
      max_networks_per_program=-1,  # -1: auto (conv nets on CPU one at a time); 0: the whole grid.
      # label -> {"criterion": NAME, fields to set}; a label in `criteria` runs it.
      variants=ml_collections.ConfigDict(dict(
          lth=dict(criterion="survival", survival=dict(score_datasets=())),
          snip_iter=dict(criterion="survival", survival=dict(score_datasets=())),
      )),
  ))
  return config
