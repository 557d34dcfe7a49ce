r"""Paper Table 9 (Appendix F): consistency (Lin's CCC) of surviving scores of two IRP runs.

  python -m autosparse_jax.lab.main --config=configs/paper/table9_ccc.py --workdir=workdirs/table9
  Reduced (2 epochs per IRP round; the REFERENCE.md setting, ~2 min per IRP seed on a 2-core CPU):
  python -m autosparse_jax.lab.main --config=configs/paper/table9_ccc.py --workdir=workdirs/table9_small \
    --config.irp_random.train.epochs=2 --config.irp_snip.train.epochs=2 --config.irp_mag.train.epochs=2 \
    --config.irp_grasp.train.epochs=2 --config.irp_random_rerun.train.epochs=2 \
    --config.irp_snip_rerun.train.epochs=2 --config.irp_mag_rerun.train.epochs=2 \
    --config.irp_grasp_rerun.train.epochs=2

What the table compares (Appendix F): IRP on LeNet-300-100 / MNIST (100 epochs per round, 20
rounds to 1%) with the criteria Random, SNIP (SNIP-iter), Mag (magnitude = LTH) and GraSP; two
datasets A and B; "Same Init." = A and B start from the same theta_0, "Different Init." = from
different theta_0. Stages:
  irp_<c>        IRP with criterion c (random, snip, mag, grasp), seeds 0 and 1: seed 0 is every
                 pair's A; seed 1 is B of the Different-Init. column.
  irp_<c>_rerun  IRP with criterion c from seed 0's theta_0 again, but another run (data order,
                 augmentation, pruning randomness from train_seed=1): B of the Same-Init. column
                 when both sides use the same criterion (SNIP & SNIP, ...). For two different
                 criteria the Same-Init. B is seed 0 of the other criterion's irp_<c>.
  ccc_same_<a>_<b>, ccc_diff_<a>_<b>   the CCC of one table cell (score = normalised surviving
                 score of every weight), 20 stages in the table's row order: results.json "pairs".
Also WORKDIR/survival_score.png: the paper's Figure 1 (survival score of the SNIP-iter run
against theta_0, SNIP and GraSP scores).

The reruns use `train_seed` (theta_0 from `seed`, data order, augmentation and pruning keys
from `train_seed`: keys.run_keys), so the four Same-Init. diagonal cells compare two
different runs from one theta_0.

Paper numbers (Table 9, CCC of the surviving scores):
  | methods          | same init | different init |
  |------------------|-----------|----------------|
  | Random & Random  | -0.00106  | -0.00106       |
  | SNIP & SNIP      |  0.23642  | -0.04542       |
  | Mag & Mag        |  0.15582  |  0.10285       |
  | GraSP & GraSP    |  0.08059  |  0.04373       |
  | Random & Mag     |  0.00083  | -0.00413       |
  | Random & GraSP   |  0.00109  |  0.00259       |
  | Random & SNIP    | -0.00108  | -0.00245       |
  | SNIP & Mag       |  0.12314  |  0.03424       |
  | SNIP & GraSP     | -0.07117  | -0.04450       |
  | Mag & GraSP      | -0.05968  | -0.01872       |

Compute on one H200 (an estimate from BENCHMARKS.md): LeNet-300-100 is latency bound, 26 ms per
MNIST epoch: one IRP seed = 20 rounds x (100 epochs x 26 ms + evaluation, scoring, checkpoint
~1 s) = ~70 s; 4 stages x 2 seeds + 4 reruns = 12 seed-runs x 70 s = 0.23 h, + compilation
(~20 s per stage) and 20 CCCs of 266k weights (seconds each): ~0.3 GPU-hours. It also runs on
the 2-core CPU: 0.6 s per epoch x 100 x 20 = 20 min per seed-run, ~4 h in all.

Not reproduced exactly: the paper does not say how its two same-init runs differed (GPU
nondeterminism or data order), nor whether its IRP here used 100 epochs per round (Appendix A's LeNet recipe, used here) or fewer; exact
top-k masks (the original's zero-score pruning: --config.irp_snip.irp.prune_zero_scores=True).
"""
from autosparse_jax.lab import config_tools


common = config_tools.config_module(__file__, "common.py")

RECIPE = "lenet_mnist"
CRITERIA = {"random": "random", "snip": "snip", "mag": "magnitude", "grasp": "grasp"}
PAIRS = (("random", "random"), ("snip", "snip"), ("mag", "mag"), ("grasp", "grasp"),
         ("random", "mag"), ("random", "grasp"), ("random", "snip"), ("snip", "mag"),
         ("snip", "grasp"), ("mag", "grasp"))  # Table 9's rows, in order.
RERUN_TRAIN_SEED = 1  # Another run (data order, augmentation, pruning keys) from seed 0's theta_0.


def get_config():
  irps, reruns = {}, {}
  for short, criterion in CRITERIA.items():
    irps[f"irp_{short}"] = common.irp_stage(RECIPE, criterion=criterion, rounds=20, num_seeds=2)
    rerun = common.irp_stage(RECIPE, criterion=criterion, rounds=20, num_seeds=1, seed=0)
    # theta_0 from `seed`, everything else (data order, pruning keys) from `train_seed`.
    rerun.train_seed = RERUN_TRAIN_SEED
    reruns[f"irp_{short}_rerun"] = rerun
  everything = {**irps, **reruns}
  ref = lambda name, index=None: common.dataset_refs(name, everything[name], index)
  stages = list(irps.items()) + list(reruns.items())
  for a, b in PAIRS:
    same_b = ref(f"irp_{b}_rerun") if a == b else ref(f"irp_{b}", 0)
    stages.append((f"ccc_same_{a}_{b}", common.ccc_stage(ref(f"irp_{a}", 0) + same_b)))
    stages.append((f"ccc_diff_{a}_{b}", common.ccc_stage(ref(f"irp_{a}", 0) + ref(f"irp_{b}", 1))))
  return common.pipeline(stages, survival_figure_stage="irp_snip")
