"""Paper Figure 1: the surviving score of an IRP run against theta_0 and against SNIP / GraSP.

The SNIP and GraSP scores are computed here on the IRP's own initial network
(same model, data and seed: theta_0 is checked against the score dataset), so
the panels compare criteria on identical weights. Up to `max_points` weights
are drawn (fixed seed) to keep the scatter readable; Spearman's rank
correlation over all weights is in each panel's title.
"""
import jax
import ml_collections
import numpy as np
from scipy import stats

from autosparse_jax import artefacts, engine, masks as masks_lib, pruning
from autosparse_jax.errors import ConfigError
from autosparse_jax.score_dataset import load_score_dataset


def initial_scores(irp_config, seed, criteria_names=("snip", "grasp")):
  """(theta_0, {criterion: scores}) of seed's initial network, flat over prunable layers."""
  config = ml_collections.ConfigDict(irp_config.to_dict())
  config.seed, config.num_seeds = int(seed), 1
  task = engine.build_task(config)
  states = engine.init_states(config, task)
  masks = jax.tree.map(lambda m: np.asarray(m[0]), states.masks)  # Without the seed axis.
  flat = lambda tree: np.concatenate([x.reshape(-1) for _, x in masks_lib.prunable_items(
      jax.tree.map(lambda v: np.asarray(v[0]), tree), masks)])
  scores = {name: flat(pruning.prune_states(config, task, states, name, 0.5)[1]) for name in criteria_names}
  return flat(states.params), scores


def survival_figure(irp_config, irp_results, path, max_points=20000):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  directory = irp_results["score_dataset_dir"]
  directory = directory[0] if isinstance(directory, list) else directory
  arrays, meta = load_score_dataset(directory)
  theta0, scores = initial_scores(irp_config, meta["seed"])
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
    ax.set_xlabel(label)
    ax.set_title(f"Spearman {rho:.3f}", fontsize=9)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("surviving score (normalised)")
  fig.suptitle(f"IRP-{meta['criterion']}, {meta['model']} / {meta['dataset']}, {meta['rounds']} rounds, "
               f"seed {meta['seed']}", fontsize=10)
  fig.tight_layout()
  artefacts.save_figure(fig, path, dpi=120)
  plt.close(fig)
  return path
