"""FORCE (de Jorge et al., ICLR 2021, "Progressive skeletonization: trimming more fat
from a network at initialization"), as the authors' iterative_pruning with
prune_method=3 (naver/force, pruning/pruning_algos.py) computes it.

One round: the gradient g = dL/dtheta_eff of the loss at the MASKED network
theta_eff = theta * m, taken w.r.t. the effective weights themselves, so that
pruned weights get a gradient too (the authors zero the pruned weights of a copy
of the dense network without blocking their gradients: apply_hooks=False); the
score of EVERY prunable weight, pruned or not, is |theta * g| with theta the
original dense weights. A pruned weight can therefore come back: the outer loop
must take the round's top-k over ALL prunable weights (alive = everything), not
over the weights still alive, and pass the resulting mask to the next round.

Authors' defaults taken (train_cifar_tiny_imagenet.py): 10 rounds (--num_steps)
at exponential densities d^(r/10) (--mode exp), and ONE batch per round
(--num_batches 1, a new random batch of the training loader each round;
gradients averaged when more). Here: force_num_batches batches of
cfg.batch_size, drawn from the round's key, reduced by cfg.grad_reduction
(sum or mean: the same ranking). With one round and all weights alive the score
is SNIP's. BatchNorm runs in train mode by default, as the authors' network does
while pruning (train_cifar_tiny_imagenet.py builds it and prunes it before any
.eval(): each round's batch is normalised by its own statistics, gradients
through them); force_bn_mode='eval' uses the running statistics instead (this
package's SNIP convention).
"""
import jax
import jax.numpy as jnp
import dataclasses

from autosparse_jax.criteria.base import BN_MODES, accumulated_gradient, batch_indices
from autosparse_jax.criteria.options import DataOptions, option
from autosparse_jax.masks import apply_masks


@dataclasses.dataclass(frozen=True)
class ForceOptions(DataOptions):
  force_num_batches: int = option(1, "FORCE: batches of batch_size per round (authors' --num_batches 1)",
                                  low=1)
  force_bn_mode: str = option("train", "FORCE: BatchNorm on each batch's statistics (train, the authors') or the "
                              "running ones (eval)", choices=BN_MODES)


def force_scores(params, masks, model_state, prune_data, key, cfg):
  """|theta * dL/dtheta_eff| at theta_eff = theta * m, for ALL prunable weights."""
  sub = DataOptions(batch_size=int(cfg.batch_size), num_batches=int(cfg.force_num_batches),
                    grad_reduction=cfg.grad_reduction)
  batches = batch_indices(prune_data, key, sub)
  all_alive = jax.tree.map(lambda m: jnp.ones((), jnp.bool_), masks)
  grads = accumulated_gradient(model_state, apply_masks(params, masks), all_alive, prune_data,
                               batches, cfg.grad_reduction, bn_mode=cfg.force_bn_mode)
  return jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads)


CRITERIA = {
    "force": dict(score=force_scores, rounds=10, float64=False, revives=True, data=True, options=ForceOptions),
}
