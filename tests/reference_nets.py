"""The fixed networks, weights and random draws of the reference fixtures (tests/reference/).

Pure numpy, imported by both sides:
  * benchmarks/reference_scores.py (the generator, in a torch virtualenv without JAX) builds
    the authors' PyTorch networks from these weights and runs their scoring code;
  * tests/test_reference_parity.py (CI, no torch) builds the same networks in Flax from the
    same weights and runs our criteria.
Weights and random draws are regenerated from seeds rather than stored (the fixtures stay
small); every fixture records the sha256 of what it was made from, and the tests refuse to
compare when numpy regenerates something else.

Layouts: everything here is in PyTorch layout (Linear [out, in], Conv2d [O, I, kh, kw], images
NCHW); `to_flax_kernel` converts a weight or a score array to the Flax layout.
"""
import hashlib
import json

import numpy as np

# The two networks of the fixtures, in PyTorch terms. Names avoid 'bn' and 'fc' except on the
# BatchNorm layers and the classifier: the PX authors keep parameters whose name contains them.
NETS = {
    # LeNet-300-100 on MNIST (the project's own lenet_300_100: Dense 784-300-100-10, ReLU, biases).
    "lenet": {
        "dataset": "mnist",
        "layers": [("lin1", "linear", (300, 784)), ("lin2", "linear", (100, 300)), ("fc", "linear", (10, 100))],
        "flax": {"lin1": "Dense_0", "lin2": "Dense_1", "fc": "Dense_2"},
    },
    # A small conv net with BatchNorm on the CIFAR-10 subset: 3 x (conv3x3 -> BN -> ReLU -> 2x2 max-pool),
    # global average pool, Linear(64, 10). (Without the last max-pool, a train-mode BN followed by the
    # average pool would make PX's path kernel on its all-ones input independent of the conv weights.)
    "conv": {
        "dataset": "cifar10",
        "layers": [("conv1", "conv", (16, 3, 3, 3)), ("bn1", "bn", (16,)),
                   ("conv2", "conv", (32, 16, 3, 3)), ("bn2", "bn", (32,)),
                   ("conv3", "conv", (64, 32, 3, 3)), ("bn3", "bn", (64,)),
                   ("fc", "linear", (10, 64))],
        "flax": {"conv1": "conv1", "bn1": "bn1", "conv2": "conv2", "bn2": "bn2", "conv3": "conv3",
                 "bn3": "bn3", "fc": "fc"},
    },
}
WEIGHT_SEED = 20250925
# Inputs: the first PER_CLASS[net] training images of each class in data order (tests/reference/inputs.npz).
PER_CLASS = {"lenet": 10, "conv": 4}
MEAN_STD = {"mnist": ((0.1307,), (0.3081,)),
            "cifar10": ((0.491, 0.482, 0.447), (0.247, 0.243, 0.262))}  # autosparse_jax.data.specs.


def prunable(net):
  """[(name, shape)] of the prunable weights (Linear and Conv2d), in forward order."""
  return [(n, s) for n, kind, s in NETS[net]["layers"] if kind in ("linear", "conv")]


def _rng(*key):
  return np.random.default_rng([abs(int(k)) for k in key])


def theta0(net, seed=WEIGHT_SEED, fresh=False):
  """{torch state_dict key: float32 array} of the fixed network.

  Kaiming-normal (fan_in) weights, small random biases; BatchNorm with random affine
  parameters and running statistics (so eval-mode BN is not an identity). fresh=True gives
  what a model's own initialiser draws (the NTK-SAP re-draws): Kaiming weights, zero biases,
  BN weight 1, bias 0, running mean 0 / var 1.
  """
  out = {}
  for i, (name, kind, shape) in enumerate(NETS[net]["layers"]):
    rng = _rng(seed, i)
    if kind in ("linear", "conv"):
      fan_in = int(np.prod(shape[1:]))
      out[f"{name}.weight"] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
      out[f"{name}.bias"] = (np.zeros(shape[0]) if fresh else 0.05 * rng.standard_normal(shape[0])).astype(np.float32)
    else:
      c = shape[0]
      if fresh:
        out[f"{name}.weight"], out[f"{name}.bias"] = np.ones(c, np.float32), np.zeros(c, np.float32)
        out[f"{name}.running_mean"], out[f"{name}.running_var"] = np.zeros(c, np.float32), np.ones(c, np.float32)
      else:
        out[f"{name}.weight"] = (1.0 + 0.2 * rng.standard_normal(c)).astype(np.float32)
        out[f"{name}.bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        out[f"{name}.running_mean"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        out[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
  return out


def normal_draw(seed, counter, shape):
  """float32 N(0, 1) of `shape`: the counter-th draw of a seeded stream (NTK-SAP's torch.randn_like)."""
  return _rng(seed, counter).standard_normal(tuple(shape)).astype(np.float32)


def sha256(arrays):
  """sha256 of a dict (sorted keys) or list of arrays: dtype, shape and bytes."""
  digest = hashlib.sha256()
  items = sorted(arrays.items()) if isinstance(arrays, dict) else enumerate(arrays)
  for key, a in items:
    a = np.ascontiguousarray(a)
    digest.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
    digest.update(a.tobytes())
  return digest.hexdigest()


def to_flax_kernel(a):
  """A Linear [out, in] or Conv2d [O, I, kh, kw] array (weights or their scores) in Flax layout."""
  a = np.asarray(a)
  return a.T if a.ndim == 2 else a.transpose(2, 3, 1, 0)


def normalised_nchw(images_uint8, dataset):
  """The network's input in PyTorch layout: (x / 255 - mean) / std in float32, NCHW."""
  mean, std = (np.asarray(v, np.float32) for v in MEAN_STD[dataset])
  x = (images_uint8.astype(np.float32) / np.float32(255.0) - mean) / std
  return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def first_per_class(labels, per_class, num_classes=10):
  """Indices (in data order) of the first per_class examples of each class."""
  seen = np.zeros(num_classes, int)
  keep = []
  for i, y in enumerate(np.asarray(labels)):
    if seen[y] < per_class:
      seen[y] += 1
      keep.append(i)
    if seen.min() == per_class:
      break
  return np.asarray(keep)


def pack_bits(flags):
  return np.packbits(np.asarray(flags, bool).reshape(-1))


def unpack_bits(packed, size):
  return np.unpackbits(np.asarray(packed, np.uint8))[:size].astype(bool)


def read_fixture(path):
  """(meta dict, {key: array}) of a fixture file."""
  with np.load(path, allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  meta = json.loads(str(arrays.pop("meta")))
  return meta, arrays


SCORER_SEED = 20250926


def scorer_state(shapes, seed=SCORER_SEED):
  """{state_dict key: float32 array} for an AutoS scorer given {key: shape}: Kaiming-normal (fan_in) weights, small biases, random BN affine parameters and
  running statistics. Masks, counters and Identity2d shortcut weights (ones) are left out: the module
  keeps its own."""
  out = {}
  for i, (key, shape) in enumerate(sorted(shapes.items())):  # Sorted: the same draws from any key order.
    if "mask" in key or key.endswith("num_batches_tracked") or key.endswith("shortcut.weight"):
      continue
    rng = _rng(seed, i)
    if key.endswith("running_mean"):
      a = 0.1 * rng.standard_normal(shape)
    elif key.endswith("running_var"):
      a = rng.uniform(0.5, 1.5, shape)
    elif key.endswith("weight") and len(shape) >= 2:
      a = rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[1:])))
    elif key.endswith("weight"):
      a = 1.0 + 0.2 * rng.standard_normal(shape)
    else:
      a = 0.05 * rng.standard_normal(shape)
    out[key] = np.asarray(a, np.float32)
  return out


def scorer_features(n, seed=SCORER_SEED + 1):
  """[n, 2] (theta_0, g_0)-like features: theta ~ N(0, 0.05^2), g ~ N(0, 0.002^2)."""
  rng = _rng(seed, n)
  return np.stack([0.05 * rng.standard_normal(n), 0.002 * rng.standard_normal(n)], axis=1).astype(np.float32)
