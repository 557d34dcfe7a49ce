r"""Paper Table 2 (Sec. 6.1, Figure 5): AutoS inputs ablation, theta_0 only / g_0 only / both.

  python -m autosparse_jax.lab.main --config=configs/paper/table2_inputs.py --workdir=workdirs/table2
  Reduced (a smoke run of the chain; not paper numbers):
  python -m autosparse_jax.lab.main --config=configs/paper/table2_inputs.py --workdir=workdirs/table2_small \
    --config.irp_snip.train.epochs=2 --config.autos_param.train.epochs=1 \
    --config.autos_grad.train.epochs=1 --config.autos_both.train.epochs=1 --config.sweep.train.epochs=10

Stages:
  irp_snip     SNIP-iter on ResNet-18 / CIFAR-10, seed 0, 20 rounds to 1% (the AutoS dataset).
  autos_param  AutoS (ResNet-18 backbone) with input theta_0 only ("Only Param", Dense(1, 64) in).
  autos_grad   AutoS with input g_0 only ("Only Grad").
  autos_both   AutoS with (theta_0, g_0) ("Param + Grad", the default AutoS).
  sweep        ResNet-18 / CIFAR-10 pruned with each scorer (variants autos_param, autos_grad,
               autos_both) at 70/90/95/99%, seeds 0, 1, 2. No dense row (the table has none).
Each autos_* workdir has scorer_predictions.png: the predicted score against the input(s),
the paper's Figure 5 (single inputs) and Figure 4 (both).

Paper numbers (Table 2, ResNet-18 / CIFAR-10 test accuracy %):
  | input        | 70%   | 90%   | 95%   | 99%   |
  |--------------|-------|-------|-------|-------|
  | Only Param   | 93.07 | 92.40 | 91.78 | 87.6  |
  | Only Grad    | 93.27 | 92.53 | 91.70 | 87.99 |
  | Param + Grad | 93.09 | 92.63 | 92.00 | 88.78 |

Compute on one H200 (an estimate from BENCHMARKS.md; f32 = TF32 training, the jobs expose no
bf16; evaluation, checkpoints and compilation add roughly 5-10%):
  IRP: 20 rounds x 160 ep x 50k img / 27.6k img/s = 20 x 290 s = 1.61 h
  AutoS training: 3 scorers x 10 epochs x 10.05M weights / 36.2k weights/s = 3 x 0.77 = 2.3 h
    (a 1-input scorer costs about the same: the backbone dominates)
  Sweep: 3 variants x 4 sparsities x 3 seeds = 36 networks x 0.081 h = 2.9 h
  AutoS scoring: 36 x 55 s (11.16M weights / 202k weights/s, f32) = 0.55 h
  Total: ~7.4 GPU-hours.

Not reproduced exactly: the table shows one number per cell (the paper does not say how many
seeds); here mean +- std over seeds 0, 1, 2 (--config.sweep.num_seeds=1 for one seed);
final-epoch accuracy (the original reports the best epoch); exact top-k masks.
"""
from autosparse_jax.lab import config_tools


common = config_tools.config_module(__file__, "common.py")

SCORERS = {  # stage / sweep label -> AutoS input features
    "autos_param": ("theta0",),
    "autos_grad": ("g0",),
    "autos_both": ("theta0", "g0"),
}


def get_config():
  irp = common.irp_stage("resnet18_cifar10", criterion="snip", rounds=20)
  data = common.dataset_refs("irp_snip", irp)
  stages = [("irp_snip", irp)]
  stages += [(name, common.autos_stage("resnet18", data, features))
             for name, features in SCORERS.items()]
  variants = {name: common.autos_variant(name) for name in SCORERS}
  stages.append(("sweep", common.sweep_stage("resnet18_cifar10", tuple(SCORERS),
                                             common.ABLATION_SPARSITIES, variants, dense=False)))
  return common.pipeline(stages)
