r"""Paper Table 1: PaI on ResNet-18 / Tiny-ImageNet, AutoS learnt from the ResNet-18/CIFAR-10 IRP.

  python -m autosparse_jax.lab.main --config=configs/paper/table1.py --workdir=workdirs/table1
  Reduced (a smoke run of the chain; not paper numbers):
  python -m autosparse_jax.lab.main --config=configs/paper/table1.py --workdir=workdirs/table1_small \
    --config.irp_snip.train.epochs=2 --config.autos.train.epochs=1 --config.sweep.train.epochs=10

Tiny-ImageNet must be prepared first from its raw zip (no download here):
  python -m autosparse_jax.data.prepare tiny_imagenet --raw_dir=DIR --data_dir=DIR
  (then --config.sweep.data.data_dir=DIR, or set $TFDS_DATA_DIR).

Stages:
  irp_snip  SNIP-iter on ResNet-18 / CIFAR-10, seed 0, 20 rounds to 1%, 160 epochs per round
            (the paper's one IRP, Sec. 5).
  autos     AutoS scorer, ResNet-18 backbone, (theta_0, g_0), on that dataset.
  sweep     ResNet-18 / Tiny-ImageNet (300 epochs, SGD 0.1, drops at 150/225) pruned at init
            with snip, grasp, npb, autos at 30/50/70/90% sparsity, seeds 0, 1, 2. No dense row
            (the table has none; --config.sweep.sweep.dense=True adds it, +3.6 GPU-hours).
            NPB uses its authors' Tiny-ImageNet settings (beta 2, max_p 6; REFERENCE.md).

Paper numbers (Table 1, test accuracy %, mean +- std):
  | method | 30%          | 50%          | 70%          | 90%          |
  |--------|--------------|--------------|--------------|--------------|
  | SNIP   | 59.88 +-0.52 | 58.34 +-0.35 | 57.45 +-0.22 | 53.16 +-0.13 |
  | GraSP  | 57.83 +-0.65 | 56.54 +-0.42 | 55.43 +-0.17 | 54.43 +-0.09 |
  | NPB    | 60.35 +-0.35 | 59.35 +-0.34 | 58.70 +-0.30 | 56.4  +-0.22 |
  | AutoS  | 60.02 +-0.23 | 59.23 +-0.27 | 58.05 +-0.20 | 55.32 +-0.15 |

Compute on one H200 (an estimate from BENCHMARKS.md; f32 = TF32 training, the jobs expose no
bf16; evaluation, checkpoints and compilation add roughly 5-10%):
  ResNet-18 / Tiny-ImageNet network: 64x64 inputs = 4x the CIFAR FLOPs (stride-1 stem, no
    max-pool), so ~27.6k / 4 = 6.9k img/s (not measured): 300 ep x 100k img / 6.9k img/s
    = 4350 s = 1.21 h
  Sweep: 4 criteria x 4 sparsities x 3 seeds = 48 networks x 1.21 h = 58 h
  AutoS scoring: 12 x 11.26M weights / 202k weights/s (f32) = 12 x 56 s = 0.19 h;
    NPB: 12 x ~40 s = 0.13 h
  IRP: 20 rounds x 160 ep x 50k img / 27.6k img/s = 1.61 h
  AutoS training: 10 epochs x 10.05M weights / 36.2k weights/s = 0.77 h
  Total: ~61 GPU-hours (the sweep dominates; --config.sweep.num_seeds=1 gives ~21).

Not reproduced exactly: Tiny-ImageNet cannot be downloaded here (prepare it from the raw
files); the Tiny-ImageNet rate is extrapolated, not measured; the paper says only "SGD" for
this recipe (momentum 0.9 Nesterov here, as its other recipes); final-epoch accuracy (the
original reports the best epoch); g_0 is summed over Tiny-ImageNet's 782 batches while the
scorer learnt from CIFAR-10's 391 (the original does the same), so the inputs are on a
larger scale than the training data; exact top-k masks.
"""
from autosparse_jax.lab import config_tools


common = config_tools.config_module(__file__, "common.py")

CRITERIA = ("snip", "grasp", "npb", "autos")
SPARSITIES = (0.3, 0.5, 0.7, 0.9)


def get_config():
  irp = common.irp_stage("resnet18_cifar10", criterion="snip", rounds=20)
  sweep = common.sweep_stage("resnet18_tiny_imagenet", CRITERIA, SPARSITIES, dense=False)
  sweep.autos.scorer_dir = "@autos.scorer_dir"
  # NPB's authors' ResNet-18 / Tiny-ImageNet settings (REFERENCE.md); only npb reads them.
  sweep.prune.npb_beta = 2.0
  sweep.prune.npb_max_p = 6
  return common.pipeline([
      ("irp_snip", irp),
      ("autos", common.autos_stage("resnet18", common.dataset_refs("irp_snip", irp))),
      ("sweep", sweep),
  ])
