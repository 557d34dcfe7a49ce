"""ProsPr (Alizadeh et al., ICLR 2022, "Prospect pruning: finding trainable weights at
initialization using meta-gradients"), as the authors' prospr.prune (mil-ad/prospr,
prospr/prospr.py) computes it.

theta_0 = theta * m (the prunable weights masked; other parameters as they are);
K unrolled SGD steps theta_{k+1} = theta_k - lr * v_k on one batch (v_k = the
gradient, or PyTorch's momentum buffer when prospr_inner_momentum > 0; no weight
decay; the mask is not re-applied after step 0); the score is |dL(theta_K)/dm| at
the current mask, taken with jax.grad through the whole unrolled loop (the
authors' "full" meta-gradient mode, not the first-order one). The network runs
in train mode (BN on batch statistics: the authors call net.train()).

Authors' defaults taken (cli.py): 3 inner steps (--inner-steps), inner lr 0.1
(--inner-lr), momentum 0 (--inner-momentum), meta batch size 128
(--meta-batch-size), the SAME batch in every inner step and for the final loss
(--new-data-in-inner default False), one-shot (prune() scores once, then keeps
the top-k). Float32 (the tests run it in float64).
"""
import dataclasses

import jax
import jax.numpy as jnp
import optax

from autosparse_jax.criteria.modes import train_logits
from autosparse_jax.criteria.options import option

@dataclasses.dataclass(frozen=True)
class ProsprOptions:
  """The authors' defaults."""
  prospr_inner_steps: int = option(3, "ProsPr: unrolled SGD steps (authors' --inner-steps)", low=1)
  prospr_inner_lr: float = option(0.1, "ProsPr: their learning rate (--inner-lr)", low=0.0, low_open=True)
  prospr_inner_momentum: float = option(0.0, "ProsPr: their momentum (--inner-momentum)", low=0.0, high=1.0,
                                        high_open=True)
  prospr_batch_size: int = option(128, "ProsPr: the one batch of the inner loop and the meta-loss "
                                  "(--meta-batch-size)", low=1)


def _get(cfg, field):
  return getattr(cfg, field)


def unrolled_loss(model_state, params, masks_float, x, labels, steps, lr, momentum=0.0):
  """Loss on (x, labels) after `steps` SGD steps on (x, labels) from params * mask."""
  def loss(p):
    logits = train_logits(model_state, p, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  p = jax.tree.map(lambda q, m: q * m, params, masks_float)
  buf = None
  for _ in range(steps):
    g = jax.grad(loss)(p)
    if momentum:  # PyTorch SGD: buf = g at the first step, then momentum * buf + g.
      buf = g if buf is None else jax.tree.map(lambda b, gi: momentum * b + gi, buf, g)
      g = buf
    p = jax.tree.map(lambda q, gi: q - lr * gi, p, g)
  return loss(p)


def prospr_scores(params, masks, model_state, prune_data, key, cfg):
  """|d L(theta_K) / d m| through the unrolled inner loop (see module docstring)."""
  n = prune_data.labels.shape[0]
  b = jax.random.permutation(key, n)[: min(int(_get(cfg, "prospr_batch_size")), n)]
  x = model_state.inputs(prune_data.images[b])
  masks_float = jax.tree.map(lambda m, p: m.astype(p.dtype), masks, params)
  meta = jax.grad(lambda m: unrolled_loss(
      model_state, params, m, x, prune_data.labels[b], int(_get(cfg, "prospr_inner_steps")),
      float(_get(cfg, "prospr_inner_lr")), float(_get(cfg, "prospr_inner_momentum"))))(masks_float)
  return jax.tree.map(jnp.abs, meta)


CRITERIA = {
    "prospr": dict(score=prospr_scores, rounds=1, float64=False, revives=False, data=True, options=ProsprOptions),
}
