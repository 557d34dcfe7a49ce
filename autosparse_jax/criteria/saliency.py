"""Data-dependent criteria: SNIP (Lee et al. 2019), GraSP (Wang et al. 2020) and |GraSP|
(Frankle et al. 2021, "Pruning neural networks at initialization: why are we missing the mark?")."""
import dataclasses

import jax
import jax.numpy as jnp

from autosparse_jax.criteria.base import BN_MODES, accumulated_gradient, batch_indices, class_balanced_indices
from autosparse_jax.criteria.options import DataOptions, option
from autosparse_jax.masks import apply_masks

GRASP_SAMPLINGS = ("balanced", "random")


@dataclasses.dataclass(frozen=True)
class GraspOptions(DataOptions):
  """GraSP's (and |GraSP|'s) options; batch_size splits its samples into equal batches."""
  grasp_samples_per_class: int = option(10, "GraSP: samples per class", low=1)
  grasp_temperature: float = option(200.0, "GraSP: softmax temperature", low=0.0, low_open=True)
  # "balanced" = grasp_samples_per_class examples of each class (the GraSP authors,
  # alecwangcq/GraSP); "random" = grasp_samples_per_class x num_classes examples drawn at
  # random (Synaptic-Flow's --prune-dataset-ratio).
  grasp_sampling: str = option("balanced", "GraSP: samples balanced per class or random",
                               choices=GRASP_SAMPLINGS)
  # "eval" = BatchNorm on its running statistics (Synaptic-Flow: prune_loop's model.eval()); "train" =
  # on each batch's own statistics, gradients through them (the GraSP authors: their driver scores a
  # freshly built network, in train mode).
  grasp_bn_mode: str = option("eval", "GraSP: BatchNorm in eval mode (Synaptic-Flow) or train mode (the GraSP "
                              "authors)", choices=BN_MODES)


def snip_scores(params, masks, model_state, prune_data, key, cfg):
  """|theta * dL/dtheta| = |dL/dmask| at mask = 1, gradient summed (or averaged) over batches."""
  batches = batch_indices(prune_data, key, cfg)
  grads = accumulated_gradient(model_state, params, masks, prune_data, batches, cfg.grad_reduction)
  return jax.tree.map(lambda p, g: jnp.abs(p * g), apply_masks(params, masks), grads)


def grasp_batches(prune_data, key, cfg, num_classes):
  """The GraSP samples as equal batches.

  cfg.grasp_sampling (default "balanced"): "balanced" takes cfg.grasp_samples_per_class
  examples of each class (the GraSP authors); "random" takes grasp_samples_per_class *
  num_classes examples uniformly at random without replacement (Synaptic-Flow). As few
  batches as cfg.batch_size allows (the number divides the sample count, so the mean
  of batch means is the mean over all samples).
  """
  per_class = int(cfg.grasp_samples_per_class)
  total = per_class * num_classes
  sampling = cfg.grasp_sampling
  if sampling == "balanced":
    idx = class_balanced_indices(prune_data, key, per_class, num_classes)
  elif sampling == "random":
    if total > prune_data.labels.shape[0]:
      raise ValueError(f"grasp_sampling='random' needs {total} examples, the data has "
                       f"{prune_data.labels.shape[0]}.")
    idx = jax.random.permutation(key, prune_data.labels.shape[0])[:total]
  else:
    from autosparse_jax.errors import ConfigError, unknown_name_message
    raise ConfigError(unknown_name_message("config.prune.grasp_sampling", sampling, GRASP_SAMPLINGS))
  num = next(d for d in range(-(-total // int(cfg.batch_size)), total + 1) if total % d == 0)
  return idx.reshape(num, total // num)


def _prunable_only(tree, masks):
  """tree with every unprunable leaf (0-d mask) replaced by zeros."""
  return jax.tree.map(lambda x, m: x if m.ndim > 0 else jnp.zeros_like(x), tree, masks)


def hessian_gradient_product(model_state, params, masks, prune_data, batches, temperature, bn_mode="eval"):
  """(g, H g) of the temperature-scaled mean loss w.r.t. the prunable weights only.

  w = the prunable weights (masks leaves with ndim > 0); biases and BatchNorm
  parameters are held fixed. g = dL/dw and H = d^2L/dw^2 (H_ww), as the GraSP
  authors (alecwangcq/GraSP: autograd.grad over the conv/linear weights only) and
  Synaptic-Flow (over the masked parameters only) compute it. H g by forward-over-
  reverse: the jvp of the full gradient along the tangent (g_w, 0) has the
  prunable block H_ww g_w; the other blocks (H_bw g_w) are dropped. Both trees
  are zero at the unprunable leaves.
  """
  total_grad = lambda p: accumulated_gradient(model_state, p, masks, prune_data, batches, "mean",
                                              temperature, bn_mode)
  g = _prunable_only(jax.lax.stop_gradient(total_grad(params)), masks)
  _, hg = jax.jvp(total_grad, (params,), (g,))
  return g, _prunable_only(hg, masks)


def grasp_scores(params, masks, model_state, prune_data, key, cfg):
  """theta * (H g): the LOWEST are pruned (the GraSP paper's -theta * Hg, largest removed)."""
  batches = grasp_batches(prune_data, key, cfg, model_state.spec.num_classes)
  _, hg = hessian_gradient_product(model_state, params, masks, prune_data, batches,
                                   float(cfg.grasp_temperature), cfg.grasp_bn_mode)
  return jax.tree.map(lambda p, h: p * h, apply_masks(params, masks), hg)


def grasp_abs_scores(params, masks, model_state, prune_data, key, cfg):
  """|theta * (H g)| (Frankle et al. 2021's GraSP variant): the LOWEST |.| are pruned."""
  return jax.tree.map(jnp.abs, grasp_scores(params, masks, model_state, prune_data, key, cfg))


CRITERIA = {
    "grasp_abs": dict(score=grasp_abs_scores, rounds=1, float64=False, revives=False, data=True,
                      options=GraspOptions),
}
