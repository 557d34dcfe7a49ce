r"""The main job: the whole AutoSparse pipeline, end to end, with a table and figures.

  python -m autosparse_jax.lab.main --config=configs/quickstart.py --workdir=workdirs/quickstart
  (= make quickstart; --config=configs/quickstart.py:mnist for real MNIST)

Stages (each in WORKDIR/STAGE, each resumable; re-running skips finished ones):
  irp_snip   IRP with SNIP (SNIP-iter): 20 rounds to 1% density, the score datasets.
  irp_lth    IRP with magnitude (LTH), same seeds: the LTH masks.
  autos      the AutoS scorer (MLP backbone: CPU-sized) trained on seed 0's SNIP-iter dataset.
  sweep      prune LeNet-300-100 at init with random, magnitude, snip, grasp, synflow, npb,
             autos, and the IRP masks (snip_iter, lth) at 3 sparsities, 2 seeds each,
             every criterion's 6 networks trained vmapped in one program; plus dense.
Output: WORKDIR/sweep/table.md (mean +- std over seeds), table.csv, results.jsonl,
accuracy_vs_sparsity.png, layer_density.png; WORKDIR/survival_score.png (paper Figure 1);
WORKDIR/autos/scorer_predictions.png (Figure 4).

digits (default): scikit-learn's embedded 8x8 digits, no download. On the 2-core CPU (as
README.md says): 66 s with the compilation cache warm (2026-12-08); 73 s cold and 280 XLA programs,
each built once, when last counted (2026-12-04). Expected table
(30 epochs, 2 seeds): SNIP-iter, SynFlow, SNIP and LTH lead at 95%, magnitude collapses
there (layer collapse); README.md has the numbers.
mnist: real MNIST prepared offline (python -m autosparse_jax.data.prepare mnist ...),
2 epochs per IRP round and 10 epochs per pruned network, sparsities 90/95/98%: 684 s on the
2-core CPU (IRP 148 s, scorer 121 s, sweep 407 s; 1.4 GB RSS). At 98%: LTH 97.31, SNIP-iter
96.35, SynFlow 95.23, SNIP 95.11, AutoS 95.01, dense 97.71 (mean of 2 seeds).
"""
import ml_collections

from autosparse_jax.lab import config_tools

SIZES = {
    # arg: (recipe, sparsities, IRP epochs per round, epochs of each pruned network)
    "digits": ("lenet_digits", (0.8, 0.9, 0.95), 10, 30),
    "mnist": ("lenet_mnist", (0.9, 0.95, 0.98), 2, 10),
}
CRITERIA = ("random", "magnitude", "snip", "grasp", "synflow", "npb", "autos", "snip_iter", "lth")


def sibling(name, arg):
  """get_config(arg) of configs/NAME.py."""
  return config_tools.config_module(__file__, f"{name}.py").get_config(arg)


def build(recipe, sparsities, irp_epochs, epochs, num_seeds=2, criteria=CRITERIA):
  """The pipeline IRP-SNIP + IRP-magnitude -> AutoS (MLP) -> sweep, for one recipe."""
  config = ml_collections.ConfigDict()
  config.job = "pipeline"
  config.stages = ("irp_snip", "irp_lth", "autos", "sweep")
  config.survival_figure_stage = "irp_snip"
  for name, criterion in (("irp_snip", "snip"), ("irp_lth", "magnitude")):
    irp = sibling("irp", recipe)
    irp.criterion = criterion
    irp.num_seeds = num_seeds  # The same seeds as the sweep: their IRP masks are the lth/snip_iter rows.
    irp.train.epochs = irp_epochs
    config[name] = irp
  autos = sibling("autos_train", "mlp")
  autos.scorer.datasets = ("@irp_snip.score_dataset_dir[0]",)  # One IRP run, as in the paper.
  config.autos = autos
  sweep = sibling("pai_sweep", recipe)
  sweep.num_seeds = num_seeds
  sweep.train.epochs = epochs
  sweep.sweep.criteria = criteria
  sweep.sparsities = sparsities
  sweep.autos.scorer_dir = "@autos.scorer_dir"
  sweep.sweep.variants.snip_iter.survival.score_datasets = ("@irp_snip.score_dataset_dir",)
  sweep.sweep.variants.lth.survival.score_datasets = ("@irp_lth.score_dataset_dir",)
  config.sweep = sweep
  return config


def get_config(arg="digits"):
  if arg not in SIZES:
    raise ValueError(f"configs/quickstart.py:{arg}: use one of {', '.join(SIZES)}.")
  return build(*SIZES[arg])
