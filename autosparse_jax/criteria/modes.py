"""Train-mode forwards for the criteria whose authors run BatchNorm on batch statistics
(ProsPr, NTK-SAP, PX), and the batch statistics themselves."""
import jax
import jax.numpy as jnp


def train_logits(model_state, params, x, dtype=None):
  """Train-mode forward: BN normalises with the batch's statistics (gradients flow through
  them, as in PyTorch's train mode); the running-average update is discarded. A network given
  as a function (the public API's apply_fn) has one mode: its own."""
  if not hasattr(model_state, "model"):
    return model_state.logits(params, x, dtype)
  model = model_state.model if dtype is None else model_state.model.clone(dtype=dtype)
  variables = {"params": params}
  if model_state.batch_stats:
    variables["batch_stats"] = model_state.batch_stats
    return model.apply(variables, x, train=True, mutable=["batch_stats"])[0]
  return model.apply(variables, x, train=True)


def batch_statistics(model_state, params, x):
  """batch_stats equal to the statistics of batch x (PyTorch: reset_running_stats, then a
  train-mode forward with BN momentum 1), as constants.

  Flax updates ra = mu * ra + (1 - mu) * batch; two train-mode passes from ra = 0 and
  ra = 1 give mu (whatever the model's momentum) and so the batch statistic. Flax's
  variance is the biased one (PyTorch stores the unbiased one: a factor n / (n - 1)).
  """
  if not model_state.batch_stats:
    return model_state.batch_stats

  def updated(fill):
    stats = jax.tree.map(lambda s: jnp.full_like(s, fill), model_state.batch_stats)
    return model_state.model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                   mutable=["batch_stats"])[1]["batch_stats"]

  from_zero, from_one = updated(0.0), updated(1.0)
  stats = jax.tree.map(lambda a, b: a / (1.0 - (b - a)), from_zero, from_one)
  return jax.lax.stop_gradient(stats)
