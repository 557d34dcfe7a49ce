r"""Conv nets on the CPU: XLA's conv vs conv="auto" (im2col where faster) vs PyTorch eager.

  python benchmarks/conv_cpu.py [--models=resnet18,vgg16] [--batch=128] [--repeats=3]
      [--impls=xla,auto] [--grid_impls=xla,auto] [--grid_nets=4] [--grid_width=0.25]
      [--torch_python=/path/to/python] [--json=out.json]

1. One SGD train step (batch 128, full width, CIFAR 32x32, 10 classes, the recipe's
   SGD + Nesterov, augmentation on device) as the jobs run it on CPU: one jitted
   unrolled step of the seed-vmapped trainer (training.jit_epoch(trainer, 1, unroll=True);
   XLA:CPU conv gradients inside a while loop are ~60x slower), for each conv
   implementation of models/conv.py; against the same architecture in PyTorch eager,
   channels-last, SGD + Nesterov on a fixed random batch (no augmentation), run by
   benchmarks/conv_cpu_torch.py in a --torch_python subprocess ('' skips it; torch is
   never a dependency of the package).
2. A vmapped grid of --grid_nets ResNet-18 at --grid_width (as the sweep job trains
   them) against the same networks stepped one at a time with the size-1 program,
   for each of --grid_impls.

All timed calls are interleaved (one of each per round, --repeats rounds after a
warm-up call each); figures are medians. Compile times are reported apart.
Synthetic data of the real shapes: the timing only depends on shapes.
"""
import dataclasses
import json
import subprocess
import time

from absl import app, flags

import autosparse_jax  # noqa: F401  (sets XLA flags before jax starts)
import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import training
from autosparse_jax.lab import engine, recipes
from autosparse_jax.data.specs import SPECS
from autosparse_jax.models import get_model

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["resnet18", "vgg16"], "Full-width nets to time: resnet18, vgg16.")
flags.DEFINE_list("impls", ["xla", "auto"], "conv implementations of the full-width nets.")
flags.DEFINE_integer("batch", 128, "Batch size.")
flags.DEFINE_integer("repeats", 3, "Timed rounds (medians).")
flags.DEFINE_list("grid_impls", ["xla", "auto"], "conv implementations of the grid ('' skips it).")
flags.DEFINE_integer("grid_nets", 4, "Networks of the vmapped grid.")
flags.DEFINE_float("grid_width", 0.25, "ResNet-18 width of the grid.")
flags.DEFINE_string("torch_python", "/work/torch-venv/bin/python",
                    "Python with torch for the PyTorch side ('' skips it).")
flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")

RECIPE = {"resnet18": "resnet18_cifar10", "vgg16": "vgg16_cifar10"}
NAMES = {"resnet18": "ResNet-18", "vgg16": "VGG-16"}


def make_task(model, width, nets, batch):
  """(config, task) of `nets` seeds of the recipe's net on synthetic CIFAR-10-shaped data."""
  config = recipes.recipe_config(RECIPE[model])
  config.dataset = "synthetic"
  config.width = width
  config.num_seeds = nets
  config.train.batch_size = batch
  config.data.synthetic.update(dict(image_shape=(32, 32, 3), num_train=batch * 4, num_test=batch,
                                    num_classes=10))
  task = engine.build_task(config)
  trainer = dataclasses.replace(task.trainer, spec=SPECS["cifar10"])  # CIFAR augmentation + normalisation.
  return config, dataclasses.replace(task, trainer=trainer)


def step_program(task, model, width, impl, states):
  """The jitted step of the net with conv=impl, compiled for `states`; (program, compile seconds)."""
  trainer = dataclasses.replace(task.trainer, model=get_model(model, 10, width=width, conv=impl))
  args = (states, task.train_images, task.train_labels)
  t = time.perf_counter()
  compiled = training.jit_epoch(trainer, 1, unroll=True).lower(*args).compile()
  return compiled, time.perf_counter() - t


class Torch:
  """The PyTorch worker (conv_cpu_torch.py): one train step per request, its seconds."""

  def __init__(self, python):
    import os
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv_cpu_torch.py")
    self.proc = subprocess.Popen([python, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    self.version = self.proc.stdout.readline().strip()

  def step(self, model, width, batch):
    self.proc.stdin.write(f"{model} {width} {batch}\n")
    self.proc.stdin.flush()
    return float(self.proc.stdout.readline())

  def close(self):
    self.proc.stdin.write("quit\n")
    self.proc.stdin.close()
    self.proc.wait()


def copy(states):
  return jax.tree.map(jnp.copy, states)  # The step donates its input.


def full_width(torch, out):
  b = FLAGS.batch
  for model in FLAGS.models:
    config, task = make_task(model, 1.0, 1, b)
    states0 = engine.init_states(config, task)
    runs, compile_s = {}, {}
    for impl in FLAGS.impls:
      runs[impl], compile_s[impl] = step_program(task, model, 1.0, impl, states0)
    states = {impl: jax.block_until_ready(fn(copy(states0), task.train_images, task.train_labels)[0])
              for impl, fn in runs.items()}  # Warm-up.
    times = {name: [] for name in list(runs) + (["torch"] if torch else [])}
    if torch:
      torch.step(model, 1.0, b)  # Builds the net and warms it up.
    for _ in range(FLAGS.repeats):
      for impl, fn in runs.items():
        t = time.perf_counter()
        states[impl] = jax.block_until_ready(fn(states[impl], task.train_images, task.train_labels)[0])
        times[impl].append(time.perf_counter() - t)
      if torch:
        times["torch"].append(torch.step(model, 1.0, b))
    med = {name: float(np.median(v)) for name, v in times.items()}
    row = {"benchmark": f"{model} train step", "batch": b, "width": 1.0, "seconds": med,
           "all_seconds": times, "compile_seconds": compile_s}
    out["full_width"].append(row)
    cells = "  ".join(f"{name} {s:6.2f} s" for name, s in med.items())
    ratios = "  ".join(f"{name}/{FLAGS.impls[-1]} {s / med[FLAGS.impls[-1]]:.2f}x" for name, s in med.items()
                       if name != FLAGS.impls[-1])
    comp = ", ".join(f"{impl} {s:.0f} s" for impl, s in compile_s.items())
    print(f"{NAMES[model]:9s} step, batch {b}: {cells}  |  {ratios}  (compile: {comp})", flush=True)


def grid(out):
  n, width, b = FLAGS.grid_nets, FLAGS.grid_width, FLAGS.batch
  config, task = make_task("resnet18", width, n, b)
  grid0 = engine.init_states(config, task)
  singles0 = [jax.tree.map(lambda x, i=i: x[i:i + 1], grid0) for i in range(n)]
  runs, compile_s = {}, {}
  for impl in FLAGS.grid_impls:
    for kind, states in (("grid", grid0), ("single", singles0[0])):
      runs[impl, kind], compile_s[f"{impl} {kind}"] = step_program(task, "resnet18", width, impl, states)
  args = (task.train_images, task.train_labels)
  state = {}
  for impl in FLAGS.grid_impls:  # Warm-up.
    state[impl, "grid"] = jax.block_until_ready(runs[impl, "grid"](copy(grid0), *args)[0])
    state[impl, "single"] = [jax.block_until_ready(runs[impl, "single"](copy(s), *args)[0]) for s in singles0]
  times = {key: [] for key in state}
  for _ in range(FLAGS.repeats):
    for impl in FLAGS.grid_impls:
      t = time.perf_counter()
      state[impl, "grid"] = jax.block_until_ready(runs[impl, "grid"](state[impl, "grid"], *args)[0])
      times[impl, "grid"].append(time.perf_counter() - t)
      t = time.perf_counter()
      state[impl, "single"] = [jax.block_until_ready(runs[impl, "single"](s, *args)[0])
                               for s in state[impl, "single"]]
      times[impl, "single"].append(time.perf_counter() - t)
  med = {key: float(np.median(v)) for key, v in times.items()}
  for impl in FLAGS.grid_impls:
    g, s = med[impl, "grid"], med[impl, "single"]
    out["grid"].append({"impl": impl, "nets": n, "width": width, "batch": b, "grid_seconds": g,
                        "one_by_one_seconds": s, "grid_over_one_by_one": g / s,
                        "all_grid_seconds": times[impl, "grid"], "all_one_by_one_seconds": times[impl, "single"]})
    print(f"{n} x ResNet-18 w{width:g} step, batch {b}, conv={impl:6s}: vmapped grid {g:6.2f} s, "
          f"one at a time {s:6.2f} s (sum of {n}), grid/one-by-one {g / s:.2f}x", flush=True)
  first = FLAGS.grid_impls[0]
  for impl in FLAGS.grid_impls[1:]:
    print(f"  {first}/{impl}: grid {med[first, 'grid'] / med[impl, 'grid']:.2f}x, "
          f"one at a time {med[first, 'single'] / med[impl, 'single']:.2f}x", flush=True)
  print("  compile: " + ", ".join(f"{k} {v:.0f} s" for k, v in compile_s.items()), flush=True)
  out["grid_compile_seconds"] = compile_s


def main(argv):
  del argv
  device = jax.devices()[0]
  out = {"device": f"{device.platform}: {device.device_kind}", "jax": jax.__version__,
         "full_width": [], "grid": []}
  torch = Torch(FLAGS.torch_python) if FLAGS.torch_python and FLAGS.models else None
  if torch:
    out["torch"] = torch.version
  print(f"{out['device']}, jax {jax.__version__}" + (f", torch worker: {torch.version}" if torch else "")
        + f"; medians of {FLAGS.repeats} interleaved rounds", flush=True)
  try:
    full_width(torch, out)
  finally:
    if torch:
      torch.close()
  if FLAGS.grid_impls and FLAGS.grid_impls != [""]:
    grid(out)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(out, f, indent=2, default=str)


if __name__ == "__main__":
  app.run(main)
