"""A user's plugin module, as config.imports loads it: registers a criterion of its own."""
import jax
import jax.numpy as jnp

import autosparse_jax as asj


def squared_magnitude(params, masks, model_state, prune_data, key, options):
  """theta^2: a criterion defined outside the package (same ranking as magnitude)."""
  del masks, model_state, prune_data, key, options
  return jax.tree.map(jnp.square, params)


asj.register_criterion("plugin_squared_magnitude", squared_magnitude, data=False)


def nan_in_the_last_layer(params, masks, model_state, prune_data, key, options):
  """|theta|, but NaN in the last prunable layer: a criterion gone wrong (tests the exit-3 path)."""
  del masks, model_state, prune_data, key, options
  scores = jax.tree.map(jnp.abs, params)
  last = sorted(scores)[-1]
  scores[last] = dict(scores[last], kernel=scores[last]["kernel"] * jnp.nan)
  return scores


asj.register_criterion("plugin_nan_scores", nan_in_the_last_layer, data=False)


def output_saliency(params, masks, model_state, prune_data, key, options):
  """|theta * d sum(logits(ones)) / d theta|: data-free, but it runs the network (SynFlow-like)."""
  del prune_data, key, options
  x = jnp.ones((1,) + tuple(model_state.spec.image_shape), jnp.float32)
  grads = jax.grad(lambda p: jnp.sum(model_state.logits(asj.apply_masks(p, masks), x)))(params)
  return jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads)


asj.register_criterion("plugin_output_saliency", output_saliency, data=False, runs_network=True)
