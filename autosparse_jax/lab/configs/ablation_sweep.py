r"""Frankle et al. (ICLR 2021)'s sanity checks of pruning at init, on LeNet-300-100 / MNIST.

  python -m autosparse_jax.lab.main --config=configs/ablation_sweep.py --workdir=workdirs/ablations \
    --config.data.data_dir=$TFDS_DATA_DIR

Does a criterion's gain lie in the weights it keeps, or only in the layer densities it
picks? Each of snip, grasp, synflow and autos prunes under config.prune.ablation:
  CRIT          none: the criterion as it is
  CRIT_shuffle  shuffle_layerwise: each layer's mask randomly permuted (keys.ablation_key):
                the criterion's layer densities, random weights within each layer
  CRIT_reinit   reinit: the same masks on a theta_0 drawn from another key
  CRIT_invert   invert: the highest scores pruned instead of the lowest
plus random (global: every layer at about the overall density). A criterion whose row does
not beat its CRIT_shuffle row gains nothing from choosing the weights within a layer.
Frankle et al. report for SNIP, GraSP and SynFlow (and magnitude) on CIFAR-10 and ImageNet
that shuffling within layers and reinitialising do not hurt; that inverting hurts SNIP and
SynFlow; and that inverted GraSP does as well as GraSP or better.

The recipe of the published reproduction (results/lenet_mnist/, configs/mnist_reproduction.py):
LeNet-300-100, Adam 1.2e-3, batch 128, wd 5e-4, 20 epochs per network (the paper: 100),
seeds 0, 1, 2, final-epoch test accuracy; sparsities 95% and 98%. autos is the pretrained
scorer shipped in the package (autosparse_jax/autos/pretrained/lenet_mnist: IRP-SNIP of
this network on real MNIST, seed 0, g_0 mean-reduced, hence prune.grad_reduction="mean" in
its variants). Caveat: that scorer learnt from the IRP of seed 0's theta_0, the same
theta_0 as seed 0 here.

Measured on the 2-core CPU on 2026-12-01: 1148 s of sweep (19 min wall; 1.2 GB RSS).
Table (results/lenet_mnist_ablations/):

test accuracy (%), mean +- std over 3 seeds

| criterion | 95% | 98% |
|---|---|---|
| random | 96.01 +- 0.19 | 77.85 +- 0.38 |
| snip | 97.22 +- 0.12 | 95.81 +- 0.31 |
| snip_shuffle | 97.08 +- 0.10 | 95.49 +- 0.23 |
| snip_reinit | 97.39 +- 0.10 | 95.77 +- 0.24 |
| snip_invert | 69.35 +- 11.78 | 46.57 +- 14.53 |
| grasp | 97.18 +- 0.06 | 95.64 +- 0.23 |
| grasp_shuffle | 97.12 +- 0.09 | 95.28 +- 0.21 |
| grasp_reinit | 97.36 +- 0.17 | 95.61 +- 0.20 |
| grasp_invert | **97.41 +- 0.02** | 96.11 +- 0.18 |
| synflow | 97.20 +- 0.06 | 95.85 +- 0.24 |
| synflow_shuffle | 97.07 +- 0.06 | 95.62 +- 0.15 |
| synflow_reinit | 97.37 +- 0.07 | 95.95 +- 0.09 |
| synflow_invert | 11.35 +- 0.00 | 11.35 +- 0.00 |
| autos | 97.23 +- 0.21 | 95.88 +- 0.27 |
| autos_shuffle | 97.05 +- 0.14 | 95.37 +- 0.10 |
| autos_reinit | 97.31 +- 0.15 | **96.11 +- 0.14** |
| autos_invert | 59.31 +- 10.88 | 25.38 +- 4.14 |
"""
import os

import autosparse_jax
from autosparse_jax.lab import config_tools

ABLATIONS = {"": "none", "_shuffle": "shuffle_layerwise", "_reinit": "reinit", "_invert": "invert"}
CRITERIA = ("snip", "grasp", "synflow", "autos")
SCORER_DIR = os.path.join(os.path.dirname(os.path.abspath(autosparse_jax.__file__)), "autos", "pretrained",
                          "lenet_mnist")


def get_config():
  config = config_tools.config_module(__file__, "pai_sweep.py").get_config("lenet_mnist")
  config.num_seeds = 3
  config.train.epochs = 20
  config.sparsities = (0.95, 0.98)
  config.sweep.dense = False
  labels = ["random"]
  for criterion in CRITERIA:
    for suffix, ablation in ABLATIONS.items():
      variant = dict(criterion=criterion, prune=dict(ablation=ablation))
      if criterion == "autos":
        variant["autos"] = dict(scorer_dir=SCORER_DIR)
        variant["prune"]["grad_reduction"] = "mean"  # The scorer learnt mean-reduced g_0.
      config.sweep.variants[criterion + suffix] = variant
      labels.append(criterion + suffix)
  config.sweep.criteria = tuple(labels)
  return config
