r"""Prunes at initialization with one criterion, then trains the masked network.

  python -m autosparse_jax.lab.main --config=configs/prune.py:RECIPE --workdir=DIR \
    --config.criterion=snip --config.sparsity=0.98 [--config.sparsities="(0.9,0.95)"]

The one way to prune at init and train (configs/train.py trains dense networks;
configs/pai_sweep.py runs grids of criteria x sparsities x seeds, with the same
config.sparsities field).

RECIPE as in configs/train.py (lenet_digits, lenet_mnist, resnet18_cifar10, vgg16_cifar10,
vgg19_cifar100, resnet18_tiny_imagenet). Criteria: random, magnitude, snip, grasp,
synflow, npb (see autosparse_jax/criteria). results.json: per sparsity the test accuracy
(mean +- std over seeds), the achieved density overall and per layer, NPB's effective
paths / nodes / params, and the scoring time.

Measured on the 2-core dev CPU, LeNet-300-100 / real MNIST, sparsity 0.98, 1 epoch
(--config.train.epochs=1), seed 0: about 10 s per criterion including compilation; test
accuracy random 59.6%, magnitude 89.2%, snip 90.6%, grasp 87.9%, synflow 90.3%,
npb 60.1% (89.3% with --config.prune.npb_alpha=0.5).
"""
from autosparse_jax.lab import recipes


def get_config(arg="lenet_digits"):
  config = recipes.recipe_config(arg)
  config.job = "prune"
  config.criterion = "snip"
  config.sparsity = 0.9
  config.sparsities = ()  # Non-empty: prune and train at each of these in turn, instead of `sparsity`.
  return config
