r"""Paper Figure 3: accuracy of PaI methods against sparsity, AutoS from one ResNet-18/CIFAR-10 IRP.

  python -m autosparse_jax.lab.main --config=configs/paper/fig3.py:resnet18_cifar10 --workdir=workdirs/fig3_resnet18
  (arg = the pruned target: resnet18_cifar10 | vgg16_cifar10 | vgg19_cifar100 | lenet_mnist,
  or all (default): the four targets in one pipeline sharing one IRP and one scorer.)
  Reduced (a smoke run of the chain; not paper numbers):
  python -m autosparse_jax.lab.main --config=configs/paper/fig3.py:resnet18_cifar10 --workdir=workdirs/fig3_small \
    --config.irp_snip.train.epochs=2 --config.autos.train.epochs=1 --config.sweep.train.epochs=10
  (with arg all the sweep stages are sweep_<target>, e.g. --config.sweep_vgg16_cifar10.train.epochs=10)

Stages (each in WORKDIR/STAGE, resumable):
  irp_snip  IRP with SNIP (SNIP-iter) on ResNet-18 / CIFAR-10, seed 0, 20 rounds (equal count)
            to 1% density, 160 epochs per round: the AutoS dataset of the paper (Sec. 5 setup).
  autos     the AutoS scorer, ResNet-18 backbone, inputs (theta_0, g_0), 10 epochs, Adam 0.01,
            batch 1024, trained on that dataset.
  sweep     (or sweep_<target>) prune the target at initialization with random, snip, grasp,
            npb and autos at sparsities 20/30/50/70/90/95/99%, seeds 0, 1, 2, each network
            trained with the target's recipe (recipes.py); plus the dense network per seed.
Output: WORKDIR/sweep/table.md (mean +- std over seeds), accuracy_vs_sparsity.png (the
figure), layer_density.png; WORKDIR/survival_score.png (Figure 1 style, for this IRP).

Criteria: the text names SNIP, GraSP, random, AutoS and dense for Figure 3 and compares
GraSP with NPB on it (Sec. 5 Analysis); SynFlow is not mentioned, so it is not run (add it:
--config.sweep.sweep.criteria="('random','snip','grasp','synflow','npb','autos')").
Sparsities: not given in the text; these are the original code's singleshot_compression
(densities 0.8 0.7 0.5 0.3 0.1 0.05 0.01, cfgs/prune/autos/cifar10_res18_mag.yaml).

Paper numbers: the text gives no Figure 3 values, only differences:
  | target                 | statement in Sec. 5                                |
  |------------------------|----------------------------------------------------|
  | VGG-16 / CIFAR-10      | AutoS ~2% above SNIP                               |
  | VGG-19 / CIFAR-100     | AutoS ~2% above SNIP                               |
  | ResNet-18 / CIFAR-10   | AutoS +0.8% over SNIP at 95%, +0.5% at 99%         |
  | all                    | GraSP weak at low sparsity, above SNIP/NPB at high |
  AutoS on ResNet-18 / CIFAR-10 (Table 2, Param + Grad): 93.09 / 92.63 / 92.00 / 88.78 at
  70 / 90 / 95 / 99%.

Compute on one H200 (an estimate from BENCHMARKS.md; the jobs train in f32 = TF32 since they
expose no bf16; evaluation, checkpoints and compilation add roughly 5-10%; vmapped networks may
run faster than the per-network rates assumed here):
  ResNet-18/CIFAR-10 network: 160 ep x 50k img / 27.6k img/s = 290 s = 0.081 h
  VGG-16/CIFAR-10 network:    160 x 50k / 46.6k img/s = 172 s = 0.048 h
  VGG-19/CIFAR-100 network:   160 x 50k / ~36.7k img/s (VGG-16 rate / 1.27, VGG-19's extra
                              conv FLOPs; not measured) = 218 s = 0.061 h
  LeNet-300-100/MNIST: 100 epochs x 26 ms = 2.6 s per network (latency bound): < 0.05 h in all
  IRP: 20 rounds x 0.081 h = 1.61 h
  AutoS training: 10 epochs x 10.05M weights (90% of 11.16M) / 36.2k weights/s (f32) = 0.77 h
  AutoS scoring (f32 scorer, 202k weights/s; redone for every sparsity x seed): 21 x 55 s
    = 0.32 h (ResNet-18), 21 x 73 s = 0.43 h (VGG-16), 21 x 99 s = 0.58 h (VGG-19)
  NPB (host MILP, ~37 s per ResNet-18 network on the dev CPU): 21 x ~40 s = ~0.23 h per target
  Sweep: (5 criteria x 7 sparsities + dense) x 3 seeds = 108 networks:
    resnet18_cifar10 108 x 0.081 = 8.7 h; vgg16_cifar10 5.2 h; vgg19_cifar100 6.6 h
  Total: resnet18_cifar10 ~11.6 GPU-hours; vgg16_cifar10 ~8.2; vgg19_cifar100 ~9.8;
         lenet_mnist ~2.4 (the IRP and scorer); all ~25 GPU-hours (IRP + scorer once).

Not reproduced exactly: the sparsity grid comes from the original code, not the paper; the
paper's ResNet-18/CIFAR-100 panel (Appendix A lists it) has no recipe here; accuracy is the
final epoch's (the original reports the best epoch); masks are exact top-k (the original
over-prunes ties); VGG nets have the original code's single Dense head, not the appendix's
4096-wide one; g_0 is a sum of batch-mean gradients over the whole training set (as the
original), so its scale on other datasets differs from the scorer's training data.
"""
from autosparse_jax.lab import config_tools


common = config_tools.config_module(__file__, "common.py")

TARGETS = ("resnet18_cifar10", "vgg16_cifar10", "vgg19_cifar100", "lenet_mnist")
ARGS = ("all",) + TARGETS  # Every documented arg (tests load each).
CRITERIA = ("random", "snip", "grasp", "npb", "autos")
# Densities 0.8 0.7 0.5 0.3 0.1 0.05 0.01 of the original code's singleshot_compression.
SPARSITIES = (0.2, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99)
SOURCE = "resnet18_cifar10"  # The one IRP the AutoS dataset comes from.


def get_config(arg="all"):
  if arg not in ARGS:
    raise ValueError(f"configs/paper/fig3.py:{arg}: use one of {', '.join(ARGS)}.")
  irp = common.irp_stage(SOURCE, criterion="snip", rounds=20)
  stages = [("irp_snip", irp),
            ("autos", common.autos_stage("resnet18", common.dataset_refs("irp_snip", irp)))]
  targets = TARGETS if arg == "all" else (arg,)
  for target in targets:
    sweep = common.sweep_stage(target, CRITERIA, SPARSITIES)
    sweep.autos.scorer_dir = "@autos.scorer_dir"
    stages.append(("sweep" if arg != "all" else f"sweep_{target}", sweep))
  return common.pipeline(stages, survival_figure_stage="irp_snip")
