r"""The step time of masks that change while training, against static masked training.

  python benchmarks/sparse_training_overhead.py [--steps=1000] [--repeats=5] [--sparsity=0.9]

LeNet-300-100 (784-300-100-10, dict params), batch 128 of synthetic MNIST-shaped inputs (step time
does not depend on the values), Adam 1e-3, `--steps` steps in one jitted lax.scan. Methods:
  static  asj.masked(adam, masks)                     (the baseline)
  gmp     asj.sparse_training(adam, dense masks, 'gmp', sparsity=S)
  set     asj.sparse_training(adam, masks, 'set')
  rigl    asj.sparse_training(adam, masks, 'rigl')
all with update_every_steps=100 (updates until 75% of the run, the records' default), masks at
sparsity S from random scores (layerwise). Times the second and later calls (compilation excluded)
and prints the median per step and the amortised overhead against static (issue 29's target: at
most 10% for SET and RigL, 5% for GMP). Run it on a quiet machine; the CPU count matters.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import autosparse_jax as asj
from autosparse_jax import masks as masks_lib

flags.DEFINE_integer("steps", 1000, "Training steps in the scan.")
flags.DEFINE_integer("repeats", 5, "Timed calls of each scan (after one compiling call).")
flags.DEFINE_integer("update_every_steps", 100, "Mask update period.")
flags.DEFINE_float("sparsity", 0.9, "Final sparsity of every method.")
flags.DEFINE_integer("batch", 128, "Batch size.")
FLAGS = flags.FLAGS
SIZES = (784, 300, 100, 10)
BATCHES = 8  # Distinct batches, cycled.


def init_params(key):
  params = {}
  for i, (k, a, b) in enumerate(zip(jax.random.split(key, 3), SIZES[:-1], SIZES[1:])):
    params[f"w{i}"] = jax.random.normal(k, (a, b)) * np.sqrt(2.0 / a)
    params[f"b{i}"] = jnp.zeros(b)
  return params


def loss(params, x, y):
  h = x
  for i in range(3):
    h = h @ params[f"w{i}"] + params[f"b{i}"]
    if i < 2:
      h = jax.nn.relu(h)
  return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()


def make_run(tx, xs, ys, steps):
  @jax.jit
  def run(params):
    def step(carry, t):
      params, state = carry
      i = t % BATCHES
      grads = jax.grad(loss)(params, xs[i], ys[i])
      updates, state = tx.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, state), _ = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
    return params
  return run


def median_seconds(fn, arg, repeats):
  jax.block_until_ready(fn(arg))  # Compiles.
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(arg))
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def main(argv):
  del argv
  key = jax.random.PRNGKey(0)
  kp, kx, ky, ks = jax.random.split(key, 4)
  params = init_params(kp)
  xs = jax.random.normal(kx, (BATCHES, FLAGS.batch, SIZES[0]))
  ys = jax.random.randint(ky, (BATCHES, FLAGS.batch), 0, SIZES[-1])
  dense = masks_lib.init_masks(params)
  scores = jax.tree.map(lambda p: jax.random.uniform(ks, p.shape), params)
  masks = masks_lib.scores_to_masks(scores, dense, 1.0 - FLAGS.sparsity, "layerwise")
  adam = optax.adam(1e-3)
  common = dict(update_every_steps=FLAGS.update_every_steps, total_steps=FLAGS.steps)
  methods = {
      "static": (asj.masked(adam, masks), masks),
      "gmp": (asj.sparse_training(adam, dense, "gmp", sparsity=FLAGS.sparsity, **common), dense),
      "set": (asj.sparse_training(adam, masks, "set", **common), masks),
      "rigl": (asj.sparse_training(adam, masks, "rigl", **common), masks),
  }
  times = {}
  for name, (tx, start) in methods.items():
    times[name] = median_seconds(make_run(tx, xs, ys, FLAGS.steps), masks_lib.apply_masks(params, start),
                                 FLAGS.repeats)
  print(f"LeNet-300-100, batch {FLAGS.batch}, Adam, {FLAGS.steps} steps in one lax.scan, update every "
        f"{FLAGS.update_every_steps}, sparsity {FLAGS.sparsity}, {jax.devices()[0].platform}, "
        f"median of {FLAGS.repeats}:")
  print("| method | ms / step | vs static |")
  print("|---|---:|---:|")
  for name, seconds in times.items():
    print(f"| {name} | {1e3 * seconds / FLAGS.steps:.3f} | {seconds / times['static']:.3f}x |")


if __name__ == "__main__":
  app.run(main)
