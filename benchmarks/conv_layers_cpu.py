r"""Per-layer conv timing, lax.conv vs im2col + matmul: where conv="auto" switches.

  python benchmarks/conv_layers_cpu.py [--batch=128] [--widths=1,0.25] [--repeats=3]
      [--vmap=N] [--json=out.json]

Times, for every distinct conv of ResNet-18 (CIFAR: 3x3 stem, BasicBlocks, 1x1
shortcuts) and VGG-16 on a 32x32 input, one jitted forward + gradient w.r.t. the
input and the kernel (a training step's work for that layer) with
lax.conv_general_dilated and with models.conv.im2col_conv_general_dilated. The
two are called interleaved and each figure is the median of --repeats calls.
--vmap=N runs each under jax.vmap over N networks (N=1: as the jobs run a single
seed; N=4: a grid of 4 networks, where lax.conv becomes a grouped convolution).
--models=boundary times 3x3 convs with 1x1 to 4x4 outputs at 512 channels. The output spatial size decides AUTO_MAX_OUTPUT_PIXELS in models/conv.py.
"""
import json
import time

from absl import app, flags

import autosparse_jax  # noqa: F401  (sets XLA flags before jax starts)
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from autosparse_jax.models.conv import im2col_conv_general_dilated

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 128, "Batch size.")
flags.DEFINE_list("widths", ["1", "0.25"], "Width multipliers of the channel counts.")
flags.DEFINE_integer("repeats", 3, "Timed calls per implementation (median).")
flags.DEFINE_integer("vmap", 0, "Run under jax.vmap over this many networks (0: no vmap).")
flags.DEFINE_list("models", ["resnet18", "vgg16"], "Whose layers: resnet18, vgg16, boundary.")
flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")

# (input size, in channels, out channels, kernel, stride) at width 1.
LAYERS = {
    "resnet18": [(32, 3, 64, 3, 1), (32, 64, 64, 3, 1),
                 (32, 64, 128, 3, 2), (32, 64, 128, 1, 2), (16, 128, 128, 3, 1),
                 (16, 128, 256, 3, 2), (16, 128, 256, 1, 2), (8, 256, 256, 3, 1),
                 (8, 256, 512, 3, 2), (8, 256, 512, 1, 2), (4, 512, 512, 3, 1)],
    "vgg16": [(32, 3, 64, 3, 1), (32, 64, 64, 3, 1), (16, 64, 128, 3, 1), (16, 128, 128, 3, 1),
              (8, 128, 256, 3, 1), (8, 256, 256, 3, 1), (4, 256, 512, 3, 1), (4, 512, 512, 3, 1),
              (2, 512, 512, 3, 1)],
    # Around the threshold: 3x3 convs with 1x1 to 4x4 outputs (--models=boundary).
    "boundary": [(1, 512, 512, 3, 1), (2, 512, 512, 3, 1), (3, 512, 512, 3, 1), (4, 512, 512, 3, 2),
                 (4, 512, 512, 3, 1)],
}
IMPLS = {"xla": lax.conv_general_dilated, "im2col": im2col_conv_general_dilated}


def step_fn(conv, k, stride):
  def loss(x, w, ct):
    y = conv(x, w, (stride, stride), ((k // 2, k // 2),) * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(y * ct)
  grad = jax.grad(loss, argnums=(0, 1))
  if FLAGS.vmap:
    grad = jax.vmap(grad)
  return jax.jit(grad)


def main(argv):
  del argv
  b = FLAGS.batch
  rows, seen = [], set()
  print(f"{jax.devices()[0].device_kind}, batch {b}, forward + grad(input, kernel), "
        f"median of {FLAGS.repeats}{f', vmapped over {FLAGS.vmap}' if FLAGS.vmap else ''}", flush=True)
  print(f"{'width':>5} {'layer (in, cin->cout, k, s)':30} {'out':>5} {'xla ms':>9} {'im2col ms':>9} "
        f"{'xla/im2col':>10}", flush=True)
  for width in (float(w) for w in FLAGS.widths):
    for model in FLAGS.models:
      for size, cin, cout, k, s in LAYERS[model]:
        cin = cin if cin == 3 else max(1, int(cin * width))
        cout = max(1, int(cout * width))
        key = (width, size, cin, cout, k, s)
        if key in seen:
          continue
        seen.add(key)
        out = (size + 2 * (k // 2) - k) // s + 1
        keys = jax.random.split(jax.random.PRNGKey(0), 3)
        x = jax.random.normal(keys[0], (b, size, size, cin))
        w = jax.random.normal(keys[1], (k, k, cin, cout)) * 0.05
        ct = jax.random.normal(keys[2], (b, out, out, cout))
        if FLAGS.vmap:  # Each network its own input, kernel and cotangent.
          x, w, ct = (jnp.stack([a * (1 + 0.01 * i) for i in range(FLAGS.vmap)]) for a in (x, w, ct))
        fns = {name: step_fn(conv, k, s) for name, conv in IMPLS.items()}
        for fn in fns.values():
          jax.block_until_ready(fn(x, w, ct))  # Compile + warm up.
        times = {name: [] for name in fns}
        for _ in range(FLAGS.repeats):  # Interleaved.
          for name, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(x, w, ct))
            times[name].append(time.perf_counter() - t)
        med = {name: 1e3 * float(np.median(v)) for name, v in times.items()}
        row = {"width": width, "model": model, "in": size, "cin": cin, "cout": cout, "k": k, "stride": s,
               "out": out, "xla_ms": med["xla"], "im2col_ms": med["im2col"],
               "xla_over_im2col": med["xla"] / med["im2col"]}
        rows.append(row)
        label = f"{model[:6]} {size}x{size} {cin}->{cout} k{k} s{s}"
        print(f"{width:5.2f} {label:30} {out:2d}x{out:<2d} {med['xla']:9.1f} {med['im2col']:9.1f} "
              f"{row['xla_over_im2col']:10.2f}", flush=True)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
