r"""Does a pruned network run faster? Inference of LeNet-300-100 and of a ResNet-18 layer, dense vs sparse forms.

  python benchmarks/sparse_inference.py [--batch=128] [--repeats=30]

For each density (50%, 10%, 2% kept) and each network:
  dense        the unpruned weights (the baseline)
  masked       dense weights times the mask: "mock sparsity", what every PaI library runs
  bcoo         jax.experimental.sparse BCOO @ dense (jax's docs call it a reference implementation)
  gather       constant fan-in: every output keeps the same number k of inputs (an N:M or
               per-output top-k mask), stored as [out, k] values + indices; y = sum_k x[:, idx] * v
A ResNet-18 layer is its 3x3, 256 -> 256 convolution on an 8x8 map, run as the im2col matmul
(K = 2304) for batch/16 images of an 8x8 map. Times are medians of --repeats calls of the jitted function (compilation excluded),
in one process, one sitting; run nothing else meanwhile (BENCHMARKS.md has the table).
"""
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 128, "examples per call")
flags.DEFINE_integer("repeats", 30, "timed calls per case (median)")
DENSITIES = (0.5, 0.1, 0.02)


def median_seconds(fn, *args):
  jax.block_until_ready(fn(*args))  # Compile.
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def fan_in_mask(rng, k_in, out, density):
  """A constant fan-in mask: each output keeps round(density * k_in) inputs (as N:M or per-output top-k)."""
  k = max(1, int(round(density * k_in)))
  idx = np.stack([np.sort(rng.choice(k_in, k, replace=False)) for _ in range(out)])  # [out, k]
  mask = np.zeros((k_in, out), bool)
  mask[idx.T, np.arange(out)[None, :]] = True
  return mask, idx


def layer_cases(rng, x, w, density):
  mask, idx = fan_in_mask(rng, w.shape[0], w.shape[1], density)
  masked_w = jnp.asarray(np.where(mask, w, 0.0), jnp.float32)
  values = jnp.asarray(np.take_along_axis(np.asarray(w).T, idx, axis=1), jnp.float32)  # [out, k]
  idx = jnp.asarray(idx)
  sp = sparse.BCOO.fromdense(masked_w)
  m = jnp.asarray(mask)
  return {
      "dense": (jax.jit(lambda x, w: x @ w), x, jnp.asarray(w)),
      "masked": (jax.jit(lambda x, w, m: x @ jnp.where(m, w, 0.0)), x, jnp.asarray(w), m),
      "bcoo": (jax.jit(lambda x, s: (s.T @ x.T).T), x, sp),
      "gather": (jax.jit(lambda x, v, i: jnp.einsum("bok,ok->bo", x[:, i], v)), x, values, idx),
  }


def lenet_cases(rng, batch, density):
  """The three LeNet-300-100 layers chained (ReLU between), each case in its own form."""
  shapes = [(784, 300), (300, 100), (100, 10)]
  ws = [rng.normal(size=s).astype(np.float32) / np.sqrt(s[0]) for s in shapes]
  x = jnp.asarray(rng.normal(size=(batch, 784)), jnp.float32)
  per_layer = [layer_cases(rng, None, w, density) for w in ws]
  cases = {}
  for form in ("dense", "masked", "bcoo", "gather"):
    fns = [layers[form][0] for layers in per_layer]
    operands = [layers[form][2:] for layers in per_layer]

    def net(x, *flat, fns=fns, sizes=[len(o) for o in operands]):
      i = 0
      for n, (fn, size) in enumerate(zip(fns, sizes)):
        x = fn(x, *flat[i:i + size])
        x = jax.nn.relu(x) if n < len(fns) - 1 else x
        i += size
      return x
    cases[form] = (jax.jit(net), x, *[a for o in operands for a in o])
  return cases


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  rows = []
  for density in DENSITIES:
    for network, cases in (("lenet_300_100", lenet_cases(rng, FLAGS.batch, density)),
                           ("resnet18 layer4 3x3 conv (im2col, K=2304)", layer_cases(
                               rng, jnp.asarray(rng.normal(size=(FLAGS.batch * 64 // 16, 2304)), jnp.float32),
                               rng.normal(size=(2304, 256)).astype(np.float32) / 48, density))):
      base = None
      for form, (fn, *args) in cases.items():
        seconds = median_seconds(fn, *args)
        base = base or seconds
        rows.append((network, density, form, seconds, base / seconds))
  print(f"batch {FLAGS.batch}, {jax.devices()[0].device_kind}, median of {FLAGS.repeats} calls")
  print("| network | density | form | ms | speed-up vs dense |")
  print("|---|---|---|---|---|")
  for network, density, form, seconds, speedup in rows:
    print(f"| {network} | {100 * density:g}% | {form} | {1e3 * seconds:.3f} | {speedup:.2f}x |")


if __name__ == "__main__":
  app.run(main)
