"""PX's collapse on LeNet-300-100 / MNIST (results/lenet_mnist_criteria: one seed of three at 90% and
98%): our PX against the PX authors' code on the same theta_0 and pruning examples.

  # 1. ours (the project's venv): theta_0 of seeds 0-2 as configs/criteria_reproduction.py draws them,
  #    the PX masks of that sweep at 90% / 98% (100 rounds), written to WORK/ours.npz
  python benchmarks/px_collapse.py ours --work WORK --data_dir TFDS_DIR
  # 2. the authors' lib.pruners.PX (a torch venv; checkout checked as benchmarks/reference_scores.py
  #    does): their 100-round loop on the same theta_0 and examples -> WORK/authors.npz
  python benchmarks/px_collapse.py authors --work WORK --repo px=CHECKOUT
  # 3. the table: layer densities, kept weights per output class, classes left without a path
  python benchmarks/px_collapse.py compare --work WORK [--train]   (--train: 20 epochs of each mask)
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # This checkout's autosparse_jax, not an installed one.
SEEDS = (0, 1, 2)
SPARSITIES = (0.9, 0.98)
LAYERS = (("lin1", "Dense_0", (300, 784)), ("lin2", "Dense_1", (100, 300)), ("fc", "Dense_2", (10, 100)))


def ours(work, data_dir):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from autosparse_jax import keys, masks as masks_lib, prune_spec, pruning
  from autosparse_jax.lab import config_tools
  from autosparse_jax.criteria.base import ModelState, PruneData
  from autosparse_jax.criteria.pathkernel import first_per_class
  from autosparse_jax.data import load_dataset
  from autosparse_jax.models import get_model

  config = config_tools.load_config("criteria_reproduction")
  data = load_dataset("mnist", data_dir)
  train_x, train_y = data.train_images, data.train_labels
  model = get_model("lenet_300_100", 10)
  state = ModelState({}, model, data.spec)
  prune_data = PruneData(jnp.asarray(train_x), jnp.asarray(train_y, jnp.int32))
  out = {}
  for seed in SEEDS:
    params = model.init(keys.init_key(keys.seed_key(seed)), jnp.zeros((1, 28, 28, 1)), train=False)["params"]
    for name, flax_name, _ in LAYERS:
      out[f"s{seed}/theta/{name}.weight"] = np.asarray(params[flax_name]["kernel"]).T
      out[f"s{seed}/theta/{name}.bias"] = np.asarray(params[flax_name]["bias"])
    for sparsity in SPARSITIES:
      spec = prune_spec.from_config(config, criterion="px", density=1.0 - sparsity)
      masks = masks_lib.init_masks(params)
      plan = (spec).plan(masks)
      final, _, _ = jax.jit(lambda p, m, d, k, plan: pruning.prune_network(spec, p, m, state, d, k, plan))(
          params, masks, prune_data, keys.seed_key(seed), plan)
      for name, flax_name, _ in LAYERS:
        out[f"s{seed}/ours{int(sparsity * 100)}/{name}"] = np.asarray(final[flax_name]["kernel"]).T
      out[f"s{seed}/plan{int(sparsity * 100)}"] = np.asarray(plan)
  idx = np.asarray(first_per_class(prune_data.labels, spec.options.px_samples_per_class, 10))
  out["images"], out["labels"] = np.asarray(train_x)[idx], np.asarray(train_y)[idx]
  np.savez_compressed(os.path.join(work, "ours.npz"), **out)
  print("wrote", os.path.join(work, "ours.npz"))


def authors(work, repo):
  import reference_scores as rs  # The generator's checks and torch helpers.
  name, directory = repo.split("=", 1)
  assert name == "px"
  rs.check_checkout(name, os.path.abspath(directory))
  sys.path.insert(0, os.path.abspath(directory))
  os.chdir(directory)
  torch = rs.torch_setup()
  import numpy as np
  import torch.nn as nn
  import reference_nets as rn
  from globals import CONFIG
  import lib.layers as layers
  from lib.generator import masked_parameters
  from lib.pruners import PX

  f = dict(np.load(os.path.join(work, "ours.npz")))
  x = torch.from_numpy(rn.normalised_nchw(f["images"], "mnist"))
  y = torch.from_numpy(f["labels"].astype("int64"))

  class Labelled(torch.utils.data.TensorDataset):
    def __init__(self, x, y):
      super().__init__(x, y)
      self.targets = [int(v) for v in y]

  CONFIG.dataset, CONFIG.batch_size = "CIFAR10", len(y)
  CONFIG.experiment_args = {"examples_per_class": 10, "batch_limit": 1}
  loader = torch.utils.data.DataLoader(Labelled(x, y), batch_size=len(y), shuffle=False)
  out = {}
  for seed in SEEDS:
    for sparsity in SPARSITIES:
      model = rs.build_net("lenet", layers)
      rs.load(model, {k.split("/", 2)[2]: v for k, v in f.items() if k.startswith(f"s{seed}/theta/")})
      model.eval()
      pruner = PX(masked_parameters(model))
      kept = []
      for r in range(100):  # train_classification.py's loop.
        pruner.score(model, nn.CrossEntropyLoss(), loader, "cpu")
        pruner.mask((1 - sparsity) ** ((r + 1) / 100), "global")
        kept.append(int(pruner.stats()[0]))
      for layer, m in rs.read_masks(model, "lenet").items():
        out[f"s{seed}/authors{int(sparsity * 100)}/{layer}"] = m
      out[f"s{seed}/authors_kept{int(sparsity * 100)}"] = np.asarray(kept)
  np.savez_compressed(os.path.join(work, "authors.npz"), **out)
  print("wrote", os.path.join(work, "authors.npz"))


def ours_with_counts(f, seed, counts, data_dir):
  """Our PX masks (100 rounds) on seed's theta_0 and the same 100 examples, with per-round keep counts
  `counts` (the authors' recorded ones) instead of our schedule's."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from autosparse_jax import masks as masks_lib, prune_spec, pruning
  from autosparse_jax.lab import config_tools
  from autosparse_jax.criteria.base import ModelState, PruneData
  from autosparse_jax.data.specs import SPECS
  from autosparse_jax.models import get_model
  config = config_tools.load_config("criteria_reproduction")
  spec = prune_spec.from_config(config, criterion="px", density=1.0 - 0.9)
  params = {fn: {"kernel": jnp.asarray(f[f"s{seed}/theta/{n}.weight"].T), "bias": jnp.asarray(f[f"s{seed}/theta/{n}.bias"])}
            for n, fn, _ in LAYERS}
  state = ModelState({}, get_model("lenet_300_100", 10), SPECS["mnist"])
  data = PruneData(jnp.asarray(f["images"]), jnp.asarray(f["labels"], jnp.int32))  # Exactly the 100 examples.
  masks = masks_lib.init_masks(params)
  final, _, _ = pruning.prune_network(spec, params, masks, state, data, jax.random.PRNGKey(0),
                                   jnp.asarray(np.asarray(counts), jnp.int32))
  return {n: np.asarray(final[fn]["kernel"]).T for n, fn, _ in LAYERS}


def reach(masks):
  """Per output class: kept head weights, and whether any input-output path reaches it."""
  import numpy as np
  m1, m2, m3 = (masks[n].astype(np.float64) for n, _, _ in LAYERS)
  paths = m3 @ (m2 @ m1.sum(axis=1))  # Paths from the 784 inputs to each class.
  return m3.sum(axis=1).astype(int), paths


def train(theta, masks, data, epochs=20, seed=0):
  """Test accuracy of LeNet-300-100 with `masks` from `theta` after the sweep's recipe (Adam 1.2e-3,
  batch 128, coupled weight decay 5e-4, 20 epochs), a plain optax loop."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from autosparse_jax.data import pipeline
  from autosparse_jax.models import get_model
  model = get_model("lenet_300_100", 10)
  params = {fn: {"kernel": jnp.asarray(theta[f"{n}.weight"].T), "bias": jnp.asarray(theta[f"{n}.bias"])}
            for n, fn, _ in LAYERS}
  mask = {fn: {"kernel": jnp.asarray(masks[n].T), "bias": jnp.ones((), bool)} for n, fn, _ in LAYERS}
  params = jax.tree.map(lambda p, m: p * m, params, mask)
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.adam(1.2e-3))
  opt = tx.init(params)
  xtr, ytr, xte, yte = data.train_images, data.train_labels, data.test_images, data.test_labels

  @jax.jit
  def step(params, opt, x, y):
    def loss(p):
      logits = model.apply({"params": p}, pipeline.normalize(x, data.spec))
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    g = jax.grad(loss)(params)
    updates, opt = tx.update(g, opt, params)
    return jax.tree.map(lambda p, m: p * m, optax.apply_updates(params, updates), mask), opt

  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(len(ytr))
    for i in range(len(ytr) // 128):
      b = order[i * 128:(i + 1) * 128]
      params, opt = step(params, opt, xtr[b], ytr[b])
  logits = model.apply({"params": params}, pipeline.normalize(jnp.asarray(xte), data.spec))
  pred = np.asarray(jnp.argmax(logits, -1))
  return float((pred == yte).mean()), np.bincount(pred, minlength=10)


def compare(work, do_train, data_dir):
  import numpy as np
  ours_f, auth_f = dict(np.load(os.path.join(work, "ours.npz"))), dict(np.load(os.path.join(work, "authors.npz")))
  sweep = {}
  results = os.path.join(os.path.dirname(HERE), "results", "lenet_mnist_criteria", "results.jsonl")
  for line in open(results):
    r = json.loads(line)
    if r["criterion"] == "px":
      sweep[(r["seed"], r["sparsity"])] = r
  data = None
  if do_train:
    from autosparse_jax.data import load_dataset
    data = load_dataset("mnist", data_dir)
  rows = []
  for sparsity in SPARSITIES:
    for seed in SEEDS:
      tag = int(sparsity * 100)
      ours_m = {n: ours_f[f"s{seed}/ours{tag}/{n}"] for n, _, _ in LAYERS}
      auth_m = {n: auth_f[f"s{seed}/authors{tag}/{n}"] for n, _, _ in LAYERS}
      row = {"sparsity": sparsity, "seed": seed,
             "sweep_accuracy": sweep[(seed, sparsity)]["test_accuracy"],
             "sweep_layer_density": sweep[(seed, sparsity)]["layer_density"]}
      for who, m in (("ours", ours_m), ("authors", auth_m)):
        head, paths = reach(m)
        row[who] = {"layer_density": [round(float(m[n].mean()), 4) for n, _, _ in LAYERS],
                    "kept": int(sum(m[n].sum() for n, _, _ in LAYERS)),
                    "head_per_class": head.tolist(), "classes_without_path": np.flatnonzero(paths == 0).tolist()}
        if do_train:
          theta = {k.split("/", 2)[2]: v for k, v in ours_f.items() if k.startswith(f"s{seed}/theta/")}
          acc, counts = train(theta, m, data, seed=seed)
          row[who]["test_accuracy_20ep"] = acc
          row[who]["predicted_per_class"] = counts.tolist()
      row["entries_differing"] = int(sum((ours_m[n] != auth_m[n]).sum() for n, _, _ in LAYERS))
      same = ours_with_counts(ours_f, seed, auth_f[f"s{seed}/authors_kept{tag}"], data_dir)
      row["entries_differing_with_their_counts"] = int(sum((same[n] != auth_m[n]).sum() for n, _, _ in LAYERS))
      row["authors_kept_per_round_vs_plan"] = int(np.sum(auth_f[f"s{seed}/authors_kept{tag}"] !=
                                                      ours_f[f"s{seed}/plan{tag}"]))
      rows.append(row)
      print(json.dumps(row))
  with open(os.path.join(work, "compare.json"), "w") as f:
    json.dump(rows, f, indent=1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("stage", choices=("ours", "authors", "compare"))
  parser.add_argument("--work", required=True)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--repo", default=None)
  parser.add_argument("--train", action="store_true")
  args = parser.parse_args()
  os.makedirs(args.work, exist_ok=True)
  if args.stage == "ours":
    ours(args.work, args.data_dir)
  elif args.stage == "authors":
    authors(args.work, args.repo)
  else:
    compare(args.work, args.train, args.data_dir)


if __name__ == "__main__":
  main()
