r"""Trains the AutoS scorer on surviving-score datasets of IRP runs.

  python -m autosparse_jax.lab.main --config=configs/autos_train.py:mlp --workdir=DIR \
    --config.scorer.datasets='("IRP_DIR/scores/seed_0/autosparse_scores/1.0.0",)'

arg = backbone: resnet18 (the paper's scorer; a GPU job: one ResNet-18 forward
per weight), vgg19, or mlp (2-16-64-1024-1024-64-1, runs on CPU). MSE, Adam
lr 0.01, batch 1024, 10 epochs (paper), 10% of the weights held out (never
trained on). --config.scorer.features='("theta0",)' or '("g0",)' for the
inputs ablation; --config.dtype=bfloat16 for bf16 compute on GPUs.
Several datasets are merged (paper Table 6). results.json: scorer_dir (for
`--config.criterion=autos --config.autos.scorer_dir=...` in configs/prune.py),
held-out MSE, and DIR/scorer_predictions.png (paper Figures 4-5).

Cost on the 2-core CPU, mlp, LeNet-300-100 dataset (266k weights, 240k
trained): ~15 s per epoch.
"""
import ml_collections

from autosparse_jax.lab import recipes


def get_config(arg="mlp"):
  config = recipes.base_config()
  config.job = "autos_train"
  config.train.update(dict(epochs=10, batch_size=1024, optimizer="adam", lr=0.01))
  del config.autos  # The `autos` criterion's settings (prune, sweep); this job's scorer is config.scorer.
  config.scorer = ml_collections.ConfigDict(dict(
      datasets=(), backbone=arg, features=("theta0", "g0"), width=1.0,
      holdout_fraction=0.1))
  return config
