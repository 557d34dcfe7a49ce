r"""Lin's concordance correlation between surviving-score datasets (paper Table 9).

  python -m autosparse_jax.lab.main --config=configs/ccc.py --workdir=DIR \
    --config.ccc.datasets='("RUN_A/scores/seed_0/autosparse_scores/1.0.0", "RUN_B/scores/seed_0/autosparse_scores/1.0.0")'

Every pair of the given datasets (the `score_dataset_dir` of IRP runs on the
same model) gets the CCC over all weights and per layer, in results.json.
Seconds for LeNet-sized datasets. Paper (same init, two IRP runs):
SNIP&SNIP 0.236, Mag&Mag 0.156, GraSP&GraSP 0.081, Random&Random ~0.
"""
import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.job = "ccc"
  config.ccc = ml_collections.ConfigDict(dict(datasets=(), field="score"))
  return config
