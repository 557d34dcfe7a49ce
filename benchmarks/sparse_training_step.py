r"""The jobs' training step with masks that change while training, against static masks (issue 29, item 7).

  python benchmarks/sparse_training_step.py --model=lenet [--steps=200] [--repeats=5]
  python benchmarks/sparse_training_step.py --model=resnet18 [--width=1.0] [--steps=100] [--repeats=2]

Times what the prune job and the sweep run: training.jit_epoch(trainer, n, record=RECORD) (the compiled
chunk of n steps whose mask update runs under lax.cond on the unbatched step) against
training.jit_epoch(trainer, n, record=None) (static masks), the task built by engine.build_task as in
tests/test_sparse_training_jobs.py, one seed (vmapped, as the jobs stack seeds), synthetic data of the
dataset's shapes (step time does not depend on the values). Methods, all with update_every_steps=100:
  static  random layerwise masks at --sparsity, record=None          (the baseline)
  gmp     dense masks, GMP to --sparsity (global magnitude)
  set     random layerwise masks at --sparsity, SET (drop 0.3, cosine)
  rigl    the same masks, RigL
The timed window starts at step 100 (an update step), so each `--steps`-step window holds steps/100 update
steps: the amortised overhead of the schedule.

lenet (LeNet-300-100, batch 128, Adam 1.2e-3: the lenet_mnist recipe): the chunk of --steps steps is ONE
compiled lax.scan (the jobs' loop for MLPs); each repeat times the whole chunk. Also times the chunk of
one step (python loop) on an update step and on an ordinary one: what one update costs.
resnet18 (CIFAR shapes 32x32x3, batch 32, SGD momentum 0.9: the resnet18_cifar10 recipe at --width): the
jobs' loop for conv nets on CPU (training.resolve_loop: 'python'): a compiled one-step program called from
Python --steps times, each step timed (block_until_ready, as the jobs read each chunk's loss).

topk: one drop-and-grow of one layer (masks.topk_flat twice: a stable argsort of every entry each) on
LeNet's 784x300 and ResNet-18's 3x3x512x512 kernels, against a threshold top-k that needs no sort (the k-th
largest by bisection over the floats' order-preserving int32 keys, ties by lower index: the same mask,
checked): what an update step costs and what it could cost.

Every method's programs are compiled first; then the windows run interleaved (static, gmp, set, rigl,
static, ...) so a change of load on a shared machine hits every method alike, and the overhead is the median
over repeats of the window's time over static's window of the same repeat. Prints a markdown table: ms per
ordinary step, per update step, the amortised ms per step over the window and the overhead against static.
"""
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from autosparse_jax import dynamic_sparsity as ds, prune_spec, training
from autosparse_jax.lab import engine, recipes, runs

flags.DEFINE_enum("model", "lenet", ["lenet", "resnet18", "topk"], "Network (and its recipe); topk: the "
                  "update's exact top-k alone on the two networks' largest layers.")
flags.DEFINE_integer("steps", 0, "Steps in the timed window (0: lenet 200, resnet18 100).")
flags.DEFINE_integer("repeats", 0, "Timed windows per method (0: lenet 7, resnet18 2).")
flags.DEFINE_float("width", 1.0, "resnet18 width multiplier.")
flags.DEFINE_float("sparsity", 0.9, "Final sparsity of every method.")
flags.DEFINE_integer("update_every_steps", 100, "Mask update period.")
flags.DEFINE_string("methods", "static,gmp,set,rigl", "Methods to time, in order.")
FLAGS = flags.FLAGS
FIRST = 100  # The window's first step: an update step of every method (updates at 0, 100, ..., 75% of the run).


def config_of(model, steps):
  if model == "lenet":
    config = recipes.recipe_config("lenet_mnist")
    shape, batch = (28, 28, 1), 128
  else:
    config = recipes.recipe_config("resnet18_cifar10")
    config.width = FLAGS.width
    shape, batch = (32, 32, 3), 32
  config.dataset = "synthetic"
  config.train.batch_size = batch
  config.train.epochs = 10  # The run the schedule is resolved for: updates until step 7.5 x steps.
  # One epoch = the timed window, so a window never crosses an epoch boundary (train_steps' rule).
  config.data.synthetic = dict(image_shape=shape, num_classes=10, num_train=batch * steps, num_test=batch, seed=0)
  config.criterion, config.sparsity = "random", FLAGS.sparsity
  config.prune.distribution = "layerwise"
  return config


def record_of(method, total_steps):
  if method == "static":
    return None
  fields = dict(update_every_steps=FLAGS.update_every_steps)
  if method == "gmp":
    fields["sparsity"] = FLAGS.sparsity
  return ds.schedule(method, **fields).resolve(total_steps)


def start_states(config, task, method):
  states = engine.init_states(config, task)
  if method == "gmp":
    return states  # GMP from dense.
  return runs.prune_states(prune_spec.from_config(config), task, states)[0]


def copy(states):
  return jax.tree.map(jnp.copy, states)  # The programs donate their state argument.


def lenet_window(config, task, method, steps, total):
  """A function timing one window of `method` (compiled here): the whole chunk, one lax.scan."""
  record = record_of(method, total)
  program = training.jit_epoch(task.trainer, steps, record=record)
  call = (lambda s: program(s, task.train_images, task.train_labels)) if record is None else (
      lambda s: program(s, task.train_images, task.train_labels, jnp.int32(FIRST)))
  base = start_states(config, task, method)
  jax.block_until_ready(call(copy(base)))  # Compiles.

  def window():
    s = copy(base)
    jax.block_until_ready(s)
    t = time.perf_counter()
    jax.block_until_ready(call(s))
    return time.perf_counter() - t, [], []
  return window


def lenet_single_steps(config, task, method, total, repeats):
  """The one-step program (the python loop's) on an update step and on an ordinary one: median seconds."""
  record = record_of(method, total)
  one = training.jit_epoch(task.trainer, 1, unroll=True, record=record)
  base = start_states(config, task, method)
  out = {}
  for label, step in (("update", FIRST), ("plain", FIRST + 1)):
    run = (lambda s: one(s, task.train_images, task.train_labels)) if record is None else (
        lambda s, step=step: one(s, task.train_images, task.train_labels, jnp.int32(step)))
    jax.block_until_ready(run(copy(base)))
    times = []
    for _ in range(repeats):
      s = copy(base)
      jax.block_until_ready(s)
      t = time.perf_counter()
      jax.block_until_ready(run(s))
      times.append(time.perf_counter() - t)
    out[label] = float(np.median(times))
  return out


def python_loop_window(config, task, method, steps, total):
  """A function timing one window of `method` as the jobs' python loop: a one-step program per step."""
  record = record_of(method, total)
  program = training.jit_epoch(task.trainer, 1, unroll=True, record=record)
  run = (lambda s, t: program(s, task.train_images, task.train_labels)) if record is None else (
      lambda s, t: program(s, task.train_images, task.train_labels, jnp.int32(t)))
  base = start_states(config, task, method)
  updates = set(ds.update_steps(record).tolist()) if record is not None else set()
  s = copy(base)
  t0 = time.perf_counter()
  for t in (FIRST, FIRST + 1):  # Compiles (both branches live in the one program).
    s, _ = jax.block_until_ready(run(s, t))
  print(f"  {method}: compiled and 2 steps in {time.perf_counter() - t0:.1f} s", flush=True)

  def window():
    plain, update = [], []
    s = copy(base)
    jax.block_until_ready(s)
    start = time.perf_counter()
    for t in range(FIRST, FIRST + steps):
      t0 = time.perf_counter()
      s, metrics = run(s, t)
      np.asarray(metrics["loss"])  # The jobs read each chunk's loss (the finiteness check).
      (update if t in updates else plain).append(time.perf_counter() - t0)
    return time.perf_counter() - start, plain, update
  return window


def threshold_topk(scores, alive, k):
  """masks.topk_flat's result without a sort: the k first of its keep order (higher score first, ties by
  lower index, NaN and dead entries as -inf), then only the alive ones."""
  s = jnp.where(alive & ~jnp.isnan(scores), scores + 0.0, -jnp.inf).astype(jnp.float32)
  bits = jax.lax.bitcast_convert_type(s, jnp.uint32)
  negative = (bits >> 31) == 1  # Order-preserving uint32 keys: float order = key order.
  key = jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))

  def body(_, bounds):  # The largest t with count(key >= t) >= k lies in [lo, hi].
    lo, hi = bounds
    gap = hi - lo
    mid = lo + (gap >> 1) + (gap & 1)
    ok = (gap > 0) & (jnp.sum(key >= mid, dtype=jnp.int32) >= k)
    return jnp.where(ok, mid, lo), jnp.where(ok | (gap == 0), hi, mid - 1)

  t, _ = jax.lax.fori_loop(0, 32, body, (jnp.uint32(0), jnp.uint32(0xFFFFFFFF)))
  above = key > t
  ties = (key == t) & (jnp.cumsum(key == t, dtype=jnp.int32) <= k - jnp.sum(above, dtype=jnp.int32))
  return (above | ties) & alive & (k > 0)


def time_topk():
  from autosparse_jax import masks as masks_lib
  print("| layer | entries | masks.topk_flat (stable argsort) ms | threshold top-k ms | same mask |")
  print("|---|---:|---:|---:|---|")
  for name, shape in (("LeNet Dense_0 784x300", (784, 300)), ("ResNet-18 3x3x512x512", (3, 3, 512, 512))):
    key = jax.random.PRNGKey(0)
    w = jax.random.normal(key, shape).reshape(-1)
    alive = jax.random.uniform(jax.random.fold_in(key, 1), w.shape) < 0.1
    k = jnp.int32(int(0.7 * int(alive.sum())))
    a, b = jax.jit(masks_lib.topk_flat), jax.jit(threshold_topk)
    same = bool(jnp.array_equal(a(jnp.abs(w), alive, k), b(jnp.abs(w), alive, k)))
    times = {}
    for label, fn in (("sort", a), ("threshold", b)):
      jax.block_until_ready(fn(jnp.abs(w), alive, k))
      ts = []
      for _ in range(FLAGS.repeats or 7):
        t = time.perf_counter()
        jax.block_until_ready(fn(jnp.abs(w), alive, k))
        ts.append(time.perf_counter() - t)
      times[label] = float(np.median(ts))
    print(f"| {name} | {w.size} | {1e3 * times['sort']:.1f} | {1e3 * times['threshold']:.2f} | {same} |")


def main(argv):
  del argv
  model = FLAGS.model
  if model == "topk":
    return time_topk()
  steps = FLAGS.steps or (200 if model == "lenet" else 100)
  repeats = FLAGS.repeats or (7 if model == "lenet" else 2)
  config = config_of(model, steps)
  task = engine.build_task(config)
  total = int(config.train.epochs) * task.trainer.steps_per_epoch
  methods = FLAGS.methods.split(",")
  make = lenet_window if model == "lenet" else python_loop_window
  windows = {method: make(config, task, method, steps, total) for method in methods}
  # Interleaved (static, gmp, set, rigl, static, ...): a load change on the shared machine hits every method
  # alike; each repeat's ratio to static's window of the same repeat is the overhead figure.
  seconds, plain, update = ({m: [] for m in methods} for _ in range(3))
  for r in range(repeats):
    for method in methods:
      w, p, u = windows[method]()
      seconds[method].append(w)
      plain[method] += p
      update[method] += u
    print(f"  repeat {r + 1}/{repeats}: " + ", ".join(f"{m} {1e3 * seconds[m][-1] / steps:.2f}" for m in methods)
          + " ms/step", flush=True)
  single = {m: lenet_single_steps(config, task, m, total, 15) for m in methods} if model == "lenet" else {}
  results = {}
  for method in methods:
    ratios = [w / s for w, s in zip(seconds[method], seconds.get("static", seconds[method]))]
    results[method] = {
        "amortised": float(np.median(seconds[method])) / steps,
        "plain": single[method]["plain"] if single else float(np.median(plain[method])),
        "update": single[method]["update"] if single else (float(np.median(update[method])) if update[method]
                                                             else float("nan")),
        "window_min": min(seconds[method]) / steps, "window_max": max(seconds[method]) / steps,
        "ratio": float(np.median(ratios)), "ratio_min": min(ratios), "ratio_max": max(ratios)}
  record = record_of("rigl", total)
  n_updates = int(np.sum((ds.update_steps(record) >= FIRST) & (ds.update_steps(record) < FIRST + steps)))
  what = ("LeNet-300-100, batch 128, Adam, one lax.scan of the window" if model == "lenet" else
          f"ResNet-18 width {FLAGS.width}, CIFAR shapes, batch 32, SGD momentum, python loop of one-step programs")
  print(f"\n{what}; window of {steps} steps from step {FIRST} ({n_updates} update steps); "
        f"update_every_steps {FLAGS.update_every_steps}, sparsity {FLAGS.sparsity}, {jax.devices()[0].platform}, "
        f"{repeats} interleaved windows per method:")
  single = ("one-step program (python loop)" if model == "lenet" else "in the window, median")
  print(f"| method | ms / ordinary step ({single}) | ms / update step ({single}) | amortised ms / step in the "
        "window, median (min-max) | overhead vs static: median of the repeats' ratios (min-max) |")
  print("|---|---:|---:|---:|---:|")
  for method, r in results.items():
    print(f"| {method} | {1e3 * r['plain']:.3f} | {1e3 * r['update']:.3f} | {1e3 * r['amortised']:.3f} "
          f"({1e3 * r['window_min']:.3f}-{1e3 * r['window_max']:.3f}) | {100 * (r['ratio'] - 1):+.1f}% "
          f"({100 * (r['ratio_min'] - 1):+.1f}% to {100 * (r['ratio_max'] - 1):+.1f}%) |")


if __name__ == "__main__":
  app.run(main)
