"""TFDS builders (array_record, no TensorFlow needed) for the image datasets.

They read the official raw files (from --raw_dir on offline hosts, else
downloaded) through `raw.py`, and write uint8 images + int labels. The stock
TFDS mnist/cifar builders need TensorFlow to encode images; these store plain
tensors, so `tfds.data_source` reads them back with numpy alone. The TFDS names
are prefixed `autosparse_` so they never collide with stock datasets in a
shared TFDS_DATA_DIR.
"""
import os
import urllib.request

import numpy as np
import tensorflow_datasets as tfds

from autosparse_jax.data import raw
from autosparse_jax.data.specs import SPECS

URLS = {
    "mnist": ["https://storage.googleapis.com/cvdf-datasets/mnist/" + n
              for n in sum(raw.MNIST_FILES.values(), ())],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"],
    "cifar100": ["https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"],
    "tiny_imagenet": ["http://cs231n.stanford.edu/tiny-imagenet-200.zip"],
}


def read_raw(name, raw_dir, log=print):
  """{split: (images, labels)} from the raw files of dataset `name` in raw_dir."""
  if name == "mnist":
    return raw.read_mnist(raw_dir)
  if name in ("cifar10", "cifar100"):
    return raw.read_cifar(raw_dir, name, log=log)
  if name == "tiny_imagenet":
    return raw.read_tiny_imagenet(raw_dir, log=log)
  raise KeyError(name)


def download_raw(name, download_dir, log=print):
  """Fetches the official raw files into download_dir (needs internet); returns the dir."""
  os.makedirs(download_dir, exist_ok=True)
  for url in URLS[name]:
    path = os.path.join(download_dir, os.path.basename(url))
    if not os.path.exists(path):
      log(f"downloading {url}")
      urllib.request.urlretrieve(url, path + ".part")
      os.replace(path + ".part", path)
  return download_dir


class QuietBuilder:
  """A TFDS builder that prints nothing itself (TFDS prints "Downloading and preparing dataset
  Unknown size ..." and "... downloaded and prepared to ..." although nothing is downloaded):
  the caller says in one line what was built."""

  def _log_download_bytes(self):
    pass

  def _log_download_done(self):
    pass


class _RawImageBuilder(QuietBuilder, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """One example per image: {'image': uint8 HxWxC, 'label': class id}."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Built by autosparse_jax from the official raw files."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = "python -m autosparse_jax.data.prepare NAME --raw_dir=DIR"
  DATASET = ""  # Key of data.specs.SPECS.

  def __init__(self, *, raw_dir=None, log=print, **kwargs):
    self._raw_dir = raw_dir
    self._log = log
    super().__init__(**kwargs)

  def _info(self):
    spec = SPECS[self.DATASET]
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{self.DATASET} as uint8 tensors, from the official raw files.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=spec.image_shape, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=spec.num_classes),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    raw_dir = self._raw_dir or download_raw(
        self.DATASET, os.path.join(str(dl_manager.download_dir), "autosparse_raw", self.DATASET),
        self._log)
    splits = read_raw(self.DATASET, raw_dir, self._log)
    return {split: self._generate_examples(*arrays) for split, arrays in splits.items()}

  def _generate_examples(self, images, labels):
    for i in range(len(images)):
      yield i, {"image": images[i], "label": int(labels[i])}


class AutosparseMnist(_RawImageBuilder, skip_registration=True):
  DATASET = "mnist"


class AutosparseCifar10(_RawImageBuilder, skip_registration=True):
  DATASET = "cifar10"


class AutosparseCifar100(_RawImageBuilder, skip_registration=True):
  DATASET = "cifar100"


class AutosparseTinyImagenet(_RawImageBuilder, skip_registration=True):
  DATASET = "tiny_imagenet"


BUILDERS = {b.DATASET: b for b in (AutosparseMnist, AutosparseCifar10, AutosparseCifar100,
                                   AutosparseTinyImagenet)}
