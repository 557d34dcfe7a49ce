r"""Structured vs unstructured masks from every kind of criterion: LeNet-300-100 / real MNIST.

  python -m autosparse_jax.lab.main --config=configs/structured_reproduction.py --workdir=workdirs/structured \
    --config.unstructured.data.data_dir=$TFDS_DATA_DIR --config.nm_2_4.data.data_dir=$TFDS_DATA_DIR \
    --config.nm_1_4.data.data_dir=$TFDS_DATA_DIR --config.channel.data.data_dir=$TFDS_DATA_DIR

(MNIST prepared offline first: python -m autosparse_jax.data.prepare mnist --raw_dir=DIR --data_dir=DIR.)
A pipeline of four sweeps of the paper's LeNet-300-100 recipe (Adam 1.2e-3, batch 128, wd 5e-4),
20 epochs per pruned network, seeds 0, 1, 2, criteria random, magnitude, snip, grasp, synflow,
synflow_l2 and autos (the shipped pretrained scorer, lenet_mnist):
  unstructured  sparsities 50% and 75%
  nm_2_4        2:4 (50%)        nm_1_4  1:4 (75%)
  channel       whole hidden units at 50% and 75%, layerwise, the classifier dense (group score: the
                sum of the unit's weights' scores)
Every row also has its inference FLOPs per example and the bytes of its weights (dense, values +
bitmask, N:M compressed); each stage writes table.md with both and accuracy_vs_flops.png.
Measured on the 2-core CPU: see README.md ("Structured sparsity") for the time and the table.
"""
import os

import ml_collections

from autosparse_jax.lab import config_tools
from autosparse_jax.autos import PRETRAINED_DIR

CRITERIA = ("random", "magnitude", "snip", "grasp", "synflow", "synflow_l2", "autos")
STAGES = {  # stage: (structure, sparsities)
    "unstructured": ("unstructured", (0.5, 0.75)),
    "nm_2_4": ("2:4", (0.5,)),
    "nm_1_4": ("1:4", (0.75,)),
    "channel": ("channel", (0.5, 0.75)),
}
PRETRAINED = os.path.join(PRETRAINED_DIR, "lenet_mnist")  # Shipped in the package.


def get_config():
  config = ml_collections.ConfigDict()
  config.job = "pipeline"
  config.stages = tuple(STAGES)
  config.survival_figure_stage = ""
  for name, (structure, sparsities) in STAGES.items():
    sweep = config_tools.config_module(__file__, "pai_sweep.py").get_config("lenet_mnist")
    sweep.num_seeds = 3
    sweep.train.epochs = 20
    sweep.sparsities = sparsities
    sweep.sweep.criteria = CRITERIA
    sweep.sweep.dense = name == "unstructured"
    sweep.prune.structure = structure
    sweep.autos.scorer_dir = PRETRAINED
    sweep.prune.grad_reduction = "mean"  # The g_0 reduction the pretrained scorer learnt from.
    if structure == "channel":
      # Each hidden layer keeps its share of units and the classifier stays whole: under `global`
      # the summed group scores favour the 784-input units of the first layer, and random,
      # magnitude and autos then remove every unit of the later layers (chance accuracy, 11.35%).
      sweep.prune.distribution = "layerwise"
      sweep.prune.prunable = r"^Dense_[01]/kernel$"
    config[name] = sweep
  return config
