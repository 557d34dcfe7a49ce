r"""The published LeNet-300-100 / MNIST reproduction, for the criteria added or changed since.

  python -m autosparse_jax.lab.main --config=configs/criteria_reproduction.py --workdir=workdirs/criteria \
    --config.data.data_dir=$TFDS_DATA_DIR

Exactly the sweep stage of configs/mnist_reproduction.py (results/lenet_mnist/): the paper's
LeNet-300-100 recipe (Adam 1.2e-3, batch 128, wd 5e-4), 20 epochs per pruned network (the
paper: 100), sparsities 90/95/98/99%, seeds 0, 1, 2, each criterion's 12 networks trained
vmapped in one program, final-epoch test accuracy. Criteria: grasp (its Hessian-gradient
product now along the prunable weights only), grasp_abs, synflow_l2, ntk_sap, px, prospr,
force, fisher, with their defaults (autosparse_jax/criteria/*.py), and random (the same
networks as the published random row: a check that nothing else moved). No dense row, and
no magnitude / snip / synflow / npb / autos / IRP rows: they are in the published table.

Measured on the 2-core CPU on 2026-12-01: 2082 s of sweep (35 min wall; 1.5 GB RSS), while
another job shared the cores. The random row equals the published one number for number.
Table (results/lenet_mnist_criteria/):

test accuracy (%), mean +- std over 3 seeds

| criterion | 90% | 95% | 98% | 99% |
|---|---|---|---|---|
| random | 97.38 +- 0.15 | 96.01 +- 0.19 | 77.85 +- 0.38 | 29.98 +- 4.41 |
| grasp | 97.60 +- 0.08 | 97.18 +- 0.06 | 95.64 +- 0.23 | 91.55 +- 0.18 |
| grasp_abs | 97.69 +- 0.08 | 97.07 +- 0.09 | 95.67 +- 0.10 | 90.52 +- 0.98 |
| synflow_l2 | 97.67 +- 0.10 | 97.12 +- 0.08 | 95.92 +- 0.07 | **94.29 +- 0.33** |
| ntk_sap | 97.64 +- 0.09 | 96.83 +- 0.11 | 95.11 +- 0.15 | 92.70 +- 0.25 |
| px | 93.99 +- 4.84 | 96.99 +- 0.10 | 92.49 +- 4.44 | 85.71 +- 6.97 |
| prospr | 97.61 +- 0.09 | 97.26 +- 0.10 | 95.55 +- 0.22 | 91.64 +- 0.53 |
| force | 97.57 +- 0.11 | 97.23 +- 0.10 | **96.07 +- 0.32** | 94.02 +- 0.46 |
| fisher | **97.71 +- 0.04** | **97.33 +- 0.13** | 95.87 +- 0.24 | 92.25 +- 0.07 |
"""
from autosparse_jax.lab import config_tools

CRITERIA = ("random", "grasp", "grasp_abs", "synflow_l2", "ntk_sap", "px", "prospr", "force", "fisher")


def get_config():
  config = config_tools.config_module(__file__, "pai_sweep.py").get_config("lenet_mnist")
  config.num_seeds = 3
  config.train.epochs = 20
  config.sparsities = (0.9, 0.95, 0.98, 0.99)
  config.sweep.criteria = CRITERIA
  config.sweep.dense = False
  return config
