"""Data: offline TFDS preparation from real raw files, integrity checks, batching, augmentation."""
import gzip
import io
import os
import shutil
import subprocess
import sys
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autosparse_jax import keys
from autosparse_jax.data import DatasetNotPreparedError, batching, load_dataset, raw
from autosparse_jax.data.prepare import prepare
from autosparse_jax.data.specs import SPECS
from tests.conftest import REPO, shared_raw_dir


def test_mnist_prepares_from_raw_files_and_loads_completely(prepared_data_dir):
  data = load_dataset("mnist", prepared_data_dir("mnist"))
  assert data.train_images.shape == (60000, 28, 28, 1) and data.test_images.shape == (10000, 28, 28, 1)
  # Independent read of the official files: same multiset of labels, same pixel sum.
  with gzip.open(os.path.join(shared_raw_dir("mnist"), "train-labels-idx1-ubyte.gz")) as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)
  np.testing.assert_array_equal(np.bincount(data.train_labels), np.bincount(labels))
  with gzip.open(os.path.join(shared_raw_dir("mnist"), "t10k-images-idx3-ubyte.gz")) as f:
    pixels = np.frombuffer(f.read(), np.uint8, offset=16)
  assert int(data.test_images.astype(np.int64).sum()) == int(pixels.astype(np.int64).sum())


def test_cifar10_subset_channel_means(prepared_data_dir):
  data = load_dataset("cifar10", prepared_data_dir("cifar10"))
  assert data.train_images.shape == (2000, 32, 32, 3) and data.test_images.shape == (1000, 32, 32, 3)
  means = data.train_images.reshape(-1, 3).mean(axis=0)
  np.testing.assert_allclose(means, (125.3, 123.3, 113.9), atol=0.5)


def _copy_mnist(tmp_path):
  src = shared_raw_dir("mnist")
  dst = tmp_path / "mnist"
  shutil.copytree(src, dst)
  return dst


def test_truncated_raw_file_is_rejected_naming_it(tmp_path):
  raw_dir = _copy_mnist(tmp_path)
  path = raw_dir / "train-labels-idx1-ubyte.gz"
  path.write_bytes(path.read_bytes()[:1000])
  with pytest.raises(raw.RawDataError, match=r"train-labels-idx1-ubyte\.gz: 1000 bytes, expected 28881 \(truncated\)"):
    raw.read_mnist(str(raw_dir))


def test_corrupted_raw_file_is_rejected_by_sha256(tmp_path):
  raw_dir = _copy_mnist(tmp_path)
  path = raw_dir / "t10k-labels-idx1-ubyte.gz"
  data = bytearray(path.read_bytes())
  data[-20] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(raw.RawDataError, match=r"t10k-labels-idx1-ubyte\.gz: sha256 .* does not match "
                     r"the recorded f7ae60f92e00"):
    raw.read_mnist(str(raw_dir))


def test_bad_cifar_bin_is_rejected_naming_it(tmp_path):
  src = shared_raw_dir("cifar10-subset")
  for name in ("data_batch_1.bin", "test_batch.bin"):
    shutil.copy(os.path.join(src, name), tmp_path / name)
  path = tmp_path / "data_batch_1.bin"
  path.write_bytes(path.read_bytes()[:3073 * 5 + 100])
  with pytest.raises(raw.RawDataError, match=r"data_batch_1\.bin: 15465 bytes is not a positive multiple"):
    raw.read_cifar(str(tmp_path), "cifar10")


def test_prepare_cli_reports_bad_file_without_traceback(tmp_path):
  raw_dir = _copy_mnist(tmp_path)
  (raw_dir / "train-images-idx3-ubyte.gz").write_bytes(b"not mnist")
  proc = subprocess.run([sys.executable, "-m", "autosparse_jax.data.prepare", "mnist",
                         f"--raw_dir={raw_dir}", f"--data_dir={tmp_path / 'tfds'}"],
                        capture_output=True, text=True, cwd=REPO, timeout=120)
  assert proc.returncode != 0
  assert "train-images-idx3-ubyte.gz: 9 bytes, expected 9912422" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_unprepared_dataset_error_gives_the_prepare_command(tmp_path):
  with pytest.raises(DatasetNotPreparedError) as err:
    load_dataset("cifar10", str(tmp_path))
  assert "python -m autosparse_jax.data.prepare cifar10 --raw_dir=" in str(err.value)
  assert f"--data_dir={tmp_path}" in str(err.value)
  assert "--raw_dir holds cifar-10-binary.tar.gz (or its folder cifar-10-batches-bin/ with data_batch_1.bin" in str(
      err.value)
  with pytest.raises(DatasetNotPreparedError, match="train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                     "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz"):
    load_dataset("mnist", str(tmp_path))


def _cifar100_records(n, rng):
  coarse = rng.integers(0, 20, n, dtype=np.uint8)
  fine = rng.integers(0, 100, n, dtype=np.uint8)
  pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
  return np.concatenate([coarse[:, None], fine[:, None], pixels], axis=1), fine, pixels


def test_cifar100_official_tarball_layout_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  raw_dir = tmp_path / "raw"
  raw_dir.mkdir()
  expected = {}
  with tarfile.open(raw_dir / "cifar-100-binary.tar.gz", "w:gz") as tar:
    for split, n in (("train", 30), ("test", 10)):
      records, fine, pixels = _cifar100_records(n, rng)
      info = tarfile.TarInfo(f"cifar-100-binary/{split}.bin")
      info.size = records.nbytes
      tar.addfile(info, io.BytesIO(records.tobytes()))
      expected[split] = (pixels.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1), fine)
  # This tarball is not the official file, so its recorded sha256 check is switched off.
  with pytest.raises(raw.RawDataError, match=r"cifar-100-binary\.tar\.gz: \d+ bytes, expected 168513733"):
    raw.read_cifar(str(raw_dir), "cifar100")
  splits = raw.read_cifar(str(raw_dir), "cifar100", verify=False)
  for split, (images, labels) in expected.items():
    np.testing.assert_array_equal(splits[split][0], images)
    np.testing.assert_array_equal(splits[split][1], labels)


def test_cifar100_extracted_files_prepare_and_load_exactly(tmp_path, capfd):
  rng = np.random.default_rng(1)
  raw_dir = tmp_path / "cifar-100-binary"
  raw_dir.mkdir()
  expected = {}
  for split, n in (("train", 24), ("test", 8)):
    records, fine, pixels = _cifar100_records(n, rng)
    (raw_dir / f"{split}.bin").write_bytes(records.tobytes())
    expected[split] = (pixels.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1), fine)
  data_dir = str(tmp_path / "tfds")
  said = []
  prepare("cifar100", data_dir=data_dir, raw_dir=str(raw_dir), log=said.append)
  assert [line.split(" examples")[0] for line in said] == ["cifar100 train: 24", "cifar100 test: 8"]
  printed = capfd.readouterr()
  assert "Downloading" not in printed.out + printed.err and "Generating" not in printed.out + printed.err
  data = load_dataset("cifar100", data_dir)
  for images, labels, (want_x, want_y) in ((data.train_images, data.train_labels, expected["train"]),
                                           (data.test_images, data.test_labels, expected["test"])):
    # TFDS shuffles example order on write: compare as sorted sets of (label, bytes).
    got = sorted((int(l), x.tobytes()) for x, l in zip(images, labels))
    want = sorted((int(l), x.tobytes()) for x, l in zip(want_x, want_y))
    assert got == want


def test_tiny_imagenet_official_layout_prepares(tmp_path):
  from PIL import Image

  root = tmp_path / "tiny-imagenet-200"
  wnids = ["n01443537", "n01629819", "n01641577"]
  (root / "val" / "images").mkdir(parents=True)
  (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
  colors = {}
  for c, wnid in enumerate(wnids):
    (root / "train" / wnid / "images").mkdir(parents=True)
    for i in range(2):
      # Flat colours survive JPEG compression almost exactly.
      colour = np.full((64, 64, 3), 40 + 80 * c, np.uint8)
      Image.fromarray(colour).save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
    colors[c] = 40 + 80 * c
  lines = []
  for i, c in enumerate([0, 2]):
    Image.fromarray(np.full((64, 64), colors[c], np.uint8)).save(root / "val" / "images" / f"val_{i}.JPEG")
    lines.append(f"val_{i}.JPEG\t{wnids[c]}\t0\t0\t64\t64")
  (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
  data_dir = str(tmp_path / "tfds")
  prepare("tiny_imagenet", data_dir=data_dir, raw_dir=str(tmp_path), log=lambda *_: None)
  data = load_dataset("tiny_imagenet", data_dir)
  assert data.train_images.shape == (6, 64, 64, 3) and data.test_images.shape == (2, 64, 64, 3)
  for images, labels in ((data.train_images, data.train_labels), (data.test_images, data.test_labels)):
    for x, l in zip(images, labels):
      assert abs(float(x.mean()) - colors[int(l)]) < 2  # Grayscale val images were made RGB.


def test_digits_is_embedded_and_real():
  data = load_dataset("digits")
  assert data.train_images.shape == (1437, 8, 8, 1) and data.test_images.shape == (360, 8, 8, 1)
  assert set(np.unique(data.train_labels)) == set(range(10))


def test_epoch_order_is_a_function_of_seed_and_epoch():
  key = jax.random.PRNGKey(3)
  order = lambda epoch: jax.random.permutation(keys.epoch_key(key, epoch), 100)  # As train_steps draws it.
  a = order(5)
  assert np.array_equal(a, order(5))
  assert not np.array_equal(a, order(6))
  assert sorted(np.asarray(a).tolist()) == list(range(100))


def test_random_crop_flip_is_a_crop_of_the_padded_image():
  rng = np.random.default_rng(0)
  images = rng.random((16, 6, 6, 2)).astype(np.float32)
  out = np.asarray(batching.random_crop_flip(jax.random.PRNGKey(0), jnp.asarray(images), 2))
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  flips = 0
  for img, got in zip(padded, out):
    candidates = [(img[i:i + 6, j:j + 6], f) for i in range(5) for j in range(5) for f in (0, 1)]
    matches = [f for c, f in candidates if np.array_equal(c[:, ::-1] if f else c, got)]
    assert matches, "augmented image is no crop/flip of the padded original"
    flips += min(matches)
  assert 0 < flips < 16  # Both flipped and unflipped images occur.


def test_spec_normalisation_matches_reference():
  assert SPECS["mnist"].mean == (0.1307,) and SPECS["mnist"].std == (0.3081,)
  assert SPECS["cifar10"].augment and not SPECS["mnist"].augment


def test_decoded_arrays_are_cached_next_to_the_tfds_files(tmp_path, monkeypatch):
  import autosparse_jax.data as data_lib
  rng = np.random.default_rng(2)
  raw_dir = tmp_path / "cifar-100-binary"
  raw_dir.mkdir()
  for split, n in (("train", 12), ("test", 4)):
    records, _, _ = _cifar100_records(n, rng)
    (raw_dir / f"{split}.bin").write_bytes(records.tobytes())
  data_dir = str(tmp_path / "tfds")
  prepare("cifar100", data_dir=data_dir, raw_dir=str(raw_dir), log=lambda *_: None)
  first = load_dataset("cifar100", data_dir)  # Decodes the TFDS files and writes the cache.
  cache = tmp_path / "tfds" / "autosparse_cifar100.decoded"
  (entry,) = os.listdir(cache)
  data_lib._DECODED.clear()  # A new process: nothing decoded in memory.
  monkeypatch.setattr(data_lib, "load_tfds_arrays", lambda *a: pytest.fail("decoded the TFDS files again"))
  second = load_dataset("cifar100", data_dir)
  for a, b in zip((first.train_images, first.train_labels, first.test_images, first.test_labels),
                  (second.train_images, second.train_labels, second.test_images, second.test_labels)):
    np.testing.assert_array_equal(a, b)
  # A damaged cache file is not trusted: the TFDS files are decoded again and the cache rewritten.
  monkeypatch.undo()
  (cache / entry / "train_images.npy").write_bytes(b"garbage")
  data_lib._DECODED.clear()
  third = load_dataset("cifar100", data_dir)
  np.testing.assert_array_equal(third.train_images, first.train_images)
  assert np.load(cache / entry / "train_images.npy").shape == first.train_images.shape
