"""NTK-SAP (Wang et al., ICLR 2023, "NTK-SAP: Improving neural network pruning by
aligning training dynamics"), as the authors' NTKSAP pruner (YiteWang/NTK-SAP,
Pruners/pruners.py) computes it. Data-free.

Each call (one pruning round) sums, over ntk_sap_resamples re-samplings x the
batches of the pruning set, the mask gradient of the finite-difference NTK-trace
estimate
    T(m) = sum_x || f(x; theta' * m) - f(x; (theta' + eps * delta) * m) ||^2
with
  * theta' FRESH weights every time (the authors call model._initialize_weights()
    before every batch; here model.init with a new key: the model's own
    initialisers), keeping the current mask; only the prunable weights are
    perturbed (delta ~ N(0, 1) of their shape), biases and BN parameters not;
  * x ~ N(0, 1) of the data batch's shape (torch.randn_like(data), i.e. in the
    normalised input space);
  * BN: the authors reset the running statistics and run the unperturbed network
    once in train mode with BN momentum 1, then both networks in eval mode: both
    are normalised by the unperturbed network's batch statistics, as constants
    (criteria/modes.batch_statistics: PyTorch's running variance, the unbiased
    one). (Their prune_loop puts the network in eval mode before the first round,
    so with --prune-train-mode False, the argparse default, the very first draw
    of the first round normalises with the reset statistics, mean 0 and variance
    1; their scripts/run.sh passes --prune-train-mode True, which this follows.)
Score = |dT/dm| at the current mask, zero for pruned weights. Since
E_delta T = eps^2 * sum_x ||J_theta'(x)||_F^2 + O(eps^3) (the NTK trace on the
prunable weights), this is the mask gradient of a stochastic NTK-trace estimate.

Authors' defaults taken: eps = 0.01 (--ntksap_epsilon), R = 1 re-sampling
(--ntksap_R; their CIFAR-10 script scripts/run.sh uses 5, and their README says
to change it for CIFAR-10 only), 20 rounds (scripts/run.sh --prune-epochs 20; the
argparse default is 1) at exponential densities, a pruning set of 10 x
num_classes examples (--prune-dataset-ratio 10) in batches of at most 256
(--prune-batch-size 256). The authors' last batch is the remainder; here the
10 * C inputs are split into ceil(10 C / 256) equal batches (sizes differ from
theirs only when 256 does not divide 10 C). Float32.

Difference: after pruning the authors' model keeps the LAST re-initialised
weights (the network is trained from them); a criterion here cannot change the
params, so training starts from the original initialisation.
"""
import dataclasses

import jax
import jax.numpy as jnp

from autosparse_jax.criteria.modes import batch_statistics
from autosparse_jax.criteria.options import option
from autosparse_jax.masks import apply_masks


@dataclasses.dataclass(frozen=True)
class NtkSapOptions:
  """The authors' defaults (module docstring)."""
  ntk_sap_epsilon: float = option(0.01, "NTK-SAP: perturbation scale (authors' --ntksap_epsilon)",
                                  low=0.0, low_open=True)
  ntk_sap_resamples: int = option(1, "NTK-SAP: fresh-weight samples per round (--ntksap_R; 5 on CIFAR-10)",
                                  low=1)
  ntk_sap_samples_per_class: int = option(10, "NTK-SAP: random inputs per class (--prune-dataset-ratio)",
                                          low=1)
  ntk_sap_batch_size: int = option(256, "NTK-SAP: largest batch of random inputs (--prune-batch-size)", low=1)


def _get(cfg, field):
  return getattr(cfg, field)


def perturbation(key, params, masks, eps):
  """eps * N(0, 1) on the prunable leaves, zero elsewhere."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  mask_leaves = jax.tree.leaves(masks)
  return jax.tree.unflatten(tree, [eps * jax.random.normal(k, p.shape, p.dtype) if m.ndim > 0
                                   else jnp.zeros_like(p)
                                   for k, p, m in zip(keys, leaves, mask_leaves)])


def fd_trace(model_state, params, masks_float, x, delta):
  """T = sum_x ||f(x; params * m) - f(x; (params + delta) * m)||^2 with both networks
  normalised by the unperturbed network's batch statistics (see module docstring)."""
  apply = lambda p: jax.tree.map(lambda q, m: q * m, p, masks_float)
  base = apply(params)
  state = model_state.replace(batch_stats=batch_statistics(model_state, base, x))
  out = state.logits(base, x)
  out_mod = state.logits(apply(jax.tree.map(jnp.add, params, delta)), x)
  return jnp.sum(jnp.square(out - out_mod))


def draw(model_state, masks, key, batch, eps):
  """One draw (fresh params, their model state, inputs x [batch, ...], perturbation delta)."""
  spec = model_state.spec
  init_key, x_key, delta_key = jax.random.split(key, 3)
  if hasattr(model_state, "model"):
    dummy = jnp.zeros((1,) + tuple(spec.image_shape), jnp.float32)
    variables = model_state.model.init(init_key, dummy)
    fresh = variables["params"]
    state = model_state.replace(batch_stats=variables.get("batch_stats", model_state.batch_stats))
  else:  # A network given as a function: the user's init_fn(key) -> params draws fresh weights.
    fresh, state = model_state.init_fn(init_key), model_state
  x = jax.random.normal(x_key, (batch,) + tuple(spec.image_shape), jnp.float32)
  return fresh, state, x, perturbation(delta_key, fresh, masks, eps)


def scores_from_draws(masks, draws):
  """|sum over draws of dT/dm| at the current mask, zero for pruned weights.

  draws: [(fresh params, model state, x, delta)] as `draw` makes them (the reference tests pass
  the authors' own draws here).
  """
  masks_float = jax.tree.map(lambda m, p: m.astype(p.dtype), masks, draws[0][0])
  total_grad = jax.tree.map(jnp.zeros_like, masks_float)
  for fresh, state, x, delta in draws:  # R * ceil(10 C / 256) draws (1 to a few): straight-line code.
    total_grad = jax.tree.map(jnp.add, total_grad,
                              jax.grad(lambda m: fd_trace(state, fresh, m, x, delta))(masks_float))
  return jax.tree.map(lambda g, m: jnp.abs(g) * m, total_grad, masks_float)


def ntk_sap_scores(params, masks, model_state, prune_data, key, cfg):
  """|dT/dm| summed over re-samplings and batches (see module docstring)."""
  del prune_data, params  # Data-free; the weights are re-drawn.
  total = int(_get(cfg, "ntk_sap_samples_per_class")) * model_state.spec.num_classes
  num = -(-total // int(_get(cfg, "ntk_sap_batch_size")))
  batch = -(-total // num)
  eps = float(_get(cfg, "ntk_sap_epsilon"))
  keys = jax.random.split(key, int(_get(cfg, "ntk_sap_resamples")) * num)
  return scores_from_draws(masks, [draw(model_state, masks, k, batch, eps) for k in keys])


CRITERIA = {
    "ntk_sap": dict(score=ntk_sap_scores, rounds=20, float64=False, revives=False, data=False, runs_network=True,
                    needs_init_fn=True,
                    options=NtkSapOptions),
}
