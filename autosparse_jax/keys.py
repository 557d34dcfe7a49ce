"""Every PRNG stream of a run, derived from its seed here and nowhere else.

A network's key is k = PRNGKey(seed) (raw uint32[2], so it vmaps and
checkpoints as a plain array). Each stream folds a named constant into it:

  theta_0              fold_in(k, INIT)                         model.init
  data order           fold_in(fold_in(k, DATA_ORDER), epoch)    the epoch's permutation
  augmentation         fold_in(fold_in(k, AUGMENT), step)        crops / flips of a step
  pruning stream       fold_in(k, PRUNE)                        host criteria's key (one-shot)
  pruning, round r     fold_in(fold_in(k, PRUNE), r)             a jittable criterion's key in round r
  g_0                  the pruning key of round 0                IRP's score datasets (g0_key(k)) and
                                                                 the `autos` criterion (round 0 of
                                                                 its stream): the same batches
  ablation             fold_in(k, ABLATION)                     config.prune.ablation's shuffles and
                                                                 its re-drawn theta_0 (reinit)
  IRP round r training fold_in(k, IRP_ROUND + r)                 the key of round r's TrainState
  sparse training      fold_in(k, SPARSE_TRAINING)              SET's regrowth draws (step t:
                                                                 dynamic_sparsity folds in t)
  AutoS scorer         PRNGKey(seed): init fold_in(., INIT), epoch order
                       fold_in(fold_in(., DATA_ORDER), epoch); its held-out split is a numpy
                       generator seeded with the seed (holdout_rng).

config.train_seed = T >= 0 gives seed s's network theta_0 from s but every other
stream from the key of T + (s - config.seed) (paper Table 9's same-init pairs).
"""
import jax
import jax.numpy as jnp
import numpy as np

INIT, DATA_ORDER, AUGMENT, PRUNE, ABLATION, SPARSE_TRAINING = 0, 1, 2, 3, 4, 5
IRP_ROUND = 1000  # Round r of an IRP trains with fold_in(k, IRP_ROUND + r): far from the streams above.


def seed_key(seed):
  return jax.random.PRNGKey(int(seed))


def consecutive_keys(first, count):
  """[count] keys of seeds first, first + 1, ... (stacked: the vmapped seed axis)."""
  return jnp.stack([seed_key(first + i) for i in range(int(count))])


def seed_keys(config):
  """Keys that draw theta_0: seeds config.seed .. config.seed + num_seeds - 1."""
  return consecutive_keys(int(config.seed), int(config.num_seeds))


def run_keys(config):
  """Keys of everything after theta_0 (data order, augmentation, pruning, IRP rounds)."""
  train_seed = int(config.get("train_seed", -1))
  return seed_keys(config) if train_seed < 0 else consecutive_keys(train_seed, int(config.num_seeds))


def init_key(key):
  return jax.random.fold_in(key, INIT)


def epoch_key(key, epoch):
  return jax.random.fold_in(jax.random.fold_in(key, DATA_ORDER), epoch)


def augment_key(key, step):
  return jax.random.fold_in(jax.random.fold_in(key, AUGMENT), step)


def prune_stream(key):
  """The pruning stream of a network: host criteria (one-shot) score with this key."""
  return jax.random.fold_in(key, PRUNE)


def round_key(stream, round_index):
  """Round `round_index`'s key of a pruning stream."""
  return jax.random.fold_in(stream, round_index)


def prune_key(key, round_index=0):
  """The criterion's key in pruning round `round_index` (one-shot pruning is round 0)."""
  return round_key(prune_stream(key), round_index)


def g0_key(key):
  """g_0's batches: those of pruning round 0, for the IRP's datasets and the `autos` criterion."""
  return prune_key(key, 0)


def ablation_key(key):
  """The layer-wise shuffles and the re-drawn theta_0 of config.prune.ablation."""
  return jax.random.fold_in(key, ABLATION)


def sparse_training_key(key):
  """SET's regrowth stream of a network (masks that change while training)."""
  return jax.random.fold_in(key, SPARSE_TRAINING)


def irp_round_key(key, round_index):
  """The TrainState key of IRP round `round_index` (its data order and augmentation)."""
  return jax.random.fold_in(key, IRP_ROUND + round_index)


def scorer_key(seed):
  return seed_key(seed)


def holdout_rng(seed):
  """The numpy generator that draws the AutoS scorer's held-out weights."""
  return np.random.default_rng(int(seed))
