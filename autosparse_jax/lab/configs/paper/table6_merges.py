r"""Paper Table 6 (Sec. 6.2 "Merge"): AutoS trained on merged IRP datasets.

  python -m autosparse_jax.lab.main --config=configs/paper/table6_merges.py --workdir=workdirs/table6
  Reduced (a smoke run of the chain; not paper numbers):
  python -m autosparse_jax.lab.main --config=configs/paper/table6_merges.py --workdir=workdirs/table6_small \
    --config.irp_snip_20.train.epochs=1 --config.irp_snip_40.train.epochs=1 \
    --config.irp_snip_100.train.epochs=1 --config.irp_lth_20.train.epochs=1 \
    --config.autos_3x20.train.epochs=1 --config.autos_20_40_100.train.epochs=1 \
    --config.autos_mag_snip.train.epochs=1 --config.sweep.train.epochs=10

Stages (all IRPs on ResNet-18 / CIFAR-10 to 1% density, equal count per round, 160 epochs/round):
  irp_snip_20      SNIP-iter, 20 rounds, seeds 0, 1, 2 (three initialisations).
  irp_snip_40      SNIP-iter, 40 rounds, seed 0.
  irp_snip_100     SNIP-iter, 100 rounds, seed 0.
  irp_lth_20       magnitude (LTH), 20 rounds, seed 0 (same theta_0 as SNIP-iter seed 0).
  autos_3x20       AutoS on the three 20-round SNIP-iter datasets ("3*20": 3 x 11.16M weights).
  autos_20_40_100  AutoS on seed 0's 20-, 40- and 100-round SNIP-iter datasets ("20+40+100").
  autos_mag_snip   AutoS on seed 0's LTH and SNIP-iter 20-round datasets ("LTH+SNIP").
  sweep            ResNet-18 / CIFAR-10 with each merged scorer at 70/90/95/99%, seeds 0, 1, 2.
The scorers: ResNet-18 backbone, theta_0 + g_0, 10 epochs over the merged weights (10% of
each merge held out).

Paper numbers (Table 6, ResNet-18 / CIFAR-10 test accuracy %):
  | merge      | 70%   | 90%   | 95%   | 99%   |
  |------------|-------|-------|-------|-------|
  | 20+40+100  | 93.17 | 92.74 | 47.56 | 10.00 |
  | 3*20       | 93.17 | 92.50 | 91.73 | 88.39 |
  | LTH+SNIP   | 92.90 | 92.59 | 91.70 | 88.45 |
  (single dataset, the default AutoS: 93.09 / 92.63 / 92.00 / 88.78, Table 2.)

Compute on one H200 (an estimate from BENCHMARKS.md; f32 = TF32 training, the jobs expose no
bf16; evaluation, checkpoints and compilation add roughly 5-10%):
  One ResNet-18/CIFAR-10 training: 160 ep x 50k img / 27.6k img/s = 290 s = 0.081 h
  IRP: 20 rounds x 3 seeds (4.8 h) + 40 rounds (3.2 h) + 100 rounds (8.1 h) + LTH 20 rounds
    (1.6 h) = 17.7 h (the 3 seeds vmapped, assumed no faster than 3 runs)
  AutoS training, 10 epochs over 90% of each merge at 36.2k weights/s (f32):
    3x20 and 20+40+100: 3 x 10.05M weights -> 2 x 2.3 h; LTH+SNIP: 2 x 10.05M -> 1.5 h; 6.2 h
  Sweep: 3 scorers x 4 sparsities x 3 seeds = 36 networks x 0.081 h = 2.9 h; AutoS scoring
    36 x 55 s = 0.55 h
  Total: ~27 GPU-hours.

Not reproduced exactly: one number per cell in the paper (seed count not stated): here mean +-
std over seeds 0, 1, 2; which seeds the paper's "3*20" used is not stated (0, 1, 2 here), nor
which 20-round run its 20+40+100 and LTH+SNIP merges took (seed 0 here); final-epoch accuracy;
exact top-k masks. The merged datasets' memory (3 x 11.16M weights x 2 features) is loaded at
once by autos_train.
"""
from autosparse_jax.lab import config_tools


common = config_tools.config_module(__file__, "common.py")


def get_config():
  recipe = "resnet18_cifar10"
  irps = {
      "irp_snip_20": common.irp_stage(recipe, criterion="snip", rounds=20, num_seeds=common.SEEDS),
      "irp_snip_40": common.irp_stage(recipe, criterion="snip", rounds=40),
      "irp_snip_100": common.irp_stage(recipe, criterion="snip", rounds=100),
      "irp_lth_20": common.irp_stage(recipe, criterion="magnitude", rounds=20),
  }
  ref = lambda name, index=None: common.dataset_refs(name, irps[name], index)
  merges = {
      "autos_3x20": ref("irp_snip_20"),  # Spliced: all three seeds.
      "autos_20_40_100": ref("irp_snip_20", 0) + ref("irp_snip_40") + ref("irp_snip_100"),
      "autos_mag_snip": ref("irp_lth_20") + ref("irp_snip_20", 0),
  }
  stages = list(irps.items())
  stages += [(name, common.autos_stage("resnet18", data)) for name, data in merges.items()]
  variants = {name: common.autos_variant(name) for name in merges}
  stages.append(("sweep", common.sweep_stage(recipe, tuple(merges), common.ABLATION_SPARSITIES,
                                             variants, dense=False)))
  return common.pipeline(stages)
