"""Masked training: TrainState, optimizer from config, an epoch as one jitted lax.scan.

Pruned weights are exactly zero in every forward pass (params are masked before
`apply`), get zero gradients, and are re-masked after every update, so weight
decay and momentum never revive them. Everything random derives from the
state's seed key by `fold_in`, so a state vmapped over a leading seed axis
trains each seed exactly as a standalone run of that seed (streams: keys.py).
"""
import dataclasses
import functools
import types
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from autosparse_jax import keys
from autosparse_jax.data import batching
from autosparse_jax.data.specs import DatasetSpec
from autosparse_jax.errors import ConfigError, unknown_name_message
from autosparse_jax.masks import apply_masks

OPTIMIZERS = ("sgd", "adam")


@flax.struct.dataclass
class TrainState:
  params: Any
  masks: Any        # Same tree structure as params (see masks.py).
  batch_stats: Any  # {} for models without BatchNorm.
  opt_state: Any
  step: jax.Array   # int32 scalar: optimizer steps taken (defines epoch and batch position).
  key: jax.Array    # The seed's PRNG key (raw uint32[2]).


def make_optimizer(train_cfg, steps_per_epoch):
  """Adam or SGD(+momentum, Nesterov) with PyTorch-style coupled weight decay and LR drops."""
  if train_cfg.optimizer not in OPTIMIZERS:
    raise ConfigError(unknown_name_message("config.train.optimizer", train_cfg.optimizer, OPTIMIZERS))
  boundaries = {int(e) * steps_per_epoch: float(train_cfg.lr_drop_factor)
                for e in train_cfg.lr_drop_epochs}
  lr = optax.piecewise_constant_schedule(float(train_cfg.lr), boundaries)
  if train_cfg.optimizer == "adam":
    opt = optax.adam(lr)
  else:
    momentum = float(train_cfg.momentum) or None
    opt = optax.sgd(lr, momentum=momentum, nesterov=bool(train_cfg.nesterov) and momentum is not None)
  if train_cfg.weight_decay:
    # torch.optim adds wd * param to the gradient before the optimizer (coupled L2).
    opt = optax.chain(optax.add_decayed_weights(float(train_cfg.weight_decay)), opt)
  return opt


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
  """Pure functions of one network's TrainState; jit/vmap them at the call site."""
  model: nn.Module
  tx: optax.GradientTransformation
  spec: DatasetSpec
  batch_size: int
  steps_per_epoch: int
  layout: Any = None  # sharding.Layout: batches split over the mesh's "data" axis; None = one device.

  def constrain_batch(self, *arrays):
    if self.layout is None:
      return arrays
    return tuple(self.layout.constrain_batch(a) for a in arrays)

  def init_variables(self, key):
    dummy = jnp.zeros((1,) + tuple(self.spec.image_shape), jnp.float32)
    variables = self.model.init(keys.init_key(key), dummy, train=False)
    return variables["params"], variables.get("batch_stats", {})

  def has_conv(self):
    params, _ = jax.eval_shape(self.init_variables, keys.seed_key(0))
    return any(p.ndim == 4 for p in jax.tree.leaves(params))

  def create_state(self, key, params, batch_stats, masks):
    params = apply_masks(params, masks)
    return TrainState(params=params, masks=masks, batch_stats=batch_stats,
                      opt_state=self.tx.init(params), step=jnp.zeros((), jnp.int32), key=key)

  def apply(self, params, masks, batch_stats, x, train):
    """Logits (and new batch_stats when training) of the masked network."""
    return self.forward(apply_masks(params, masks), batch_stats, x, train)

  def forward(self, params, batch_stats, x, train):
    """Logits (and new batch_stats when training) of `params` as they are."""
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    if not train:
      return self.model.apply(variables, x, train=False), batch_stats
    logits, updates = self.model.apply(variables, x, train=True, mutable=["batch_stats"])
    return logits, updates.get("batch_stats", batch_stats)

  def train_step(self, state, images, labels, perm):
    """One SGD step on batch (state.step % steps_per_epoch) of the epoch ordered by `perm`."""
    batch_index = state.step % self.steps_per_epoch
    aug_key = keys.augment_key(state.key, state.step)
    x, y = batching.train_batch(self.spec, images, labels, perm, batch_index, self.batch_size, aug_key)
    x, y = self.constrain_batch(x, y)  # Data parallel: each device takes its slice of the batch.

    def loss_fn(params):
      logits, batch_stats = self.apply(params, state.masks, state.batch_stats, x, train=True)
      return cross_entropy(logits, y).mean(), (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = apply_masks(optax.apply_updates(state.params, updates), state.masks)
    new_state = state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state,
                              step=state.step + 1)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
    return new_state, {"loss": loss, "accuracy": accuracy}

  def sparse_train_step(self, state, images, labels, perm, step, record):
    """One step under a mask schedule (a dynamic_sparsity record: GMP, SET, RigL).

    The loss runs on the params as they are: pruned weights are exactly 0, so the forward pass
    is the masked network's and the gradient is the dense one (pruned positions included) that
    RigL grows by. `step` is the run's step, unbatched under vmap, so lax.cond stays a branch:
    only update steps pay for the mask update. On other steps the gradient is masked before the
    optimizer, exactly as train_step. On a SET / RigL update step the masks change, dropped
    weights are zeroed, regrown ones start at 0 with their optimizer state reset, and the
    optimizer step is skipped (RigL's convention); GMP prunes, then takes its step.
    """
    from autosparse_jax import dynamic_sparsity as ds  # The schedules; static training never loads them.
    batch_index = state.step % self.steps_per_epoch
    x, y = batching.train_batch(self.spec, images, labels, perm, batch_index, self.batch_size,
                                keys.augment_key(state.key, state.step))
    x, y = self.constrain_batch(x, y)

    def loss_fn(params):
      logits, batch_stats = self.forward(params, state.batch_stats, x, train=True)
      return cross_entropy(logits, y).mean(), (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)

    def optimizer_step(params, masks, opt_state):
      masked = jax.tree.map(lambda g, m: jnp.where(m, g, jnp.zeros((), g.dtype)), grads, masks)
      updates, opt_state = self.tx.update(masked, opt_state, params)
      return apply_masks(optax.apply_updates(params, updates), masks), opt_state

    def plain(params, masks, opt_state):
      params, opt_state = optimizer_step(params, masks, opt_state)
      return params, masks, opt_state

    def update(params, masks, opt_state):
      scores = None
      if isinstance(record, ds.GMP) and record.scores == "snip":
        scores = jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads)
      new, regrown = ds.update_masks(record, params, masks, grads, keys.sparse_training_key(state.key), step,
                                     scores=scores)
      if isinstance(record, ds.GMP):
        params, opt_state = optimizer_step(apply_masks(params, new), new, opt_state)
        return params, new, opt_state
      return apply_masks(params, new), new, ds.reset_opt_state(opt_state, params, regrown)

    params, masks, opt_state = jax.lax.cond(ds.is_update_step(record, step), update, plain,
                                            state.params, state.masks, state.opt_state)
    new_state = state.replace(params=params, masks=masks, batch_stats=batch_stats, opt_state=opt_state,
                              step=state.step + 1)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
    return new_state, {"loss": loss, "accuracy": accuracy}

  def train_steps(self, state, images, labels, num_steps, unroll=False, record=None, first_step=None):
    """`num_steps` steps as one lax.scan; must not cross an epoch boundary.

    The epoch's order is drawn once from (seed, epoch); `images`/`labels` are the
    whole training set on device (uint8 / int32; `images` may carry padding rows
    after the labelled ones: see sharding.Layout.put_rows_sharded). unroll=True emits the steps as
    straight-line code instead of a while loop (see LOOPS).

    record (a dynamic_sparsity record; None: static masks) with first_step, the run's step of
    the first of these steps (unbatched: every seed is at the same step), trains with masks
    that change on schedule (sparse_train_step).
    """
    epoch = state.step // self.steps_per_epoch
    perm = jax.random.permutation(keys.epoch_key(state.key, epoch), labels.shape[0])  # images may be padded.
    if record is None:
      step_fn = lambda s, i: self.train_step(s, images, labels, perm)
    else:
      step_fn = lambda s, i: self.sparse_train_step(s, images, labels, perm, first_step + i, record)
    if unroll:  # Straight-line code: lax.scan(unroll=True) still emits a while loop.
      steps = []
      for i in range(num_steps):
        state, metrics = step_fn(state, i)
        steps.append(metrics)
      return state, jax.tree.map(lambda *m: jnp.mean(jnp.stack(m)), *steps)
    if record is None:
      state, metrics = jax.lax.scan(lambda s, _: step_fn(s, None), state, None, length=num_steps)
    else:  # The step index as scanned input: unbatched under vmap, so the update's lax.cond stays one.
      state, metrics = jax.lax.scan(step_fn, state, jnp.arange(num_steps, dtype=jnp.int32))
    return state, jax.tree.map(jnp.mean, metrics)

  def evaluate(self, state, images, labels, valid):
    """Mean loss and accuracy over padded eval batches [B, b, ...] (see batching.eval_batches)."""
    def body(totals, batch):
      x, y, v = self.constrain_batch(*batch)
      logits, _ = self.apply(state.params, state.masks, state.batch_stats,
                             batching.normalize(x, self.spec), train=False)
      loss = jnp.sum(cross_entropy(logits, y) * v)
      # Counted as integers: exact, so vmapped and single runs report identical accuracies.
      correct = jnp.sum(((jnp.argmax(logits, -1) == y) & (v > 0)).astype(jnp.int32))
      return (totals[0] + loss, totals[1] + correct), None

    init = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
    (loss, correct), _ = jax.lax.scan(body, init, (images, labels, valid))
    n = jnp.sum(valid)
    return {"loss": loss / n, "accuracy": correct.astype(jnp.float32) / n.astype(jnp.float32)}


def over_seeds(fn, in_axes, layout=None):
  """vmap over the leading seed axis, also for a single seed.

  With a layout, the seed axis is the mesh's "seeds" axis (spmd_axis_name), so
  sharding constraints inside keep seeds on their own devices.

  XLA lowers some ops differently with and without a batch axis (results differ
  in the last bit), but per-seed results do not depend on the size of the axis:
  so every job runs vmapped, and seed k of a num_seeds=S run equals the
  num_seeds=1 run of seed k bit for bit (tests/test_train.py).
  """
  return jax.vmap(fn, in_axes=in_axes, spmd_axis_name=None if layout is None else "seeds")


def make_trainer(train, spec, num_train, model, layout=None):
  """The Trainer of `train` (a mapping or config with batch_size and the optimizer's fields)."""
  if isinstance(train, dict):
    train = types.SimpleNamespace(**train)
  spe = batching.steps_per_epoch(num_train, train.batch_size)
  return Trainer(model=model, tx=make_optimizer(train, spe), spec=spec,
                 batch_size=int(train.batch_size), steps_per_epoch=spe, layout=layout)


# How an epoch is driven. "scan": one jitted lax.scan over the whole epoch (a chunk
# of it when logging more often). "python": one jitted, unrolled step per call: XLA:CPU
# runs conv gradients inside a while loop ~60x slower than outside it (jax-ml/jax#12868;
# ResNet-18 batch 32: 39 s vs 1.3 s per step). "auto": "python" for conv nets on CPU.
LOOPS = ("auto", "scan", "python")


def resolve_loop(loop, trainer, platform):
  if loop not in LOOPS:
    raise ConfigError(unknown_name_message("config.train.loop", loop, LOOPS))
  if loop == "auto":
    return "python" if platform == "cpu" and trainer.has_conv() else "scan"
  return loop


def jit_epoch(trainer, num_steps=None, unroll=False, record=None):
  """jit(vmap(train_steps)) over the seed axis; the state argument is donated.

  record: a mask schedule (dynamic_sparsity; None = static masks): the program then takes a fourth
  argument, the run's step of its first step (an int32 scalar, the same for every seed).
  """
  fn = functools.partial(trainer.train_steps, num_steps=num_steps or trainer.steps_per_epoch,
                         unroll=unroll)
  axes, shardings = (0, None, None), lambda layout: (layout.states, None, None)
  if record is not None:
    fn = functools.partial(fn, record=record)
    fn_static = fn
    fn = lambda state, images, labels, first_step: fn_static(state, images, labels, first_step=first_step)
    axes, shardings = (0, None, None, None), lambda layout: (layout.states, None, None, None)
  layout = trainer.layout
  if layout is None:
    return jax.jit(over_seeds(fn, axes), donate_argnums=0)
  # Data as placed (replicated, or rows split: config.mesh.shard_train_set); metrics
  # replicated: every process can read them.
  return jax.jit(over_seeds(fn, axes, layout), donate_argnums=0, in_shardings=shardings(layout),
                 out_shardings=(layout.states, layout.replicated))


def jit_evaluate(trainer):
  layout = trainer.layout
  if layout is None:
    return jax.jit(over_seeds(trainer.evaluate, (0, None, None, None)))
  return jax.jit(over_seeds(trainer.evaluate, (0, None, None, None), layout),
                 in_shardings=(layout.states,) + (layout.replicated,) * 3,
                 out_shardings=layout.replicated)
