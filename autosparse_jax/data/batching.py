"""On-device batching, normalisation and augmentation (all inside the jitted step).

The order of epoch e is a permutation drawn from keys.epoch_key(seed key, e), so any step's
batch is a function of (seed, step): a run resumed mid-epoch sees the same
batches. The last partial batch of an epoch is dropped (`steps_per_epoch`).
"""
import jax
import jax.numpy as jnp
import numpy as np


def steps_per_epoch(num_examples, batch_size):
  steps = num_examples // batch_size
  if steps < 1:
    raise ValueError(f"config.train.batch_size={batch_size} is larger than the training set "
                     f"({num_examples} examples): use a batch size <= {num_examples}.")
  return steps


def batch_indices(perm, batch_index, batch_size):
  return jax.lax.dynamic_slice_in_dim(perm, batch_index * batch_size, batch_size)


def standardize(x, spec):
  """[0, 1] images -> per-channel zero mean, unit variance."""
  return (x - jnp.asarray(spec.mean, jnp.float32)) / jnp.asarray(spec.std, jnp.float32)


def normalize(images_uint8, spec):
  return standardize(images_uint8.astype(jnp.float32) / 255.0, spec)


def random_crop_flip(key, images, padding):
  """Per-image random crop after zero padding, and random horizontal flip (float images)."""
  n, h, w, _ = images.shape
  crop_key, flip_key = jax.random.split(key)
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * padding + 1)
  crop = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))
  cropped = jax.vmap(crop)(padded, offsets)
  flip = jax.random.bernoulli(flip_key, 0.5, (n, 1, 1, 1))
  return jnp.where(flip, cropped[:, :, ::-1], cropped)


def train_batch(spec, images, labels, perm, batch_index, batch_size, aug_key):
  """The preprocessed batch `batch_index` of the epoch ordered by `perm`."""
  idx = batch_indices(perm, batch_index, batch_size)
  x = images[idx].astype(jnp.float32) / 255.0
  if spec.augment:
    # Pad with black pixels before normalising, as torchvision's RandomCrop(padding=4).
    x = random_crop_flip(aug_key, x, spec.crop_padding)
  return standardize(x, spec), labels[idx]


def eval_batches(images, labels, batch_size):
  """Host arrays padded to whole batches: (images [B, b, ...], labels [B, b], valid [B, b])."""
  n = len(images)
  batch_size = min(batch_size, n)
  num = -(-n // batch_size)
  pad = num * batch_size - n
  images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  valid = np.arange(num * batch_size) < n
  labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
  shape = (num, batch_size)
  return images.reshape(shape + images.shape[1:]), labels.reshape(shape), valid.reshape(shape)
