"""SynFlow (Tanaka et al. 2020): data-free synaptic flow, computed in float64.

All parameters are replaced by their absolute values, the input is all ones
(batch of 1), BN runs in eval mode, R = sum(output) and the score is
|theta * dR/dtheta|. In float32 R and its gradients underflow on deep networks
at high sparsity (Synaptic-Flow issue #12): far more weights than asked get a
score of exactly 0. Here the whole computation runs in float64, so callers
must trace and run it under `jax.enable_x64(True)` (the pruning
driver does: the registry marks it float64).
"""
import jax
import jax.numpy as jnp

from autosparse_jax.masks import apply_masks


def synflow_scores(params, masks, model_state, prune_data, key, cfg, dtype=jnp.float64):
  del prune_data, key, cfg
  abs_params = jax.tree.map(lambda p: jnp.abs(p).astype(dtype), apply_masks(params, masks))
  stats = jax.tree.map(lambda s: jnp.abs(s).astype(dtype), model_state.batch_stats)
  state = model_state.replace(batch_stats=stats)
  ones = jnp.ones((1,) + tuple(model_state.spec.image_shape), dtype)
  flow = lambda p: jnp.sum(state.logits(p, ones, dtype=dtype))
  grads = jax.grad(flow)(abs_params)
  return jax.tree.map(lambda p, g: jnp.abs(p * g), abs_params, grads)
