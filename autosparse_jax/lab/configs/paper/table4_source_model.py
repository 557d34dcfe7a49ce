r"""Paper Table 4 (Sec. 6.2 "Model"): source model of the AutoS dataset x AutoS backbone.

  python -m autosparse_jax.lab.main --config=configs/paper/table4_source_model.py:resnet18 --workdir=workdirs/table4_r18
  (arg = AutoS backbone: resnet18 | vgg19 | all (default: both, sharing the four IRPs).)
  Reduced (a smoke run of the chain; not paper numbers):
  python -m autosparse_jax.lab.main --config=configs/paper/table4_source_model.py:resnet18 --workdir=workdirs/table4_small \
    --config.irp_lenet_mnist.train.epochs=2 --config.irp_resnet18_cifar10.train.epochs=2 \
    --config.irp_vgg19_cifar100.train.epochs=2 --config.irp_resnet18_tiny_imagenet.train.epochs=2 \
    --config.sweep.train.epochs=10
  (the autos_* stages keep 10 epochs; add --config.autos_resnet18_<source>.train.epochs=1 each.)

Stages:
  irp_<source>             SNIP-iter, 20 rounds to 1%, seed 0, the source's own recipe, for
                           source = lenet_mnist, resnet18_cifar10, vgg19_cifar100,
                           resnet18_tiny_imagenet (Appendix A's dataset table).
  autos_<backbone>_<source> AutoS (theta_0 + g_0) with that backbone on that dataset
                           (vgg19 = VGG-19-BN on a 64x64x3 lift, Table 7).
  sweep                    ResNet-18 / CIFAR-10 pruned with every scorer (variant label = its
                           stage name) at 90/95/99%, seeds 0, 1, 2. No dense row.
Datasets: MNIST, CIFAR-10, CIFAR-100 and Tiny-ImageNet must be prepared first
(python -m autosparse_jax.data.prepare NAME --raw_dir=... --data_dir=...).

Paper numbers (Table 4, ResNet-18 / CIFAR-10 test accuracy %):
  | dataset (source model)      | AutoS model | 90%   | 95%   | 99%   |
  |-----------------------------|-------------|-------|-------|-------|
  | MNIST (LeNet-300-100)       | ResNet-18   | 91.94 | 91.79 | 88.07 |
  |                             | VGG-19      | 91.88 | 91.60 | 88.00 |
  | CIFAR-10 (ResNet-18)        | ResNet-18   | 92.63 | 92.00 | 88.78 |
  |                             | VGG-19      | 92.46 | 91.83 | 88.24 |
  | CIFAR-100 (VGG-19)          | ResNet-18   | 92.71 | 56.26 | 37.54 |
  |                             | VGG-19      | 92.41 | 91.63 | 19.40 |
  | TinyImageNet (ResNet-18)    | ResNet-18   | 92.55 | 91.55 | 64.04 |
  |                             | VGG-19      | 92.21 | 91.23 | 60.04 |

Compute on one H200 (an estimate from BENCHMARKS.md; f32 = TF32 training, the jobs expose no
bf16; evaluation, checkpoints and compilation add roughly 5-10%):
  IRPs (20 rounds each): LeNet/MNIST 20 x 100 ep x 26 ms = 52 s (~0.03 h with overhead);
    ResNet-18/CIFAR-10 20 x 160 ep x 50k / 27.6k img/s = 1.61 h; VGG-19/CIFAR-100
    20 x 160 x 50k / ~36.7k img/s (VGG-16's rate / 1.27 FLOPs, not measured) = 1.21 h;
    ResNet-18/Tiny-ImageNet 20 x 300 ep x 100k / ~6.9k img/s (4x the CIFAR FLOPs, not
    measured) = 24.2 h. Sum 27.1 h.
  AutoS training, 10 epochs over 90% of the weights: resnet18 backbone at 36.2k weights/s:
    LeNet 0.24M -> 0.02 h, ResNet-18 10.05M -> 0.77 h, VGG-19 18.06M -> 1.39 h, ResNet-18/Tiny
    10.14M -> 0.78 h: 3.0 h; vgg19 backbone ~2.37x slower (its measured inference ratio,
    84.9k vs 201k weights/s; training not measured): 7.0 h
  Sweep per scorer: 3 sparsities x 3 seeds = 9 networks x 0.081 h = 0.73 h, + scoring
    9 x 55 s = 0.14 h (resnet18 scorer) or 9 x 131.5 s = 0.33 h (vgg19 scorer)
  Total: resnet18 ~33.6 GPU-hours (27.1 + 3.0 + 4 x 0.87); vgg19 ~38.3 (27.1 + 7.0 + 4 x 1.06);
         all ~44.8. The Tiny-ImageNet IRP is 24 of them.

Not reproduced exactly: Table 4 gives one number per cell (seed count not stated): here mean +-
std over seeds 0, 1, 2; VGG-19 has the original code's single Dense head (the paper counts
144M parameters: the ImageNet head), so its dataset has 20.07M weights; Tiny-ImageNet and
CIFAR-100 rates are extrapolated; final-epoch accuracy; exact top-k masks. The VGG-19 scorer's
g_0 inputs come from each source's own training set (sums of batch-mean gradients, as the
original), so their scales differ between sources.
"""
from autosparse_jax.lab import config_tools


common = config_tools.config_module(__file__, "common.py")

SOURCES = ("lenet_mnist", "resnet18_cifar10", "vgg19_cifar100", "resnet18_tiny_imagenet")
BACKBONES = ("resnet18", "vgg19")
ARGS = ("all",) + BACKBONES
SPARSITIES = (0.9, 0.95, 0.99)


def get_config(arg="all"):
  if arg not in ARGS:
    raise ValueError(f"configs/paper/table4_source_model.py:{arg}: use one of {', '.join(ARGS)}.")
  backbones = BACKBONES if arg == "all" else (arg,)
  stages = [(f"irp_{source}", common.irp_stage(source, criterion="snip", rounds=20))
            for source in SOURCES]
  irps = dict(stages)
  variants = {}
  for backbone in backbones:
    for source in SOURCES:
      name = f"autos_{backbone}_{source}"
      data = common.dataset_refs(f"irp_{source}", irps[f"irp_{source}"])
      stages.append((name, common.autos_stage(backbone, data)))
      variants[name] = common.autos_variant(name)
  stages.append(("sweep", common.sweep_stage("resnet18_cifar10", tuple(variants), SPARSITIES,
                                             variants, dense=False)))
  return common.pipeline(stages)
