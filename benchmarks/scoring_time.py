r"""Scoring time of each pruning criterion (one seed), compile excluded and included.

  python benchmarks/scoring_time.py [--data_dir=DIR] [--models=lenet,resnet18] [--json=out.json] \
    [--criteria=snip,grasp,... | --criteria=all] [--rounds=px:5,synflow_l2:5] [--resnet_width=1.0] \
    [--repeats=N]

LeNet-300-100 on MNIST (real when prepared in --data_dir, else MNIST-shaped synthetic)
and ResNet-18 on CIFAR-10-shaped synthetic data (timing depends on shapes only).
--criteria takes any jittable registered criterion (autosparse_jax.criteria.jittable_names();
`all` = every one of them). Each runs with its own defaults (config.prune, criteria/*.py
DEFAULTS) and its default number of rounds (SynFlow, SynFlow-L2 and PX 100, NTK-SAP 20,
FORCE 10, the others 1) unless --rounds=NAME:R sets fewer: then the full cost is estimated
as R_default x (measured time / R), and the table says so. Pruning data: --num_batches
batches of 128 for SNIP, FORCE and Fisher (0 = the whole training set), 10 samples per
class for GraSP and PX, one batch of 128 for ProsPr, 100 random inputs for NTK-SAP.
Prints a markdown table with the ratio to SNIP on the same model, and GraSP's cost in
units of one gradient evaluation over the same samples (when grasp is timed).
"with compilation" is the first call: run with AUTOSPARSE_COMPILATION_CACHE=off, or the
persistent compilation cache may load the programs instead of compiling them.
"""
import dataclasses
import json
import time

from absl import app, flags

import autosparse_jax  # noqa: F401  (sets XLA flags before jax starts)
import jax
import numpy as np

from autosparse_jax import criteria, prune_spec, pruning
from autosparse_jax.lab import engine, recipes, runs
from autosparse_jax.criteria import base, saliency
from autosparse_jax.data import DatasetNotPreparedError, load_dataset
from autosparse_jax.data.specs import SPECS

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "", "TFDS data dir with MNIST prepared (optional).")
flags.DEFINE_list("models", ["lenet", "resnet18"], "Which of lenet, resnet18.")
flags.DEFINE_list("criteria", ["random", "magnitude", "snip", "grasp", "synflow"],
                  "Jittable criteria to time, or `all` (criteria.jittable_names()).")
flags.DEFINE_integer("num_batches", 1, "SNIP / FORCE / Fisher pruning batches (0 = whole training set).")
flags.DEFINE_integer("synflow_rounds", 100, "SynFlow rounds (fewer to estimate the per-round cost); "
                     "the same as --rounds=synflow:R.")
flags.DEFINE_list("rounds", [], "NAME:R pairs: run criterion NAME with R rounds instead of its default "
                  "(the full cost is then extrapolated per round).")
flags.DEFINE_float("resnet_width", 1.0, "ResNet-18 width (channel multiplier; 1.0 = the paper's net).")
flags.DEFINE_integer("repeats", 1, "Timed calls after the first (compiling) one; the median is reported.")
flags.DEFINE_string("json", "", "Also write the figures to this JSON file.")


def criterion_list():
  jittable = criteria.jittable_names()
  names = list(jittable) if FLAGS.criteria == ["all"] else list(FLAGS.criteria)
  for name in names:
    criteria.get(name, "--criteria")  # Unknown names: the registry's error, with the known names.
    if name not in jittable:
      raise app.UsageError(f"--criteria: {name!r} runs on the host (not jittable); this script times "
                           f"the jittable criteria: {', '.join(jittable)}.")
  return names


def round_overrides():
  out = {"synflow": FLAGS.synflow_rounds}
  for item in FLAGS.rounds:
    name, _, value = item.partition(":")
    if not value.isdigit() or int(value) < 1:
      raise app.UsageError(f"--rounds={item!r}: use NAME:R with R >= 1, e.g. px:5.")
    out[name] = int(value)
  return out


def make_task(model):
  if model == "lenet":
    config = recipes.recipe_config("lenet_mnist")
    config.data.data_dir = FLAGS.data_dir
    try:
      load_dataset("mnist", FLAGS.data_dir)
    except (DatasetNotPreparedError, ImportError):  # ImportError: no tensorflow_datasets here.
      config.dataset = "synthetic"
      config.data.synthetic.update(dict(image_shape=(28, 28, 1), num_train=60000, num_test=100))
    spec = SPECS["mnist"]
  elif model == "resnet18":
    config = recipes.recipe_config("resnet18_cifar10")
    config.width = FLAGS.resnet_width
    config.dataset = "synthetic"
    config.data.synthetic.update(dict(image_shape=(32, 32, 3), num_train=2560, num_test=128))
    spec = SPECS["cifar10"]
  else:
    raise app.UsageError(f"--models: {model!r} is not one of lenet, resnet18.")
  config.prune.num_batches = FLAGS.num_batches
  config.prune.rounds = 0  # Criterion defaults; --rounds overrides are set per criterion.
  task = engine.build_task(config)
  task = dataclasses.replace(task, trainer=dataclasses.replace(task.trainer, spec=spec))
  return config, task


def timed(fn):
  t = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - t


def markdown(rows):
  lines = ["| model | criterion | rounds | with compilation | scoring | ratio to SNIP |", "|---|---|---|---|---|---|"]
  snip = {r["model"]: r["scoring_s"] for r in rows if r.get("criterion") == "snip"}
  for r in rows:
    if "criterion" not in r:
      continue
    rounds = str(r["rounds"])
    scoring = f"{r['scoring_s']:.3g} s"
    if r["rounds"] != r["default_rounds"]:
      rounds = f"{r['rounds']} of {r['default_rounds']}"
      scoring += f" (all {r['default_rounds']}: ~{r['estimated_full_s']:.3g} s)"
    ratio = f"{r['estimated_full_s'] / snip[r['model']]:.3g}x" if r["model"] in snip else "-"
    lines.append(f"| {r['model']} | {r['criterion']} | {rounds} | {r['with_compile_s']:.3g} s | {scoring} | {ratio} |")
  return "\n".join(lines)


def main(argv):
  del argv
  names, overrides = criterion_list(), round_overrides()
  rows = []
  for model in FLAGS.models:
    config, task = make_task(model)
    states = engine.init_states(config, task)
    for name in names:
      default = criteria.get(name).rounds
      config.prune.rounds = overrides.get(name, 0) if overrides.get(name, default) != default else 0
      rounds = prune_spec.from_config(config, name, density=0.02).num_rounds
      prune = lambda: runs.prune_states(prune_spec.from_config(config, name, density=1.0 - 0.98), task, states)  # Compiled once per task.
      _, first = timed(prune)
      second = float(np.median([timed(prune)[1] for _ in range(max(1, FLAGS.repeats))]))
      full = second * default / rounds
      rows.append({"model": model, "width": float(config.width), "criterion": name, "rounds": rounds,
                   "default_rounds": default, "with_compile_s": first, "scoring_s": second,
                   "estimated_full_s": full})
      note = f"  (all {default} rounds: ~{full:.2f} s)" if rounds != default else ""
      print(f"{model:9s} {name:10s} rounds {rounds:3d}  with compilation {first:7.2f} s   "
            f"scoring {second:7.2f} s{note}", flush=True)
    if "grasp" not in names:
      continue
    # GraSP's cost in gradient evaluations over its own samples.
    trainer = task.trainer
    state = jax.tree.map(lambda x: x[0], states)
    ms = pruning.model_state(trainer, state.batch_stats)
    data = criteria.PruneData(task.train_images, task.train_labels)
    batches = saliency.grasp_batches(data, jax.random.PRNGKey(0), config.prune, trainer.spec.num_classes)
    grad = jax.jit(lambda p: base.accumulated_gradient(ms, p, state.masks, data, batches, "mean", 200.0))
    hvp = jax.jit(lambda p: saliency.hessian_gradient_product(ms, p, state.masks, data, batches, 200.0))
    timed(lambda: grad(state.params)), timed(lambda: hvp(state.params))
    _, g_s = timed(lambda: grad(state.params))
    _, h_s = timed(lambda: hvp(state.params))
    rows.append({"model": model, "grasp_cost_in_gradients": h_s / g_s})
    print(f"{model:9s} GraSP (g and Hg) = {h_s / g_s:.2f} gradient evaluations ({h_s:.3f} s vs {g_s:.3f} s)",
          flush=True)
  print("\n" + markdown(rows), flush=True)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
