"""Path-kernel criteria: SynFlow-L2 (Gebhart et al. 2021) and PX (Iurada et al., CVPR 2024).

synflow_l2 -- "A unified paths perspective for pruning at initialization": SynFlow
on the path kernel, i.e. with every parameter (and BN running statistic) squared
instead of taken in absolute value. Input all ones (batch 1), BN in eval mode,
R = sum(f(1; theta^2)) and the score is |theta^2 * dR/d(theta^2)|, which is
conserved layer by layer like SynFlow's (on a chain, each layer's scores add up
to R). It equals |theta * dR/dtheta| / 2, so the ranking is that of
theta * d/dtheta of the squared-weight network. (The PX repository's SynFlowL2,
iurada/px-ntk-pruning lib/pruners.py, scores |theta * dR/d(theta^2)| instead:
one factor |theta| less, not conserved; we follow the paper's path kernel.)
Float64 like synflow.py (call under jax.enable_x64(True)); iterated like
SynFlow, 100 rounds.

px -- Path eXclusion, "Finding lottery tickets in vision models via data-driven
spectral foresight pruning". As the authors' PX.score (iurada/px-ntk-pruning,
lib/pruners.py) does, with three copies of the masked network:
  * activation model (eval mode, the real weights) on x: records the input of
    every ReLU (flax.linen.relu and jax.nn.relu are swapped during tracing, as
    the authors swap torch's F.relu);
  * z1 = jvf model (train-mode BN, every weight and bias = 1, i.e. the mask) on
    x^2, each ReLU replaced by the gate 1[recorded input > 0]; a constant;
  * z2 = pk model (train-mode BN, weights and biases squared, ReLU = identity) on
    an all-ones input;
  L = sum over examples and outputs of z1 * z2, and the score is
  |dL/d(pk leaf)| * theta^2 (zero for pruned weights).
BatchNorm parameters and the output layer ("fc" in the authors' models) keep
their real values in both jvf and pk models (the authors' skip list
['weight_mask', 'bias_mask', 'bn', 'fc']), so the head's weights enter z1 * z2
squared. Here a leaf is BN when its path matches cfg.px_norm_pattern and is the
head when it matches cfg.px_head_pattern; when no leaf matches the head pattern,
the layer(s) of the prunable kernels with num_classes outputs are the head.
Data: the first px_samples_per_class examples of each class in data order (the
authors' get_balanced_subset, no shuffle: the same examples every round), in
as few equal batches as cfg.batch_size allows. Iterated: the authors prune in
100 rounds at densities d^(r/100) (launch_scripts/*.sh 'rounds': 100,
train_classification.py). Float32.
"""
import contextlib
import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from autosparse_jax.criteria.modes import train_logits
from autosparse_jax.criteria.options import DataOptions, NoOptions, option
from autosparse_jax.masks import apply_masks, path_name

@dataclasses.dataclass(frozen=True)
class PxOptions(DataOptions):
  """PX's options; batch_size splits its examples into equal batches."""
  # The authors' examples_per_class; their launch scripts do not set it, so this value is
  # ours: GraSP's 10 per class.
  px_samples_per_class: int = option(10, "PX: samples per class", low=1)
  # The output layer, kept unsquared ("fc" in the authors' models, "head" in ours); if
  # nothing matches, the layer(s) whose kernel has num_classes outputs.
  px_head_pattern: str = option(r"(^|/)(head|fc)/", "PX: the classifier head's parameter paths",
                                kind="regex")
  px_norm_pattern: str = option(r"(?i)(^|/)[^/]*(bn|batchnorm|norm)[^/]*/",
                                "PX: normalisation layers' parameter paths (kept as they are)", kind="regex")


def _squared_params(params, masks, dtype):
  return jax.tree.map(lambda p: jnp.square(p.astype(dtype)), apply_masks(params, masks))


def synflow_l2_scores(params, masks, model_state, prune_data, key, cfg, dtype=jnp.float64):
  """|theta^2 * dR/d(theta^2)|, R = sum f(1; theta^2) in eval mode (see module docstring)."""
  del prune_data, key, cfg
  sq_params = _squared_params(params, masks, dtype)
  stats = jax.tree.map(lambda s: jnp.square(s.astype(dtype)), model_state.batch_stats)
  state = model_state.replace(batch_stats=stats)
  ones = jnp.ones((1,) + tuple(model_state.spec.image_shape), dtype)
  flow = lambda p: jnp.sum(state.logits(p, ones, dtype=dtype))
  grads = jax.grad(flow)(sq_params)
  return jax.tree.map(lambda p, g: jnp.abs(p * g), sq_params, grads)


# Where a network finds ReLU when it is traced: flax.linen.relu (this package's models), its home module
# flax.linen.activation, and jax.nn.relu (the same function, called as jax.nn.relu). The authors swap
# torch.nn.functional.relu, which nn.ReLU modules call too.
_RELU_HOMES = (nn, nn.activation, jax.nn)


@contextlib.contextmanager
def _relu_as(fn):
  """Swap ReLU for fn while tracing, wherever a network looks it up by attribute (_RELU_HOMES).
  (A function bound at import time, `from jax.nn import relu`, cannot be intercepted.)"""
  old = [home.relu for home in _RELU_HOMES]
  for home in _RELU_HOMES:
    home.relu = fn
  try:
    yield
  finally:
    for home, f in zip(_RELU_HOMES, old):
      home.relu = f


def first_per_class(labels, per_class, num_classes):
  """Indices of the first per_class examples of each class in data order, sorted by class."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32)
  rank = jnp.sum((jnp.cumsum(onehot, axis=0) - 1) * onehot, axis=1)
  chosen = jnp.nonzero(rank < per_class, size=per_class * num_classes, fill_value=0)[0]
  return chosen[jnp.argsort(labels[chosen], stable=True)]


def _kept_leaves(params, masks, num_classes, cfg):
  """Bool tree: leaves the jvf/pk copies keep at their real value (BN and the head)."""
  norm, head = re.compile(cfg.px_norm_pattern), re.compile(cfg.px_head_pattern)
  items = jax.tree_util.tree_leaves_with_path(params)
  names = [path_name(p) for p, _ in items]
  if not any(head.search(n) for n in names):
    mask_leaves = jax.tree.leaves(masks)
    heads = {n.rsplit("/", 1)[0] + "/" for n, (_, p), m in zip(names, items, mask_leaves)
             if m.ndim > 0 and p.shape[-1] == num_classes}
    is_head = lambda n: any(n.startswith(h) for h in heads)
  else:
    is_head = lambda n: bool(head.search(n))
  flags = [bool(norm.search(n)) or is_head(n) for n in names]
  return jax.tree.unflatten(jax.tree.structure(params), flags)


def px_scores(params, masks, model_state, prune_data, key, cfg):
  """Path eXclusion scores |dL/d(theta^2)| * theta^2 (see module docstring)."""
  del key  # The authors score the same (first) examples every round.
  spec = model_state.spec
  per_class = int(cfg.px_samples_per_class)
  total = per_class * spec.num_classes
  idx = first_per_class(prune_data.labels, per_class, spec.num_classes)
  num = next(d for d in range(-(-total // int(cfg.batch_size)), total + 1) if total % d == 0)
  batches = idx.reshape(num, total // num)

  theta = apply_masks(params, masks)
  kept = _kept_leaves(params, masks, spec.num_classes, cfg)
  jvf = apply_masks(jax.tree.map(lambda p, k: p if k else jnp.ones_like(p), params, kept), masks)
  pk0 = jax.tree.map(lambda p, k: p if k else jnp.square(p), theta, kept)

  def batch_loss(pk, b):
    # In the weights' dtype (float64 when the caller runs PX in float64: x^2 squared in that precision).
    x = model_state.inputs(prune_data.images[b]).astype(jax.tree.leaves(params)[0].dtype)
    pre = []

    def record(v, *a, **k):
      pre.append(v)
      return jnp.maximum(v, 0)  # Not jax.nn.relu: it is swapped too.

    with _relu_as(record):
      model_state.logits(theta, x)
    gates = iter([jax.lax.stop_gradient((v > 0).astype(v.dtype)) for v in pre])
    with _relu_as(lambda v, *a, **k: v * next(gates)):
      z1 = jax.lax.stop_gradient(train_logits(model_state, jvf, jnp.square(x)))
    with _relu_as(lambda v, *a, **k: v):
      z2 = train_logits(model_state, pk, jnp.ones_like(x))
    return jnp.sum(z1 * z2)

  grads = jax.tree.map(jnp.zeros_like, pk0)
  grad_fn = jax.grad(lambda pk, b: batch_loss(apply_masks(pk, masks), b))
  for i in range(num):  # Few batches (total / batch_size): straight-line code.
    grads = jax.tree.map(jnp.add, grads, grad_fn(pk0, batches[i]))
  return jax.tree.map(lambda g, p: jnp.abs(g) * jnp.square(p), grads, theta)


CRITERIA = {
    "synflow_l2": dict(score=synflow_l2_scores, rounds=100, float64=True, revives=False, data=False, runs_network=True,
                       options=NoOptions),
    "px": dict(score=px_scores, rounds=100, float64=False, revives=False, data=True, options=PxOptions),
}
