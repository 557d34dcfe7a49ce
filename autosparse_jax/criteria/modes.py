"""Train-mode forwards for the criteria whose authors run BatchNorm on batch statistics
(ProsPr, NTK-SAP, PX), and the batch statistics themselves."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


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


def batch_statistics(model_state, params, x, unbiased=True):
  """batch_stats equal to the statistics of batch x (PyTorch: reset_running_stats, then a
  train-mode forward with BN momentum 1), as constants.

  Flax updates ra = mu * ra + (1 - mu) * batch; two train-mode passes from ra = 0 and
  ra = 1 give mu (whatever the model's momentum) and so the batch statistic. Flax's
  batch variance is the biased one; PyTorch's running variance is the unbiased one, so
  with `unbiased` (the default) each BatchNorm's variance is scaled by n / (n - 1), n the
  number of values it averaged per feature (batch x spatial positions).
  """
  if not model_state.batch_stats:
    return model_state.batch_stats
  counts = {}

  def count(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
      counts[tuple(context.module.path)] = int(np.prod(args[0].shape[:-1]))
    return next_fun(*args, **kwargs)

  def updated(fill):
    stats = jax.tree.map(lambda s: jnp.full_like(s, fill), model_state.batch_stats)
    with nn.intercept_methods(count):
      return model_state.model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                     mutable=["batch_stats"])[1]["batch_stats"]

  from_zero, from_one = updated(0.0), updated(1.0)
  stats = jax.tree.map(lambda a, b: a / (1.0 - (b - a)), from_zero, from_one)
  if unbiased:
    def correct(path, s):
      names = tuple(getattr(k, "key", str(k)) for k in path)
      n = counts.get(names[:-1])
      if names[-1] == "var" and n is None:
        raise ValueError(f"batch_statistics: no BatchNorm call seen for the statistics at {'/'.join(names)}.")
      return s * (n / (n - 1.0)) if names[-1] == "var" and n > 1 else s
    stats = jax.tree_util.tree_map_with_path(correct, stats)
  return jax.lax.stop_gradient(stats)
