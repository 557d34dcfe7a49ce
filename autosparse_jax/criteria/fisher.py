"""Empirical-Fisher / OBD diagonal saliency: theta^2 * E[g^2].

OBD (LeCun et al. 1990) scores a weight by (1/2) H_ii theta_i^2; here the
Hessian diagonal is replaced by the empirical Fisher diagonal
F_ii = E_n[(dl_n/dtheta_i)^2], the per-example loss gradient squared, at the
masked network, averaged over the N examples of the pruning batches
(base.batch_indices: cfg.num_batches batches of cfg.batch_size; 0 = the whole
training set), with the examples' TRUE labels (empirical, not the model-sampled
Fisher). The expectation is the plain mean over examples (not over batch means
of squared batch gradients). Score = theta_eff^2 * F_ii (the constant 1/2 is
dropped: it does not change the ranking); zero for pruned weights. One-shot,
float32. Per-example gradients: vmap of grad over each batch.
"""
import jax
import jax.numpy as jnp
import optax

from autosparse_jax.criteria.base import UNROLL_BATCHES, batch_indices
from autosparse_jax.criteria.options import DataOptions
from autosparse_jax.masks import apply_masks



def fisher_diagonal(model_state, params, masks, prune_data, batches):
  """E_n[(dl_n/dtheta)^2] over every example of `batches` ([num, batch] indices)."""
  def example_loss(p, image, label):
    x = model_state.inputs(image[None])
    logits = model_state.logits(apply_masks(p, masks), x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, label[None]).sum()

  per_example = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))

  def body(total, idx):
    g = per_example(params, prune_data.images[idx], prune_data.labels[idx])
    return jax.tree.map(lambda t, gi: t + jnp.sum(jnp.square(gi), axis=0), total, g), None

  total = jax.tree.map(jnp.zeros_like, params)
  if batches.shape[0] <= UNROLL_BATCHES:
    for b in range(batches.shape[0]):
      total, _ = body(total, batches[b])
  else:
    total, _ = jax.lax.scan(body, total, batches)
  return jax.tree.map(lambda t: t / batches.size, total)


def fisher_scores(params, masks, model_state, prune_data, key, cfg):
  """theta_eff^2 * E[g^2] (see module docstring)."""
  batches = batch_indices(prune_data, key, cfg)
  fisher = fisher_diagonal(model_state, params, masks, prune_data, batches)
  return jax.tree.map(lambda p, f: jnp.square(p) * f, apply_masks(params, masks), fisher)


CRITERIA = {
    "fisher": dict(score=fisher_scores, rounds=1, float64=False, revives=False, data=True, options=DataOptions),
}
