r"""The reproduction we publish: LeNet-300-100 on real MNIST, every criterion, 3 seeds.

  python -m autosparse_jax.data.prepare mnist --raw_dir=RAW --data_dir=$TFDS_DATA_DIR  # once
  python -m autosparse_jax.lab.main --config=configs/mnist_reproduction.py --workdir=workdirs/mnist

The pipeline of configs/quickstart.py on MNIST with the paper's LeNet-300-100 recipe
(Adam 1.2e-3, batch 128, wd 5e-4): IRP-SNIP (SNIP-iter) and IRP-magnitude (LTH), 20 rounds
to 1% (equal count per round), seeds 0, 1, 2; the AutoS scorer (MLP backbone,
2-16-64-1024-1024-64-1, 10 epochs, Adam 0.01, batch 1024) trained on seed 0's SNIP-iter
dataset; then random, magnitude, SNIP, GraSP, SynFlow, NPB, AutoS and the IRP masks (LTH,
SNIP-iter, rewound to theta_0) at 90/95/98/99% sparsity, 3 seeds each, and dense.

Reduced from the paper to fit the 2-core CPU (say so when quoting these numbers):
  - 2 epochs per IRP round (the paper trains each round fully; REFERENCE.md's setting);
  - 20 epochs per pruned network instead of 100 (the LR drops at 60/120 are never reached);
  - the MLP scorer instead of the paper's ResNet-18 scorer (a GPU job).
Final-epoch test accuracy is reported (the original code reports the best epoch).

Measured on the 2-core CPU (2026-11-24): about 45 minutes in all; results/lenet_mnist/
holds the table, figures and rows, and README.md shows the table.
"""
from autosparse_jax.lab import config_tools


def get_config():
  quickstart = config_tools.config_module(__file__, "quickstart.py")
  return quickstart.build("lenet_mnist", (0.9, 0.95, 0.98, 0.99), irp_epochs=2, epochs=20, num_seeds=3)
