"""Data-dependent criteria: SNIP (Lee et al. 2019) and GraSP (Wang et al. 2020)."""
import jax
import jax.numpy as jnp

from autosparse_jax.criteria.base import accumulated_gradient, batch_indices, class_balanced_indices
from autosparse_jax.masks import apply_masks


def snip_scores(params, masks, model_state, prune_data, key, cfg):
  """|theta * dL/dtheta| = |dL/dmask| at mask = 1, gradient summed (or averaged) over batches."""
  batches = batch_indices(prune_data, key, cfg)
  grads = accumulated_gradient(model_state, params, masks, prune_data, batches, cfg.grad_reduction)
  return jax.tree.map(lambda p, g: jnp.abs(p * g), apply_masks(params, masks), grads)


def grasp_batches(prune_data, key, cfg, num_classes):
  """Class-balanced samples (cfg.grasp_samples_per_class of each class) as equal batches.

  As few batches as cfg.batch_size allows (the number divides the sample count,
  so the mean of batch means is the mean over all samples).
  """
  per_class = int(cfg.grasp_samples_per_class)
  total = per_class * num_classes
  num = next(d for d in range(-(-total // int(cfg.batch_size)), total + 1) if total % d == 0)
  return class_balanced_indices(prune_data, key, per_class, num_classes).reshape(num, total // num)


def hessian_gradient_product(model_state, params, masks, prune_data, batches, temperature):
  """(g, H g) of the temperature-scaled loss: H g by forward-over-reverse, jvp of grad."""
  total_grad = lambda p: accumulated_gradient(model_state, p, masks, prune_data, batches, "mean",
                                              temperature)
  g = jax.lax.stop_gradient(total_grad(params))
  _, hg = jax.jvp(total_grad, (params,), (g,))
  return g, hg


def grasp_scores(params, masks, model_state, prune_data, key, cfg):
  """theta * (H g): the LOWEST are pruned (the GraSP paper's -theta * Hg, largest removed)."""
  batches = grasp_batches(prune_data, key, cfg, model_state.spec.num_classes)
  _, hg = hessian_gradient_product(model_state, params, masks, prune_data, batches,
                                   float(cfg.grasp_temperature))
  return jax.tree.map(lambda p, h: p * h, apply_masks(params, masks), hg)
