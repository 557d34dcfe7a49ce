r"""What the sharded code path costs on one device: plain vs mesh programs, same work.

  python benchmarks/sharded_overhead.py [--repeats=5] [--json=out.json]

Training: the jobs' own jitted epoch programs (training.jit_epoch) once without a
layout (what a one-device job runs) and once on a 1x1 ("seeds", "data") mesh
(NamedSharding in/out, the batch constrained to the data axis, vmap with
spmd_axis_name): LeNet-300-100 on MNIST-shaped synthetic data (one lax.scan of
--lenet_steps steps, batch 128, 98% sparse) and a narrow ResNet-18 (width 1/4)
on CIFAR-shaped data (one jitted step per call, as on CPU; batch 32).
Scoring: the AutoS MLP scorer (width 1/4) over --score_weights weights, unsharded vs
shard_map over the 1-device mesh. Prints steps/s (weights/s) and the ratio.
On a GPU host the same command gives the sharded path's throughput there.
"""
import dataclasses
import json
import time

from absl import app, flags

import autosparse_jax  # noqa: F401  (sets XLA flags before jax starts)
import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import prune_spec, training, pruning
from autosparse_jax.lab import recipes, sharding, engine, runs
from autosparse_jax.autos import apply
from autosparse_jax.autos.scorer import make_scorer

FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 5, "Timed calls per program (best and median reported).")
flags.DEFINE_integer("lenet_steps", 100, "Steps in the LeNet program (one lax.scan).")
flags.DEFINE_integer("conv_steps", 3, "Steps per timed conv-net repeat (one jitted step per call).")
flags.DEFINE_integer("score_weights", 1 << 18, "Weights scored by the AutoS MLP scorer.")
flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")


def config_for(model, image_shape, batch, width, num_train):
  c = recipes.base_config()
  c.model, c.width, c.dataset = model, width, "synthetic"
  c.data.synthetic.update(dict(image_shape=image_shape, num_train=num_train, num_test=batch))
  c.train.update(dict(batch_size=batch, optimizer="adam", lr=1e-3))
  c.criterion, c.sparsity = "magnitude", 0.98
  return c


def interleaved(fns, repeats):
  """{name: seconds per call} for thunks called in turn (plain, sharded, plain, ...).

  Alternating keeps slow drifts of a shared machine's load out of the ratio.
  """
  for fn in fns.values():
    fn()  # Compile + warm-up.
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t)
  return {name: np.asarray(t) for name, t in times.items()}


def report(name, unit, work, times):
  """Median rates and the median of the per-round sharded/plain rate ratios."""
  out = {kind: {f"{unit}_per_s_median": work / float(np.median(t)), f"{unit}_per_s_best": work / float(t.min())}
         for kind, t in times.items()}
  out["sharded_over_plain_median"] = float(np.median(times["plain"] / times["sharded"]))
  print(f"{name}: plain {out['plain'][f'{unit}_per_s_median']:.4g} {unit}/s, sharded (1 device) "
        f"{out['sharded'][f'{unit}_per_s_median']:.4g} {unit}/s (medians of {len(times['plain'])}; "
        f"sharded/plain rate {out['sharded_over_plain_median']:.3f})", flush=True)
  return out


def train_case(name, config, steps_per_call, calls, unroll):
  task = engine.build_task(config)
  states, _ = runs.prune_states(prune_spec.from_config(config, config.criterion, density=1.0 - float(config.sparsity)), task, engine.init_states(config, task))
  layout = sharding.single_device_layout()
  sharded = dataclasses.replace(task.trainer, layout=layout)
  plain_args = (task.train_images, task.train_labels)
  cases = {"plain": (task.trainer, plain_args, states),
           "sharded": (sharded, layout.put_replicated(plain_args), layout.put_states(states))}
  fns = {}
  for kind, (trainer, args, st) in cases.items():
    fn = training.jit_epoch(trainer, steps_per_call, unroll=unroll)
    holder = {"states": jax.tree.map(lambda x: jnp.array(x, copy=True), st)}  # Donated each call.

    def run(fn=fn, args=args, holder=holder):
      for _ in range(calls):
        holder["states"], metrics = fn(holder["states"], *args)
      jax.block_until_ready((holder["states"], metrics))
    fns[kind] = run
  return report(name, "steps", steps_per_call * calls, interleaved(fns, FLAGS.repeats))


def score_case():
  module = make_scorer("mlp", 2, 0.25)
  variables = jax.jit(lambda k: module.init(k, jnp.zeros((2, 2)), train=False))(jax.random.PRNGKey(0))
  scorer = apply.TrainedScorer(module, variables, ("theta0", "g0"), np.zeros(2, np.float32),
                               np.ones(2, np.float32), {})
  x = np.random.default_rng(0).normal(size=(FLAGS.score_weights, 2)).astype(np.float32)
  fns = {"plain": lambda: apply.score_unsharded(scorer, x, 4096),
         "sharded": lambda: apply.score_shard_map(scorer, x, 4096, jax.devices()[:1])}
  return report(f"AutoS mlp scorer (width 1/4), {x.shape[0]} weights", "weights", x.shape[0],
                interleaved(fns, FLAGS.repeats))


def main(argv):
  del argv
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind} ({jax.default_backend()})", flush=True)
  cpu = jax.default_backend() == "cpu"
  results = {
      "lenet_mnist_shapes": train_case(
          f"LeNet-300-100, MNIST shapes, batch 128, {FLAGS.lenet_steps} steps per scan",
          config_for("lenet_300_100", (28, 28, 1), 128, 1.0, 128 * FLAGS.lenet_steps),
          FLAGS.lenet_steps, 1, False),
      "resnet18_quarter_cifar_shapes": train_case(
          "ResNet-18 width 1/4, CIFAR shapes, batch 32" + (", one step per call" if cpu else ""),
          config_for("resnet18", (32, 32, 3), 32, 0.25, 32 * FLAGS.conv_steps),
          1 if cpu else FLAGS.conv_steps, FLAGS.conv_steps if cpu else 1, cpu),
      "autos_mlp_scoring": score_case(),
  }
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
