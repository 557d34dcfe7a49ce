"""What each dataset is: shapes, classes, normalisation, augmentation, where it lives."""
import dataclasses
import os
from typing import Tuple

TFDS_DATASETS = ("mnist", "cifar10", "cifar100", "tiny_imagenet")
EMBEDDED_DATASETS = ("digits", "synthetic")
DATASETS = TFDS_DATASETS + EMBEDDED_DATASETS


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str
  image_shape: Tuple[int, int, int]
  num_classes: int
  mean: Tuple[float, ...]  # On the [0, 1] scale, per channel.
  std: Tuple[float, ...]
  augment: bool = False  # Random crop (4-pixel zero padding) + horizontal flip.
  crop_padding: int = 4


SPECS = {
    "mnist": DatasetSpec("mnist", (28, 28, 1), 10, (0.1307,), (0.3081,)),
    "cifar10": DatasetSpec("cifar10", (32, 32, 3), 10, (0.491, 0.482, 0.447),
                           (0.247, 0.243, 0.262), augment=True),
    "cifar100": DatasetSpec("cifar100", (32, 32, 3), 100, (0.507, 0.487, 0.441),
                            (0.267, 0.256, 0.276), augment=True),
    # The customary Tiny-ImageNet statistics (ImageNet-like).
    "tiny_imagenet": DatasetSpec("tiny_imagenet", (64, 64, 3), 200, (0.480, 0.448, 0.398),
                                 (0.277, 0.269, 0.282), augment=True),
}


def default_data_dir():
  """$TFDS_DATA_DIR, else TFDS's own default (~/tensorflow_datasets)."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def resolve_data_dir(data_dir):
  return os.path.abspath(os.path.expanduser(data_dir)) if data_dir else default_data_dir()
