"""Lin's concordance correlation coefficient between two score datasets (paper Table 9).

CCC(x, y) = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2), population moments:
1 for identical scores, about 0 for independent ones, penalising shifts and
scale changes that Pearson's r ignores.
"""
import numpy as np

from autosparse_jax.console import log
from autosparse_jax.errors import ConfigError
from autosparse_jax.score_dataset import load_score_dataset
from autosparse_jax.lab.workdir import Workdir


def concordance(x, y):
  x = np.asarray(x, np.float64).reshape(-1)
  y = np.asarray(y, np.float64).reshape(-1)
  if x.shape != y.shape:
    raise ValueError(f"CCC needs equal-length inputs, got {x.size} and {y.size} values.")
  mx, my = x.mean(), y.mean()
  cov = np.mean((x - mx) * (y - my))
  denom = x.var() + y.var() + (mx - my) ** 2
  return float(2 * cov / denom) if denom > 0 else 1.0


def dataset_concordance(dir_a, dir_b, field="score"):
  """{'ccc': over all weights, 'per_layer': {name: ccc}} of two score datasets of one model."""
  a, meta_a = load_score_dataset(dir_a)
  b, meta_b = load_score_dataset(dir_b)
  if meta_a["layers"] != meta_b["layers"]:
    raise ConfigError(f"score datasets {dir_a} ({meta_a.get('model')}) and {dir_b} "
                      f"({meta_b.get('model')}) have different layers: CCC compares the same network's weights.")
  return {"ccc": concordance(a[field], b[field]),
          "per_layer": {name: concordance(la[field], lb[field])
                        for name, la, lb in zip(a["names"], a["by_layer"], b["by_layer"])}}


def validate(config):
  dirs = list(config.ccc.datasets)
  if len(dirs) < 2:
    raise ConfigError(f"config.ccc.datasets has {len(dirs)} entries: give at least two score dataset "
                      "directories (the score_dataset_dir of IRP runs), e.g. "
                      "--config.ccc.datasets='(\"/a/autosparse_scores/1.0.0\", \"/b/...\")'.")


def run(config, workdir_path):
  """CCC of every pair of config.ccc.datasets; results.json {'pairs': [...]}."""
  dirs = list(config.ccc.datasets)
  workdir = Workdir(workdir_path, config)
  if (done := workdir.finished_results()) is not None:
    return done
  pairs = []
  for i in range(len(dirs)):
    for j in range(i + 1, len(dirs)):
      result = dataset_concordance(dirs[i], dirs[j], config.ccc.field)
      pairs.append({"a": dirs[i], "b": dirs[j], **result})
      log(f"CCC {result['ccc']:.4f}  {dirs[i]}  vs  {dirs[j]}")
  workdir.start()
  results = {"job": "ccc", "field": config.ccc.field, "pairs": pairs}
  workdir.write_results(results)
  return results
