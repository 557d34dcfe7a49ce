r"""Paper Table 5 (Sec. 6.2 "Iteration"): AutoS datasets from IRP with 20, 40 and 100 rounds.

  python -m autosparse_jax.lab.main --config=configs/paper/table5_iterations.py --workdir=workdirs/table5
  Reduced (a smoke run of the chain; not paper numbers):
  python -m autosparse_jax.lab.main --config=configs/paper/table5_iterations.py --workdir=workdirs/table5_small \
    --config.irp_snip_20.train.epochs=1 --config.irp_snip_40.train.epochs=1 \
    --config.irp_snip_100.train.epochs=1 --config.sweep.train.epochs=10

Stages:
  irp_snip_20 / _40 / _100  SNIP-iter on ResNet-18 / CIFAR-10, seed 0 (the same theta_0), to 1%
                            density in 20 / 40 / 100 rounds of equal count (the original's
                            "num" schedule), 160 epochs per round.
  autos_20 / _40 / _100     AutoS (ResNet-18 backbone, theta_0 + g_0) on each dataset.
  sweep                     ResNet-18 / CIFAR-10 with each scorer (variants autos_20,
                            autos_40, autos_100) at 70/90/95/99%, seeds 0, 1, 2. No dense row.

Paper numbers (Table 5, ResNet-18 / CIFAR-10 test accuracy %; the 20-iter row is the default
AutoS, printed in Table 2 / 3 / 4 and not repeated in Table 5):
  | IRP rounds          | 70%   | 90%   | 95%   | 99%   |
  |---------------------|-------|-------|-------|-------|
  | 20-iter (Table 2)   | 93.09 | 92.63 | 92.00 | 88.78 |
  | 40-iter             | 93.21 | 92.57 | 91.88 | 88.66 |
  | 100-iter            | 93.24 | 92.20 | 91.87 | 88.45 |

Compute on one H200 (an estimate from BENCHMARKS.md; f32 = TF32 training, the jobs expose no
bf16; evaluation, checkpoints and compilation add roughly 5-10%):
  One ResNet-18/CIFAR-10 training: 160 ep x 50k img / 27.6k img/s = 290 s = 0.081 h
  IRP: (20 + 40 + 100) rounds x 0.081 h = 1.61 + 3.22 + 8.06 = 12.9 h
  AutoS training: 3 x 10 epochs x 10.05M weights / 36.2k weights/s = 3 x 0.77 = 2.3 h
  Sweep: 3 scorers x 4 sparsities x 3 seeds = 36 networks x 0.081 h = 2.9 h; AutoS scoring
    36 x 55 s = 0.55 h
  Total: ~18.7 GPU-hours (the 100-round IRP is 8 of them).

Not reproduced exactly: one number per cell in the paper (seed count not stated): here mean +-
std over seeds 0, 1, 2; final-epoch accuracy (the original reports the best epoch); exact top-k
masks, so every round prunes exactly 0.99/N of the weights (the original's ties and zero scores
prune a little more: --config.irp_snip_20.irp.prune_zero_scores=True etc.).
"""
from autosparse_jax.lab import config_tools


common = config_tools.config_module(__file__, "common.py")

ROUNDS = (20, 40, 100)


def get_config():
  stages, variants = [], {}
  for rounds in ROUNDS:
    irp = common.irp_stage("resnet18_cifar10", criterion="snip", rounds=rounds)
    stages.append((f"irp_snip_{rounds}", irp))
    stages.append((f"autos_{rounds}",
                   common.autos_stage("resnet18", common.dataset_refs(f"irp_snip_{rounds}", irp))))
    variants[f"autos_{rounds}"] = common.autos_variant(f"autos_{rounds}")
  stages.append(("sweep", common.sweep_stage("resnet18_cifar10", tuple(variants),
                                             common.ABLATION_SPARSITIES, variants, dense=False)))
  return common.pipeline(stages)
