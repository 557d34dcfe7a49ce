r"""Builders shared by the paper-experiment configs in configs/paper/ (not a config itself).

Every configs/paper/*.py loads this file by path (configs/ is not a Python
package) with `load_common()`, and this file loads the job configs of configs/
(irp.py, autos_train.py, pai_sweep.py, ccc.py) the same way. The builders return
whole job configs at the paper's values (recipes.py: epochs, optimiser, lr
drops); a paper config wires them into a `pipeline` job with "@STAGE.FIELD"
references (autosparse_jax/lab/jobs/pipeline.py).

  irp_stage(recipe, criterion, rounds, num_seeds)  IRP job (SNIP-iter / LTH score datasets).
  dataset_refs(stage, config, index)               "@STAGE.score_dataset_dir" references that
                                                   are right for 1 seed (a string) or several (a list).
  autos_stage(backbone, datasets, features)        AutoS scorer training on those datasets.
  autos_variant(stage) / survival_variant(stage)   sweep variants: an AutoS scorer / IRP masks.
  sweep_stage(recipe, criteria, sparsities, variants, num_seeds, dense)
  ccc_stage(datasets)                              CCC of score datasets (Table 9).
  pipeline(stages)                                 the pipeline job of (name, config) pairs.

Paper choices fixed here (Appendix A-E):
  seeds 0, 1, 2 for every pruned network (Appendix E: "error bars ... seed 0,1,2");
  IRP to 1% density (final_density 0.01), equal count per round (the original's
  working schedule), 20 rounds unless a table varies it; the AutoS dataset is
  the seed-0 IRP run; AutoS: MSE, Adam 0.01, batch 1024, 10 epochs.
"""
import os

import ml_collections

from autosparse_jax.lab import config_tools

SEEDS = 3                                   # Seeds 0, 1, 2 (Appendix E).
ABLATION_SPARSITIES = (0.7, 0.9, 0.95, 0.99)  # Tables 2, 3, 5, 6.
FULL_FEATURES = ("theta0", "g0")            # Param + Grad: the default AutoS input.


def job_config(name, arg=None):
  """get_config(arg) of configs/NAME.py (irp, autos_train, pai_sweep, ccc, ...)."""
  module = config_tools.config_module(__file__, os.path.join("..", f"{name}.py"))
  return module.get_config() if arg is None else module.get_config(arg)


def irp_stage(recipe, criterion="snip", rounds=20, num_seeds=1, seed=0):
  """An IRP job: `criterion` snip = SNIP-iter, magnitude = LTH; `rounds` to 1% density."""
  config = job_config("irp", recipe)
  config.criterion = criterion
  config.irp.rounds = int(rounds)
  config.irp.final_density = 0.01
  config.irp.schedule = "count"
  config.seed = int(seed)
  config.num_seeds = int(num_seeds)
  return config


def dataset_refs(stage, config, index=None):
  """References to the score dataset(s) of IRP stage `stage` (its job config `config`).

  index=None: every seed's dataset (spliced into the tuple it is placed in);
  index=i: seed config.seed + i only. An IRP job reports one directory (a string)
  for one seed and a list for several, so "[i]" is only valid for several.
  """
  num_seeds = int(config.num_seeds)
  if index is None or num_seeds == 1:
    if index not in (None, 0):
      raise ValueError(f"stage {stage} has 1 seed: no dataset {index}.")
    return (f"@{stage}.score_dataset_dir",)
  if not 0 <= index < num_seeds:
    raise ValueError(f"stage {stage} has {num_seeds} seeds: no dataset {index}.")
  return (f"@{stage}.score_dataset_dir[{index}]",)


def autos_stage(backbone, datasets, features=FULL_FEATURES):
  """An autos_train job: the AutoS scorer (`backbone` resnet18 | vgg19 | mlp) on `datasets`."""
  config = job_config("autos_train", backbone)
  config.scorer.datasets = tuple(datasets)
  config.scorer.features = tuple(features)
  return config


def autos_variant(stage):
  """A sweep variant pruning with the scorer of autos_train stage `stage`."""
  return dict(criterion="autos", autos=dict(scorer_dir=f"@{stage}.scorer_dir"))


def survival_variant(stage, config):
  """A sweep variant replaying the IRP masks of IRP stage `stage` (every seed's dataset)."""
  return dict(criterion="survival", survival=dict(score_datasets=dataset_refs(stage, config)))


def sweep_stage(recipe, criteria, sparsities, variants=None, num_seeds=SEEDS, dense=True):
  """A sweep job on `recipe`: `criteria` (names or keys of `variants`) x sparsities x seeds 0.."""
  config = job_config("pai_sweep", recipe)
  config.seed = 0
  config.num_seeds = int(num_seeds)
  config.sweep.criteria = tuple(criteria)
  config.sparsities = tuple(float(s) for s in sparsities)
  config.sweep.dense = bool(dense)
  for label, fields in (variants or {}).items():
    config.sweep.variants[label] = fields
  return config


def ccc_stage(datasets):
  """A ccc job over `datasets` (every pair)."""
  config = job_config("ccc")
  config.ccc.datasets = tuple(datasets)
  return config


def pipeline(stages, survival_figure_stage=""):
  """The pipeline job running `stages` [(name, job config)] in order."""
  config = ml_collections.ConfigDict()
  config.job = "pipeline"
  config.stages = tuple(name for name, _ in stages)
  if len(set(config.stages)) != len(config.stages):
    raise ValueError(f"stage names repeat: {config.stages}")
  for name, stage in stages:
    config[name] = stage
  if survival_figure_stage:
    config.survival_figure_stage = survival_figure_stage
  return config

