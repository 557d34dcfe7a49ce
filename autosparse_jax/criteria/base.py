"""What a criterion sees: the network (a static model + its batch_stats) and the pruning data.

A criterion is a pure function
    score(params, masks, model_state, prune_data, key, cfg) -> scores
with scores shaped like params (unprunable leaves ignored; the LOWEST are pruned).
"""
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from autosparse_jax.data import batching
from autosparse_jax.data.specs import DatasetSpec
from autosparse_jax.errors import ConfigError
from autosparse_jax.masks import apply_masks


@flax.struct.dataclass
class ModelState:
  batch_stats: Any
  model: nn.Module = flax.struct.field(pytree_node=False)
  spec: DatasetSpec = flax.struct.field(pytree_node=False)

  def inputs(self, images):
    """The network's input of stored images (uint8 -> normalised float32)."""
    return batching.normalize(images, self.spec)

  def logits(self, params, x, dtype=None):
    """Eval-mode forward (BN uses running statistics, as the original criteria do)."""
    model = self.model if dtype is None else self.model.clone(dtype=dtype)
    variables = {"params": params}
    if self.batch_stats:
      variables["batch_stats"] = self.batch_stats
    return model.apply(variables, x, train=False)


@flax.struct.dataclass
class PruneData:
  images: jax.Array  # uint8 [N, H, W, C], the training set on device.
  labels: jax.Array  # int32 [N]


def batch_indices(prune_data, key, cfg):
  """[num_batches, batch_size] example indices drawn without replacement from `key`.

  cfg.num_batches = 0 takes every whole batch of the training set (the original
  sums over the whole training loader).
  """
  n = prune_data.labels.shape[0]
  batch = min(int(cfg.batch_size), n)
  num = int(cfg.num_batches) or n // batch
  num = min(num, n // batch)
  perm = jax.random.permutation(key, n)[: num * batch]
  return perm.reshape(num, batch)


def class_balanced_indices(prune_data, key, per_class, num_classes):
  """per_class examples of each class (the first ones in a random order), [C * per_class].

  Sorted by class. A class with fewer than per_class examples is padded with
  perm[0] (jit needs a fixed size); real datasets have far more per class.
  """
  labels = prune_data.labels
  perm = jax.random.permutation(key, labels.shape[0])
  onehot = jax.nn.one_hot(labels[perm], num_classes, dtype=jnp.int32)
  rank = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=1)  # Rank within its class.
  chosen = jnp.nonzero(rank < per_class, size=per_class * num_classes, fill_value=0)[0]
  chosen = chosen[jnp.argsort(labels[perm][chosen], stable=True)]
  return perm[chosen]


# Up to this many pruning batches are summed as straight-line code instead of a
# lax.scan: XLA:CPU runs conv gradients inside loops ~60x slower (jax-ml/jax#12868).
# More batches (e.g. SNIP over a whole CIFAR training set) use the scan: fine on GPU,
# slow for conv nets on CPU.
UNROLL_BATCHES = 8


BN_MODES = ("eval", "train")


def loss_on(model_state, params, prune_data, idx, temperature=1.0, bn_mode="eval"):
  """Mean cross-entropy of examples idx; bn_mode 'train' normalises BatchNorm with the batch's own
  statistics (PyTorch's train mode: gradients flow through them), 'eval' with the running ones."""
  from autosparse_jax.criteria.modes import train_logits
  x = model_state.inputs(prune_data.images[idx])
  if bn_mode not in BN_MODES:
    raise ConfigError(f"BatchNorm mode {bn_mode!r} is not known. Allowed: {', '.join(BN_MODES)}.")
  forward = train_logits if bn_mode == "train" else (lambda s, p, x: s.logits(p, x))
  logits = forward(model_state, params, x).astype(jnp.float32) / temperature
  return optax.softmax_cross_entropy_with_integer_labels(logits, prune_data.labels[idx]).mean()


def accumulated_gradient(model_state, params, masks, prune_data, batches, reduction="sum",
                         temperature=1.0, bn_mode="eval"):
  """Sum (or mean) over `batches` of the batch-mean loss gradient at the masked params (BatchNorm
  in bn_mode: loss_on)."""
  if reduction not in ("sum", "mean"):
    raise ConfigError(f"config.prune.grad_reduction={reduction!r} is not known. Allowed: sum, mean.")
  grad_fn = jax.grad(lambda p, idx: loss_on(model_state, apply_masks(p, masks), prune_data, idx,
                                            temperature, bn_mode))

  def body(total, idx):
    return jax.tree.map(jnp.add, total, grad_fn(params, idx)), None

  total = jax.tree.map(jnp.zeros_like, params)
  if batches.shape[0] <= UNROLL_BATCHES:  # Straight-line code: see UNROLL_BATCHES.
    for b in range(batches.shape[0]):
      total, _ = body(total, batches[b])
  else:
    total, _ = jax.lax.scan(body, total, batches)
  if reduction == "mean":
    total = jax.tree.map(lambda g: g / batches.shape[0], total)
  return total


def initial_gradient(model_state, params, masks, prune_data, key, cfg):
  """g_0: the loss gradient on the pruning data as cfg says (batches, sum or mean).

  The second feature of the score datasets (IRP) and of the `autos` criterion:
  both call this with keys.g0_key of the network, so they see the same batches.
  """
  batches = batch_indices(prune_data, key, cfg)
  return accumulated_gradient(model_state, params, masks, prune_data, batches, cfg.grad_reduction)
