"""Builds a dataset's TFDS files from the official raw files.

Offline host (files copied by hand):
  python -m autosparse_jax.data.prepare mnist --raw_dir=/path/to/mnist --data_dir=~/tensorflow_datasets
Host with internet (downloads the raw files first):
  python -m autosparse_jax.data.prepare cifar10 --data_dir=~/tensorflow_datasets

Names: mnist, cifar10, cifar100, tiny_imagenet. Raw files are checked against the
sha256 that TFDS records where one exists (MNIST files, CIFAR tarballs).
"""
import sys

from absl import app, flags, logging

from autosparse_jax.data import builders, raw
from autosparse_jax.data.specs import TFDS_DATASETS, resolve_data_dir
from autosparse_jax.errors import ConfigError, unknown_name_message

FLAGS = flags.FLAGS
flags.DEFINE_string("raw_dir", None, "Directory holding the official raw files (offline hosts).")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).")


def prepare(name, data_dir=None, raw_dir=None, log=print):
  """Builds `name` into data_dir; returns the prepared dataset's directory. Says one line per split
  (no TFDS progress bars or banners)."""
  import tensorflow_datasets as tfds
  if name not in builders.BUILDERS:
    raise ConfigError(unknown_name_message("dataset", name, TFDS_DATASETS))
  builder = builders.BUILDERS[name](data_dir=resolve_data_dir(data_dir), raw_dir=raw_dir,
                                    log=log, file_format="array_record")
  tfds.display_progress_bar(False)
  builder.download_and_prepare()
  for split, info in builder.info.splits.items():
    log(f"{name} {split}: {info.num_examples} examples in {builder.data_dir}")
  return str(builder.data_dir)


def main(argv):
  if not FLAGS["verbosity"].present:  # TFDS's absl INFO lines ("Generating dataset ...") are not ours.
    logging.set_verbosity(logging.WARNING)
  if len(argv) != 2:
    sys.exit(f"usage: python -m autosparse_jax.data.prepare NAME --raw_dir=DIR --data_dir=DIR "
             f"(NAME: {', '.join(TFDS_DATASETS)})")
  try:
    prepare(argv[1], FLAGS.data_dir, FLAGS.raw_dir)
  except (raw.RawDataError, ValueError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
