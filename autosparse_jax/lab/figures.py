"""Paper Figure 1: the surviving score of an IRP run against theta_0 and against SNIP / GraSP.

The SNIP and GraSP scores are the caller's, computed on the IRP's own initial network
(runs.initial_scores: same model, data and seed; theta_0 is checked against the score
dataset), so the panels compare criteria on identical weights. Up to `max_points` weights
are drawn (fixed seed) to keep the scatter readable; Spearman's rank
correlation over all weights is in each panel's title.
"""
import numpy as np
from scipy import stats

from autosparse_jax import artefacts
from autosparse_jax.errors import ConfigError
from autosparse_jax.score_dataset import load_score_dataset


CLIP = (0.5, 99.5)  # Percentiles an axis of scores spans: a few outliers would squeeze the rest near 0.


def robust_limits(values, clip=CLIP):
  """(low, high) of an axis over the `clip` percentiles of `values`, padded by 5%."""
  low, high = np.percentile(values, clip)
  pad = 0.05 * (high - low) or 1e-12
  return float(low - pad), float(high + pad)


def survival_figure(irp_results, initial_scores, path, max_points=20000):
  """initial_scores(seed) -> (theta_0, {"snip": scores, "grasp": scores}), flat over prunable layers
  (runs.initial_scores: computed by the caller; this module only draws)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  directory = irp_results["score_dataset_dir"]
  directory = directory[0] if isinstance(directory, list) else directory
  arrays, meta = load_score_dataset(directory)
  theta0, scores = initial_scores(meta["seed"])
  if not np.array_equal(theta0, arrays["theta0"]):
    raise ConfigError(f"{directory}: theta_0 differs from the network config.{meta['model']} seed "
                      f"{meta['seed']} initialises; was it made by another version or config?")
  survival = arrays["score"]
  pick = np.random.default_rng(0).permutation(survival.size)[:max_points]
  panels = [("initial weight $\\theta_0$", arrays["theta0"]),
            ("SNIP score $|\\theta_0 g_0|$", scores["snip"]),
            ("GraSP score $\\theta_0 \\cdot H g_0$ (lowest pruned)", scores["grasp"])]
  fig, axes = plt.subplots(1, 3, figsize=(13, 4))
  for ax, (label, x) in zip(axes, panels):
    rho = stats.spearmanr(x, survival).statistic
    ax.scatter(x[pick], survival[pick], s=2, alpha=0.3)
    low, high = robust_limits(x)
    outside = int(np.sum((x < low) | (x > high)))
    ax.set_xlim(low, high)
    ax.set_xlabel(label, fontsize=10)
    ax.set_title(f"Spearman {rho:.3f}" + (f"; axis: {CLIP[0]:g}-{CLIP[1]:g}th percentile, {outside} weights "
                                          "beyond" if outside else ""), fontsize=9)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("surviving score (normalised)", fontsize=10)
  fig.suptitle(f"IRP-{meta['criterion']}, {meta['model']} / {meta['dataset']}, {meta['rounds']} rounds, "
               f"seed {meta['seed']}", fontsize=10)
  fig.tight_layout()
  artefacts.save_figure(fig, path, dpi=120)
  plt.close(fig)
  return path
