"""Dataset registry: `load_dataset(config)` -> Dataset with host (numpy) arrays."""
import dataclasses
import hashlib
import os
import shutil

import numpy as np

from autosparse_jax.data import embedded
from autosparse_jax.data.specs import DATASETS, SPECS, TFDS_DATASETS, DatasetSpec, resolve_data_dir
from autosparse_jax.errors import ConfigError, unknown_name_message
from autosparse_jax.programs import BoundedCache


class DatasetNotPreparedError(ConfigError):
  """The TFDS files of a dataset are not in the data dir; the message gives the command."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  spec: DatasetSpec
  train_images: np.ndarray  # uint8 [N, H, W, C]
  train_labels: np.ndarray  # int32 [N]
  test_images: np.ndarray
  test_labels: np.ndarray


def _from_splits(spec, splits):
  (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
  return Dataset(spec, np.asarray(xtr, np.uint8), np.asarray(ytr, np.int32),
                 np.asarray(xte, np.uint8), np.asarray(yte, np.int32))


def raw_files(name):
  """The official raw files the prepare command reads for dataset `name`, in words."""
  from autosparse_jax.data.raw import RAW_FILES
  return RAW_FILES.get(name, "the official raw files")


def prepare_command(name, data_dir):
  return f"python -m autosparse_jax.data.prepare {name} --raw_dir=/path/to/raw/{name} --data_dir={data_dir}"


def load_tfds_arrays(name, data_dir):
  """{split: (images, labels)} read back from the prepared array_record files."""
  from autosparse_jax.data.builders import BUILDERS

  builder = BUILDERS[name](data_dir=data_dir, file_format="array_record")
  if not os.path.exists(os.path.join(str(builder.data_dir), "dataset_info.json")):
    raise DatasetNotPreparedError(
        f"config.dataset={name!r} is not prepared in config.data.data_dir={data_dir!r}. "
        f"Build it from the official raw files with:\n  {prepare_command(name, data_dir)}\n"
        f"where --raw_dir holds {raw_files(name)} "
        "(on a host with internet, leave out --raw_dir to download them).")
  out = {}
  for split in ("train", "test"):
    missing = [str(p) for p in builder.info.splits[split].filepaths if not os.path.exists(str(p))]
    if missing:
      raise DatasetNotPreparedError(
          f"config.dataset={name!r} in config.data.data_dir={data_dir!r} is incomplete: its "
          f"{split} split lacks {len(missing)} shard file(s), e.g. {missing[0]}. Move "
          f"{builder.data_dir} aside (nothing here deletes it) and prepare it again:\n  "
          f"{prepare_command(name, data_dir)}")
    source = builder.as_data_source(split)
    try:
      rows = source.__getitems__(list(range(len(source))))
    except (RuntimeError, OSError, ValueError) as e:
      raise DatasetNotPreparedError(
          f"config.dataset={name!r} in config.data.data_dir={data_dir!r} cannot be read ({e}). "
          f"Move {builder.data_dir} aside and prepare it again:\n  {prepare_command(name, data_dir)}") from e
    out[split] = (np.stack([r["image"] for r in rows]), np.asarray([r["label"] for r in rows]))
  return out


# (name, data dir, files' sizes and mtimes) -> decoded splits, per process; one dataset at a time.
_DECODED = BoundedCache(1, "decoded datasets")
# Decoded arrays are also kept on disk next to the TFDS files (DIR/autosparse_NAME.decoded/KEY/),
# so later processes read a few .npy files instead of decoding every example again (MNIST:
# ~3 s of per-example decoding before each job). AUTOSPARSE_DECODED_CACHE=off turns it off.
DECODED_CACHE_ENV = "AUTOSPARSE_DECODED_CACHE"


def _files_state(directory):
  """Sizes and modification times of every file below `directory`: a changed file is a new key."""
  return tuple(sorted((os.path.join(root, f), st.st_size, st.st_mtime_ns)
                      for root, _, files in os.walk(directory) for f in files
                      for st in [os.stat(os.path.join(root, f))]))


def _decoded_dir(directory, name, key):
  if os.environ.get(DECODED_CACHE_ENV, "").lower() in ("off", "0", "false", "none"):
    return None
  digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
  return os.path.join(directory, f"autosparse_{name}.decoded", digest)


def _read_decoded(path):
  """{split: (images, labels)} from the on-disk cache, or None if absent or unreadable."""
  if path is None or not os.path.exists(os.path.join(path, "complete")):
    return None
  try:
    return {split: tuple(np.load(os.path.join(path, f"{split}_{part}.npy")) for part in ("images", "labels"))
            for split in ("train", "test")}
  except (OSError, ValueError):
    return None  # Damaged: decode the TFDS files again (and rewrite it).


def _write_decoded(path, splits):
  """Writes the cache atomically (a temporary directory renamed into place); best effort."""
  if path is None:
    return
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    os.makedirs(tmp, exist_ok=True)
    for split, (images, labels) in splits.items():
      np.save(os.path.join(tmp, f"{split}_images.npy"), images)
      np.save(os.path.join(tmp, f"{split}_labels.npy"), labels)
    open(os.path.join(tmp, "complete"), "w").close()
    parent = os.path.dirname(path)
    for old in os.listdir(parent):  # Copies of earlier files (re-prepared) or an unreadable one.
      if old != os.path.basename(tmp) and ".tmp" not in old:
        shutil.rmtree(os.path.join(parent, old), ignore_errors=True)
    os.replace(tmp, path)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)  # A read-only data dir: keep decoding per process.


def load_dataset(name, data_dir=None, synthetic_kwargs=None):
  """Loads a registered dataset into host memory.

  A TFDS dataset is decoded once: per process (jobs of a pipeline, a sweep's
  criteria and the tests load the same set many times) and on disk next to its
  files (_write_decoded); the arrays are read-only, and a re-prepared or damaged
  file changes the key, so it is decoded again.
  """
  if name not in DATASETS:
    raise ConfigError(unknown_name_message("config.dataset", name, DATASETS))
  if name == "digits":
    return _from_splits(*embedded.digits())
  if name == "synthetic":
    return _from_splits(*embedded.synthetic(**dict(synthetic_kwargs or {})))
  directory = resolve_data_dir(data_dir)
  key = (name, directory, _files_state(os.path.join(directory, f"autosparse_{name}")))  # The builders' names.
  def decode():
    cache = _decoded_dir(directory, name, key)
    splits = _read_decoded(cache)
    if splits is None:
      splits = load_tfds_arrays(name, directory)
      _write_decoded(cache, splits)
    for arrays in splits.values():
      for a in arrays:
        a.setflags(write=False)
    return splits

  if key not in _DECODED:
    _DECODED.clear()  # Free the last dataset's memory before decoding this one.
  return _from_splits(SPECS[name], _DECODED.get(key, decode))


__all__ = ["Dataset", "DatasetNotPreparedError", "DatasetSpec", "load_dataset", "TFDS_DATASETS"]
