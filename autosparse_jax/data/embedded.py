"""Datasets that need no download: scikit-learn's digits, and synthetic data for tests."""
import numpy as np

from autosparse_jax.data.specs import DatasetSpec


def digits():
  """scikit-learn's bundled 1797 real 8x8 handwritten digits (UCI), as uint8 images.

  Pixel values 0..16 are scaled to 0..255. The split is fixed: a permutation
  from seed 0, 1437 train and 360 test images (80/20).
  """
  from sklearn.datasets import load_digits

  bunch = load_digits()
  images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = bunch.target.astype(np.int64)
  order = np.random.default_rng(0).permutation(len(images))
  train, test = order[:1437], order[1437:]
  x = images[train].astype(np.float64) / 255.0
  spec = DatasetSpec("digits", (8, 8, 1), 10, (float(x.mean()),), (float(x.std()),))
  return spec, {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def synthetic(image_shape=(8, 8, 1), num_classes=10, num_train=512, num_test=256, seed=0):
  """Random uint8 images labelled by a fixed random linear teacher (so they are learnable)."""
  rng = np.random.default_rng(seed)
  n = num_train + num_test
  images = rng.integers(0, 256, (n,) + tuple(image_shape), dtype=np.uint8)
  teacher = rng.standard_normal((int(np.prod(image_shape)), num_classes))
  centred = images.reshape(n, -1).astype(np.float64) / 255.0 - 0.5
  labels = np.argmax(centred @ teacher, axis=1).astype(np.int64)
  spec = DatasetSpec("synthetic", tuple(image_shape), num_classes, (0.5,) * image_shape[-1],
                     (0.29,) * image_shape[-1])
  return spec, {"train": (images[:num_train], labels[:num_train]),
                "test": (images[num_train:], labels[num_train:])}
