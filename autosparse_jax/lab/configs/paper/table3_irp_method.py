r"""Paper Table 3 (Sec. 6.2 "LTH or SNIP") + the IRP masks of Figure 6: LTH vs SNIP-iter datasets.

  python -m autosparse_jax.lab.main --config=configs/paper/table3_irp_method.py --workdir=workdirs/table3
  Reduced (a smoke run of the chain; not paper numbers):
  python -m autosparse_jax.lab.main --config=configs/paper/table3_irp_method.py --workdir=workdirs/table3_small \
    --config.irp_lth.train.epochs=2 --config.irp_snip.train.epochs=2 --config.autos_lth.train.epochs=1 \
    --config.autos_snip_iter.train.epochs=1 --config.sweep.train.epochs=10

Stages:
  irp_lth          IRP with magnitude (LTH) on ResNet-18 / CIFAR-10, 20 rounds to 1%, seeds 0, 1, 2
                   (round 0 prunes at init, rewinding to theta_0, as the original code).
  irp_snip         IRP with SNIP (SNIP-iter), same model, seeds 0, 1, 2 (same theta_0 per seed).
  autos_lth        AutoS (ResNet-18 backbone, theta_0 + g_0) on seed 0's LTH dataset.
  autos_snip_iter  AutoS on seed 0's SNIP-iter dataset (the default AutoS).
  sweep            ResNet-18 / CIFAR-10 at 70/90/95/99%, seeds 0, 1, 2: autos_lth and
                   autos_snip_iter (Table 3), and the IRP masks themselves, lth and snip_iter
                   (survival criterion: each seed's own IRP run, trained again from theta_0;
                   the LTH / SNIP-iter curves of Figure 6). These need the IRP on every sweep
                   seed: that is why the IRPs run 3 seeds while AutoS learns from seed 0 only.

Paper numbers (Table 3: AutoS trained on each dataset, ResNet-18 / CIFAR-10 test accuracy %):
  | AutoS dataset | 70%   | 90%   | 95%   | 99%   |
  |---------------|-------|-------|-------|-------|
  | LTH           | 93.41 | 92.09 | 89.96 | 79.15 |
  | SNIP-iter     | 93.09 | 92.63 | 92.00 | 88.78 |
  The IRP-mask (LTH, SNIP-iter) curves of Figure 6: no values in the text (Sec. 8 says only that
  iterative pruning stays above AutoS, mostly at high sparsity).

Compute on one H200 (an estimate from BENCHMARKS.md; f32 = TF32 training, the jobs expose no
bf16; evaluation, checkpoints and compilation add roughly 5-10%; the 3 seeds of an IRP train
vmapped, assumed here no faster than 3 separate runs):
  IRP: 2 criteria x 3 seeds x 20 rounds x 160 ep x 50k img / 27.6k img/s = 6 x 1.61 = 9.7 h
  AutoS training: 2 x 10 epochs x 10.05M weights / 36.2k weights/s = 2 x 0.77 = 1.5 h
  Sweep: 4 variants x 4 sparsities x 3 seeds = 48 networks x 0.081 h = 3.9 h
  AutoS scoring: 24 x 55 s = 0.37 h
  Total: ~15.5 GPU-hours (--config.sweep.num_seeds=1: ~12.6; keep the IRPs' num_seeds, the
  autos stages refer to their seed 0 as "@irp_*.score_dataset_dir[0]", which needs a list).

Not reproduced exactly: Table 3 gives one number per cell (seed count not stated): here mean +-
std over seeds 0, 1, 2; final-epoch accuracy (the original reports the best epoch); exact
top-k masks (the original also prunes zero scores: --config.irp_snip.irp.prune_zero_scores=True);
at sparsities between two IRP rounds (70% lies between rounds 14 and 15) the survival masks
add a random draw of the next survival class.
"""
from autosparse_jax.lab import config_tools


common = config_tools.config_module(__file__, "common.py")

IRPS = (("irp_lth", "magnitude"), ("irp_snip", "snip"))
LABELS = {"irp_lth": ("autos_lth", "lth"), "irp_snip": ("autos_snip_iter", "snip_iter")}


def get_config():
  stages, variants = [], {}
  for name, criterion in IRPS:
    stages.append((name, common.irp_stage("resnet18_cifar10", criterion=criterion, rounds=20,
                                          num_seeds=common.SEEDS)))
  irps = dict(stages)
  for name, _ in IRPS:
    scorer, masks = LABELS[name]
    seed0 = common.dataset_refs(name, irps[name], 0)  # AutoS learns from seed 0's dataset.
    stages.append((scorer, common.autos_stage("resnet18", seed0)))
    variants[scorer] = common.autos_variant(scorer)
    variants[masks] = common.survival_variant(name, irps[name])
  labels = ("autos_lth", "autos_snip_iter", "lth", "snip_iter")
  stages.append(("sweep", common.sweep_stage("resnet18_cifar10", labels, common.ABLATION_SPARSITIES,
                                             variants, num_seeds=common.SEEDS, dense=False)))
  return common.pipeline(stages)
