"""Readers of the official raw dataset files, with integrity checks.

Pure numpy: these are what the TFDS builders call, whether the files were just
downloaded or copied by hand onto an offline host. Every failure names the file
and what was expected.
"""
import gzip
import hashlib
import importlib.resources
import io
import os
import tarfile
import zipfile

import numpy as np


class RawDataError(ValueError):
  """A raw file is missing, corrupted, truncated or of the wrong format."""


def recorded_checksums(tfds_name):
  """{file name: (size, sha256)} that tensorflow-datasets records for its own `tfds_name` ({} without
  tensorflow-datasets: the readers are pure numpy, e.g. in benchmarks/reference_scores.py's torch venv)."""
  try:
    text = importlib.resources.files("tensorflow_datasets").joinpath(
        "url_checksums", f"{tfds_name}.txt").read_text()
  except (FileNotFoundError, ModuleNotFoundError):
    return {}
  out = {}
  for line in text.splitlines():
    parts = line.split("\t")
    if len(parts) >= 3:
      name = parts[3] if len(parts) > 3 else os.path.basename(parts[0])
      out[name] = (int(parts[1]), parts[2])
  return out


def sha256_of(path, chunk=1 << 20):
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk), b""):
      digest.update(block)
  return digest.hexdigest()


def verify_file(path, size, sha256):
  """Raises RawDataError unless `path` has the recorded size and sha256."""
  if not os.path.isfile(path):
    raise RawDataError(f"{path}: file not found (expected {size} bytes, sha256 {sha256}).")
  actual = os.path.getsize(path)
  if actual != size:
    what = "truncated" if actual < size else "too long"
    raise RawDataError(f"{path}: {actual} bytes, expected {size} ({what}); "
                       "download or copy the file again.")
  digest = sha256_of(path)
  if digest != sha256:
    raise RawDataError(f"{path}: sha256 {digest} does not match the recorded {sha256} "
                       "(the file is corrupted or not the official one).")


# The raw files --raw_dir must hold for each dataset (the error of an unprepared dataset lists them).
RAW_FILES = {
    "mnist": "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
             "t10k-labels-idx1-ubyte.gz",
    "cifar10": "cifar-10-binary.tar.gz (or its folder cifar-10-batches-bin/ with data_batch_1.bin ... "
               "data_batch_5.bin and test_batch.bin)",
    "cifar100": "cifar-100-binary.tar.gz (or its folder cifar-100-binary/ with train.bin and test.bin)",
    "tiny_imagenet": "tiny-imagenet-200.zip (or its folder tiny-imagenet-200/ with wnids.txt, train/ and val/)",
}


def find_file(raw_dir, names):
  """First of `names` present in raw_dir (or None)."""
  for name in names:
    path = os.path.join(raw_dir, name)
    if os.path.exists(path):
      return path
  return None


# ---------------------------------------------------------------- MNIST (idx)

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _gunzip(path):
  try:
    with gzip.open(path, "rb") as f:
      return f.read()
  except (OSError, EOFError) as e:
    raise RawDataError(f"{path}: not a complete gzip file ({e}).") from None


def parse_idx(data, path, magic, ndim):
  """Array from an idx file's bytes; checks magic number and length."""
  if len(data) < 4 + 4 * ndim:
    raise RawDataError(f"{path}: {len(data)} bytes is too short for an idx header.")
  got_magic = int.from_bytes(data[:4], "big")
  if got_magic != magic:
    raise RawDataError(f"{path}: idx magic number {got_magic}, expected {magic}.")
  dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
  header = 4 + 4 * ndim
  expected = header + int(np.prod(dims))
  if len(data) != expected:
    raise RawDataError(f"{path}: {len(data)} bytes after decompression, expected {expected} "
                       f"for shape {tuple(dims)} (truncated file?).")
  return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_mnist(raw_dir, verify=True):
  """{'train': (images uint8 [N,28,28,1], labels int64), 'test': ...} from the 4 .gz files."""
  checksums = recorded_checksums("mnist")
  out = {}
  for split, (img_name, lbl_name) in MNIST_FILES.items():
    paths = [os.path.join(raw_dir, n) for n in (img_name, lbl_name)]
    for path in paths:
      if not os.path.isfile(path):
        raise RawDataError(f"{path}: file not found. --raw_dir must hold the four official MNIST "
                           f"files: {', '.join(sum(MNIST_FILES.values(), ()))}.")
      name = os.path.basename(path)
      if verify and name in checksums:
        verify_file(path, *checksums[name])
    images = parse_idx(_gunzip(paths[0]), paths[0], 2051, 3)
    labels = parse_idx(_gunzip(paths[1]), paths[1], 2049, 1)
    if len(images) != len(labels):
      raise RawDataError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels.")
    out[split] = (images[..., None], labels.astype(np.int64))
  return out


# ------------------------------------------------- CIFAR-10/100 (binary version)

CIFAR_RECORD = {"cifar10": 1 + 3072, "cifar100": 2 + 3072}
CIFAR_ARCHIVES = {"cifar10": ("cifar-10-binary.tar.gz", "cifar-10-batches-bin"),
                  "cifar100": ("cifar-100-binary.tar.gz", "cifar-100-binary")}
CIFAR_SPLIT_FILES = {
    "cifar10": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
    "cifar100": {"train": ["train.bin"], "test": ["test.bin"]},
}


def parse_cifar_records(data, path, name):
  """(images [N,32,32,3] uint8, labels) from CIFAR binary records (fine labels for CIFAR-100)."""
  record = CIFAR_RECORD[name]
  if len(data) == 0 or len(data) % record:
    raise RawDataError(f"{path}: {len(data)} bytes is not a positive multiple of the {record}-byte "
                       f"{name} record (truncated or wrong file?).")
  rows = np.frombuffer(data, np.uint8).reshape(-1, record)
  labels = rows[:, record - 3073].astype(np.int64)  # CIFAR-100: [coarse, fine, pixels].
  num_classes = 10 if name == "cifar10" else 100
  if labels.max() >= num_classes:
    raise RawDataError(f"{path}: label {labels.max()} >= {num_classes}: not a {name} file.")
  images = rows[:, record - 3072:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels


def read_cifar(raw_dir, name, verify=True, log=print):
  """CIFAR-10/100 from the official binary tarball, or from its extracted .bin files.

  The tarball is checked against the sha256 TFDS records. Extracted files have no
  recorded checksum; they are checked for record size and label range, and a
  partial set (e.g. only data_batch_1.bin) is accepted with a note.
  """
  archive, folder = CIFAR_ARCHIVES[name]
  files = CIFAR_SPLIT_FILES[name]
  tar_path = os.path.join(raw_dir, archive)
  contents = {}
  if os.path.isfile(tar_path):
    recorded = recorded_checksums(name)
    if verify and archive in recorded:
      verify_file(tar_path, *recorded[archive])
    with tarfile.open(tar_path, "r:gz") as tar:
      for member in tar.getmembers():
        base = os.path.basename(member.name)
        if any(base in fs for fs in files.values()):
          contents[base] = (f"{tar_path}:{member.name}", tar.extractfile(member).read())
  else:
    where = find_file(raw_dir, [folder]) or raw_dir
    for base in sum(files.values(), []):
      path = os.path.join(where, base)
      if os.path.isfile(path):
        with open(path, "rb") as f:
          contents[base] = (path, f.read())
  out = {}
  for split, names in files.items():
    present = [n for n in names if n in contents]
    if not present:
      raise RawDataError(f"{name} {split} split: none of {', '.join(names)} found in {raw_dir} "
                         f"(expected {archive}, its folder {folder}/, or the .bin files).")
    parts = [parse_cifar_records(contents[n][1], contents[n][0], name) for n in present]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if len(present) < len(names):
      log(f"{name} {split}: found {', '.join(present)} ({len(images)} records); the full set has "
          f"{', '.join(names)}. Preparing the partial set.")
    out[split] = (images, labels)
  return out


# ------------------------------------------------------- Tiny-ImageNet (JPEGs)

def read_tiny_imagenet(raw_dir, log=print):
  """Tiny-ImageNet-200 from tiny-imagenet-200.zip or its extracted folder.

  train/<wnid>/images/*.JPEG and val/images/*.JPEG with val/val_annotations.txt;
  the official test split has no labels, so `test` here is the validation split.
  """
  from PIL import Image  # Only this dataset needs JPEG decoding.

  zip_path = os.path.join(raw_dir, "tiny-imagenet-200.zip")
  if os.path.isfile(zip_path):
    try:
      archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
      raise RawDataError(f"{zip_path}: not a complete zip file ({e}).") from None
    names = {n.split("tiny-imagenet-200/", 1)[-1]: n for n in archive.namelist()}
    read = lambda rel: archive.read(names[rel])
    exists = lambda rel: rel in names
    listing = list(names)
  else:
    root = find_file(raw_dir, ["tiny-imagenet-200"]) or raw_dir
    read = lambda rel: open(os.path.join(root, rel), "rb").read()
    exists = lambda rel: os.path.isfile(os.path.join(root, rel))
    listing = [os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
               for d, _, fs in os.walk(root) for f in fs]
  if not exists("wnids.txt"):
    raise RawDataError(f"{raw_dir}: no tiny-imagenet-200.zip, and no wnids.txt in "
                       "tiny-imagenet-200/ or in the folder itself.")
  wnids = read("wnids.txt").decode().split()
  index = {w: i for i, w in enumerate(wnids)}

  def decode(rel):
    try:
      img = Image.open(io.BytesIO(read(rel))).convert("RGB")
    except Exception as e:  # PIL raises several types for bad files.
      raise RawDataError(f"{rel}: cannot decode image ({e}).") from None
    if img.size != (64, 64):
      raise RawDataError(f"{rel}: image is {img.size}, expected (64, 64).")
    return np.asarray(img, np.uint8)

  train = sorted(p for p in listing if p.startswith("train/") and p.endswith(".JPEG"))
  if not train:
    raise RawDataError(f"{raw_dir}: no train/<wnid>/images/*.JPEG files found.")
  train_labels = [index[p.split("/")[1]] for p in train]
  if not exists("val/val_annotations.txt"):
    raise RawDataError(f"{raw_dir}: val/val_annotations.txt is missing.")
  val = []
  for line in read("val/val_annotations.txt").decode().splitlines():
    parts = line.split("\t")
    if len(parts) >= 2:
      val.append((f"val/images/{parts[0]}", index[parts[1]]))
  log(f"tiny_imagenet: {len(train)} train and {len(val)} validation images in {len(wnids)} classes.")
  return {
      "train": (np.stack([decode(p) for p in train]), np.asarray(train_labels, np.int64)),
      "test": (np.stack([decode(p) for p, _ in val]), np.asarray([l for _, l in val], np.int64)),
  }
