"""NPB's mask metrics: effective paths, effective nodes and effective parameters.

The mask is put in place of the weights (pruned 0, kept 1), biases 0, BN
neutral (scale 1, shift 0, unit running variance), input all ones, in float64:
R = sum(output) counts the input-output paths through kept weights (SynFlow's
path norm with theta = mask; the architecture's own pooling weights them).
A kept weight is effective when it lies on such a path (m * dR/dm > 0); a node
(output unit / channel of a prunable layer) is effective when one of its
incoming weights is. Call under jax.enable_x64(True).
"""
import jax
import jax.numpy as jnp

from autosparse_jax.masks import path_name, prunable_items


def _neutral_params(params, masks):
  def leaf(path, p, m):
    if m.ndim > 0:
      return m.astype(jnp.float64)
    return jnp.ones(p.shape, jnp.float64) if path_name(path).endswith("scale") else \
        jnp.zeros(p.shape, jnp.float64)
  return jax.tree_util.tree_map_with_path(leaf, params, masks)


def neutral_network(params, masks, model_state, epsilon=1e-5):
  """(weights, model_state) of the all-ones network: mask as weights, BN an identity."""
  stats = jax.tree_util.tree_map_with_path(
      lambda path, s: (jnp.full(s.shape, 1.0 - epsilon, jnp.float64) if path_name(path).endswith("var")
                       else jnp.zeros(s.shape, jnp.float64)), model_state.batch_stats)
  return _neutral_params(params, masks), model_state.replace(batch_stats=stats)


def path_metrics(params, masks, model_state):
  """{'effective_paths', 'log10_paths', 'effective_nodes', 'effective_params'} of `masks`."""
  weights, state = neutral_network(params, masks, model_state)
  ones = jnp.ones((1,) + tuple(model_state.spec.image_shape), jnp.float64)
  flow = lambda w: jnp.sum(state.logits(w, ones, dtype=jnp.float64))
  paths, grads = jax.value_and_grad(flow)(weights)
  eff_params, eff_nodes = 0, 0
  for (_, m), (_, g) in zip(prunable_items(masks, masks), prunable_items(grads, masks)):
    effective = m & (g > 0)
    eff_params += jnp.sum(effective)
    eff_nodes += jnp.sum(jnp.any(effective.reshape(-1, effective.shape[-1]), axis=0))
  return {"effective_paths": paths, "log10_paths": jnp.log10(jnp.maximum(paths, 1e-300)),
          "effective_nodes": eff_nodes, "effective_params": eff_params}
