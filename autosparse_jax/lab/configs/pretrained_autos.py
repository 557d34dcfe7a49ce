r"""The pretrained AutoS scorer shipped in the package (autosparse_jax/autos/pretrained/lenet_mnist).

  python -m autosparse_jax.data.prepare mnist --raw_dir=RAW --data_dir=$TFDS_DATA_DIR  # once
  python -m autosparse_jax.lab.main --config=configs/pretrained_autos.py --workdir=workdirs/pretrained \
    --config.irp.data.data_dir=$TFDS_DATA_DIR

IRP-SNIP (SNIP-iter) on LeNet-300-100 / real MNIST, seed 0, 20 rounds to 1% (equal count per
round), 2 epochs per round, with g_0 REDUCED BY THE MEAN over its batches (so its scale does
not depend on how many batches a user passes to asj.prune); then the AutoS MLP scorer
(width 0.5: 2-8-32-512-512-32-1, 1.1 MB) on that dataset, 10 epochs. Copy
WORKDIR/autos/scorer to autosparse_jax/autos/pretrained/lenet_mnist; its MODEL_CARD.md holds
the figures (benchmarks/pretrained_card.py measures the accuracies).
Measured on the 2-core CPU: about 4 minutes (IRP ~80 s, scorer ~2.5 min).
"""
import ml_collections

from autosparse_jax.lab import config_tools


def get_config():
  irp = config_tools.config_module(__file__, "irp.py").get_config("lenet_mnist")
  irp.train.epochs = 2
  irp.prune.grad_reduction = "mean"
  autos = config_tools.config_module(__file__, "autos_train.py").get_config("mlp")
  autos.scorer.width = 0.5
  autos.scorer.datasets = ("@irp.score_dataset_dir",)
  config = ml_collections.ConfigDict()
  config.job = "pipeline"
  config.stages = ("irp", "autos")
  config.irp = irp
  config.autos = autos
  return config
