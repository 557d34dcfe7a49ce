r"""Trains one dense network with a paper recipe (to prune at init and train: configs/prune.py).

  python -m autosparse_jax.lab.main --config=configs/train.py:RECIPE --workdir=DIR [--config.x=y]

Recipes (paper Appendix A/C) and what they take; CPU = the 2-core dev machine:
  lenet_digits           LeNet-300-100 on the embedded scikit-learn digits (no download).
                         30 epochs, ~10 s on CPU incl. compile; test accuracy ~97%.
  lenet_mnist            LeNet-300-100 / MNIST, Adam 1.2e-3, 100 epochs. One epoch: ~0.6 s
                         on CPU, 96% after 1 epoch (--config.train.epochs=1); 98.3-98.5% at 100.
  resnet18_cifar10       ResNet-18 / CIFAR-10, SGD 0.01, 160 epochs (paper: ~93-94% dense).
                         About 3.5 s per batch-128 step on CPU: a GPU job.
  vgg16_cifar10          VGG-16-BN / CIFAR-10, SGD 0.1, 160 epochs (GPU job).
  vgg19_cifar100         VGG-19-BN / CIFAR-100, SGD 0.1, 160 epochs (GPU job).
  resnet18_tiny_imagenet ResNet-18 / Tiny-ImageNet, SGD 0.1, 300 epochs (GPU job).

Pruned at initialization: the prune job, with the same recipes and fields
(--config.criterion / --config.sparsity here are refused with that command):
  python -m autosparse_jax.lab.main --config=configs/prune.py:RECIPE --workdir=DIR \
    --config.criterion=magnitude --config.sparsity=0.98
Several seeds in one vmapped program (mean +- std in results.json):
  --config.num_seeds=3
Datasets other than digits must be prepared first:
  python -m autosparse_jax.data.prepare mnist --raw_dir=DIR --data_dir=DIR
"""
from autosparse_jax.lab import recipes


def get_config(arg="lenet_digits"):
  config = recipes.recipe_config(arg)
  config.job = "train"
  return config
