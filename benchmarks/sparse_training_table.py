r"""The sparse-training results table and figure (issue 29): accuracy and training FLOPs per method x sparsity.

  python benchmarks/sparse_training_table.py \
    --new=results/lenet_mnist_sparse_training/results.jsonl \
    --old=results/lenet_mnist/results.jsonl --old_methods=dense,snip,synflow,autos,snip_iter,lth \
    --irp_config=mnist_reproduction --out=results/lenet_mnist_sparse_training

Reads result rows (the sweep's results.jsonl: one row per network) and writes OUT/table.md (test accuracy,
mean ± std over seeds, per method x sparsity; training FLOPs relative to dense training of the same steps;
the mean accuracy per unit of training FLOPs is not made up: every figure is a row's) and
OUT/accuracy_vs_training_flops.png (one colour + marker per method, error bars: std over seeds).

Training FLOPs follow RigL's accounting (Evci et al. 2020, appendix H: forward f, backward 2f per example):
rows written since issue 29 carry `training_flops_total` / `training_flops_total_dense`; older rows (the
static ones of results/lenet_mnist) get them computed here exactly, as the jobs do: 3 f_S x batch x steps,
with f_S = f_D - 2 x (pruned weights) (LeNet's Dense layers: each weight is one multiply-add per example;
checked against the SET rows, whose f_S asj.cost measured), f_D, the batch and the steps read from the new
rows. For IRP masks (criterion snip_iter / lth, --irp_config given) a second column adds the IRP that made
them, as RigL's paper counts LTH: every round's training (irp.rounds rounds of the config's IRP epochs at
that round's density, its schedule) plus the final retraining. Neither counts scoring passes (SNIP's
gradient over the training set: one dense pass, 1 / epochs of a dense run per scoring).
"""
import argparse
import collections
import json
import os

import numpy as np

ORDER = ("dense", "snip", "synflow", "autos", "snip_iter", "lth", "gmp", "set_layerwise", "set_erk",
         "rigl_layerwise", "rigl_erk", "snip_rigl", "rigl", "set")
FAMILY = {"dense": "dense", "snip": "pruning at init", "synflow": "pruning at init", "autos": "pruning at init",
          "random": "pruning at init", "magnitude": "pruning at init", "grasp": "pruning at init",
          "snip_iter": "IRP (20 trainings)", "lth": "IRP (20 trainings)", "gmp": "gradual (dense to sparse)",
          "set_layerwise": "dynamic sparse", "set_erk": "dynamic sparse", "rigl_layerwise": "dynamic sparse",
          "rigl_erk": "dynamic sparse", "snip_rigl": "dynamic sparse", "rigl": "dynamic sparse",
          "set": "dynamic sparse"}
STYLE = {  # One colour + marker per method.
    "dense": ("black", "*"), "snip": ("tab:blue", "o"), "synflow": ("tab:cyan", "v"), "autos": ("tab:purple", "D"),
    "snip_iter": ("tab:gray", "^"), "lth": ("tab:brown", "s"), "gmp": ("tab:red", "P"),
    "set_layerwise": ("tab:olive", "<"), "set_erk": ("gold", ">"), "rigl_layerwise": ("tab:green", "X"),
    "rigl_erk": ("lime", "h"), "snip_rigl": ("tab:pink", "p"), "rigl": ("tab:green", "X"), "set": ("gold", ">")}


def read(path, methods=None):
  rows = [json.loads(line) for line in open(path) if line.strip()]
  return [r for r in rows if methods is None or r["criterion"] in methods]


def accounting(new_rows):
  """f_D (forward FLOPs per example, dense), the training batch and the run's steps, from rows that carry them."""
  r = next(r for r in new_rows if "training_flops_total_dense" in r)
  f_dense = r["inference_flops_dense"]
  batch = r["training_flops_dense"] / (3.0 * f_dense)
  steps = r["training_flops_total_dense"] / r["training_flops_dense"]
  assert abs(batch - round(batch)) < 1e-6 and abs(steps - round(steps)) < 1e-6, (batch, steps)
  return f_dense, int(round(batch)), int(round(steps))


def sparse_forward(f_dense, total, kept):
  """f_S of a network whose every pruned weight would take one multiply-add per example (Dense layers)."""
  return f_dense - 2.0 * (total - kept)


def irp_flops(config_name, f_dense, total, steps_per_epoch):
  """FLOPs of the IRP stages of `config_name` (a pipeline with irp_snip / irp_lth): every round's training."""
  from autosparse_jax import masks as masks_lib, prune_spec
  from autosparse_jax.lab import config_tools
  pipeline = config_tools.load_config(config_name)
  out = {}
  for label, stage in (("snip_iter", "irp_snip"), ("lth", "irp_lth")):
    irp = pipeline[stage]
    densities = prune_spec.schedule(float(irp.irp.final_density), int(irp.irp.rounds), irp.irp.schedule)
    kept = [masks_lib.num_to_keep(float(d), total) for d in densities]
    steps = int(irp.train.epochs) * steps_per_epoch
    batch = int(irp.train.batch_size)
    first = 3.0 * f_dense * batch * steps if bool(irp.irp.train_first) else 0.0
    out[label] = {"flops": first + sum(3.0 * sparse_forward(f_dense, total, k) * batch * steps for k in kept),
                  "rounds": int(irp.irp.rounds), "epochs": int(irp.train.epochs), "schedule": irp.irp.schedule,
                  "final_density": float(irp.irp.final_density), "train_first": bool(irp.irp.train_first)}
  return out


def fill_flops(rows, f_dense, batch, steps, irp=None):
  """Adds training_flops_total(_dense) to rows that lack them (static masks) and irp_flops_total to IRP rows."""
  for r in rows:
    dense_total = 3.0 * f_dense * batch * steps
    if "training_flops_total" not in r:
      f_sparse = f_dense if r["criterion"] == "dense" else sparse_forward(f_dense, r["total"], r["kept"])
      r["training_flops_total"] = 3.0 * f_sparse * batch * steps
      r["training_flops_total_dense"] = dense_total
      r["training_flops_computed"] = True
    if irp and r["criterion"] in irp:
      r["irp_flops_total"] = irp[r["criterion"]]["flops"] + r["training_flops_total"]
  return rows


def check_formula(rows, f_dense):
  """f_D - 2 x pruned equals asj.cost's f_S on every new row that started from fixed-count masks (SET/RigL/static)."""
  checked = 0
  for r in rows:
    if r.get("sparse_training") in ("set", "rigl", "static") and "inference_flops" in r and r["criterion"] != "dense":
      expected = sparse_forward(f_dense, r["total"], r["kept"])
      assert abs(r["inference_flops"] - expected) <= 1e-6 * f_dense, (r["criterion"], r["inference_flops"], expected)
      checked += 1
  return checked


def gmp_estimate(rows, f_dense):
  """GMP's total re-estimated where the rows' count (every layer at the overall density: exact for LeNet's
  Dense layers, not for conv nets under global magnitude, which keeps more of the early, costlier layers)
  misses the final masks' real cost: each layer's pruned share taken to grow along the global schedule, so
  the removed FLOPs scale by (f_D - f_final) / (f_D - f_final under the uniform assumption). {label: ratio}."""
  out = {}
  for r in rows:
    if r.get("sparse_training") != "gmp" or "kept_macs" not in r:
      continue
    macs = r["kept_macs"] + (f_dense - r["inference_flops"]) / 2.0  # The prunable layers' dense multiply-adds.
    uniform = f_dense - 2.0 * macs * (1.0 - r["density"])
    if abs(uniform - r["inference_flops"]) <= 1e-6 * f_dense:
      continue
    dense_total, total = r["training_flops_total_dense"], r["training_flops_total"]
    estimate = dense_total - (dense_total - total) * (f_dense - r["inference_flops"]) / (f_dense - uniform)
    out.setdefault((r["criterion"], round(float(r["sparsity"]), 4)), []).append(
        (total / dense_total, estimate / dense_total, r["inference_flops"] / f_dense, uniform / f_dense))
  return out


def summarise(rows):
  groups = collections.defaultdict(list)
  for r in rows:
    groups[(r["criterion"], round(float(r["sparsity"]), 4))].append(r)
  out = {}
  for key, group in groups.items():
    acc = 100 * np.array([g["test_accuracy"] for g in group])
    rel = np.array([g["training_flops_total"] / g["training_flops_total_dense"] for g in group])
    irp = [g["irp_flops_total"] / g["training_flops_total_dense"] for g in group if "irp_flops_total" in g]
    out[key] = {"mean": acc.mean(), "std": acc.std(), "n": len(group), "flops": rel.mean(),
                "irp_flops": float(np.mean(irp)) if irp else None, "family": FAMILY.get(key[0], ""),
                "computed": any(g.get("training_flops_computed") for g in group),
                "seconds": float(np.mean([g.get("train_seconds_of_program", np.nan) for g in group]))}
  return out


def ordered(methods):
  return sorted(methods, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))


def table(summary, sparsities, title):
  methods = ordered({m for m, _ in summary})
  cell = lambda m, s: summary.get((m, s)) or summary.get((m, 0.0))  # Dense: one row for every column.
  best = {s: max(summary[(m, s)]["mean"] for m in methods if (m, s) in summary and m != "dense") for s in sparsities}
  head = " | ".join(f"{int(round(100 * s))}%" for s in sparsities)
  lines = [f"### {title}", "", "Test accuracy (%), mean ± std over seeds (final epoch); bold: best sparse method "
           "per column; *: within one std (the larger of the two) of the best.", "",
           f"| method | family | {head} |", "|---|---|" + "---|" * len(sparsities)]
  for m in methods:
    cells = []
    for s in sparsities:
      c = cell(m, s)
      if c is None:
        cells.append("")
        continue
      text = f"{c['mean']:.2f} ± {c['std']:.2f}"
      if m != "dense" and abs(c["mean"] - best[s]) < 1e-9:
        text = f"**{text}**"
      elif m != "dense":
        b = next(summary[(x, s)] for x in methods
                 if (x, s) in summary and abs(summary[(x, s)]["mean"] - best[s]) < 1e-9)
        if best[s] - c["mean"] <= max(b["std"], c["std"]):
          text += " *"
      cells.append(text)
    lines.append(f"| {m} | {FAMILY.get(m, '')} | " + " | ".join(cells) + " |")
  lines += ["", "Training FLOPs relative to dense training of the same steps (RigL's accounting); IRP rows: the "
            "final retraining, then (in brackets) with the IRP that found the masks.", "",
            f"| method | {head} |", "|---|" + "---|" * len(sparsities)]
  for m in methods:
    cells = []
    for s in sparsities:
      c = cell(m, s)
      if c is None:
        cells.append("")
        continue
      text = f"{c['flops']:.3f}"
      if c["irp_flops"] is not None:
        text += f" ({c['irp_flops']:.2f})"
      cells.append(text)
    lines.append(f"| {m} | " + " | ".join(cells) + " |")
  return lines


def figure(summary, sparsities, path, title):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7.5, 5))
  for m in ordered({m for m, _ in summary}):
    pts = [(s, summary[(m, s)]) for s in sparsities if (m, s) in summary] or [(0.0, summary[(m, 0.0)])]
    colour, marker = STYLE.get(m, ("k", "."))
    ax.errorbar([c["flops"] for _, c in pts], [c["mean"] for _, c in pts], yerr=[c["std"] for _, c in pts],
                color=colour, marker=marker, linestyle="-" if len(pts) > 1 else "none", capsize=3, label=m)
    irp = [(c["irp_flops"], c["mean"]) for _, c in pts if c["irp_flops"] is not None]
    if irp:
      ax.plot(*zip(*irp), color=colour, marker=marker, linestyle=":", fillstyle="none",
              label=f"{m} incl. its IRP")
  ax.set_xscale("log")
  ax.set_xlabel("training FLOPs / dense training FLOPs (log)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(title, fontsize=10)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--new", required=True, help="results.jsonl with training_flops_total (the sparse-training sweep)")
  p.add_argument("--old", default="", help="results.jsonl of an earlier sweep on the same recipe")
  p.add_argument("--old_methods", default="dense,snip,synflow,autos,snip_iter,lth")
  p.add_argument("--irp_config", default="", help="pipeline config whose irp_snip / irp_lth made the IRP masks")
  p.add_argument("--sparsities", default="0.9,0.95,0.98")
  p.add_argument("--out", required=True)
  p.add_argument("--name", default="table.md", help="file name of the table in --out")
  p.add_argument("--figure", default="accuracy_vs_training_flops.png")
  p.add_argument("--title", default="LeNet-300-100 / MNIST, 20 epochs, 3 seeds")
  args = p.parse_args()
  sparsities = [float(s) for s in args.sparsities.split(",")]
  new = read(args.new)
  f_dense, batch, steps = accounting(new)
  checked = check_formula(new, f_dense) if args.old else 0  # The formula holds for Dense layers (LeNet) only.
  old = read(args.old, set(args.old_methods.split(","))) if args.old else []
  keep = set(sparsities) | {0.0}
  old = [r for r in old if round(float(r["sparsity"]), 4) in keep]
  irp = None
  if args.irp_config:
    total = next(r["total"] for r in new)
    irp = irp_flops(args.irp_config, f_dense, total, steps // int(new[0]["epochs"]))
  rows = fill_flops(old, f_dense, batch, steps, irp) + fill_flops(new, f_dense, batch, steps)
  summary = summarise(rows)
  lines = table(summary, sparsities, args.title)
  notes = [f"f_D = {f_dense:.0f} forward FLOPs per example, batch {batch}, {steps} steps"
           + (f"; f_S = f_D - 2 x pruned weights checked on {checked} rows against asj.cost." if checked else ".")]
  if any(c["computed"] for c in summary.values()):
    notes.append("Rows without training_flops_total (" + ", ".join(ordered({m for (m, _), c in summary.items()
                 if c["computed"]})) + "): 3 f_S x batch x steps computed here.")
  if irp:
    for label, info in irp.items():
      notes.append(f"{label}'s IRP: {info['rounds']} rounds x {info['epochs']} epochs, schedule "
                   f"{info['schedule']} to density {info['final_density']}"
                   + (", after a dense training" if info["train_first"] else "")
                   + f": {info['flops'] / (3.0 * f_dense * batch * steps):.3f} x a dense run of {steps} steps.")
  for (label, sparsity), values in sorted(gmp_estimate(new, f_dense).items()):
    row, estimate, final, uniform = np.mean(values, axis=0)
    notes.append(f"{label} at {int(round(100 * sparsity))}%: the rows' training FLOPs ({row:.3f}) take every layer at "
                 f"the overall density, which puts its final masks at {uniform:.3f} of dense per example; they cost "
                 f"{final:.3f} (asj.cost). Scaled to that: about {estimate:.2f} of dense training (an estimate).")
  lines += [""] + [f"- {n}" for n in notes]
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, args.name), "w") as f:
    f.write("\n".join(lines) + "\n")
  figure(summary, sparsities, os.path.join(args.out, args.figure), args.title)
  print("\n".join(lines))


if __name__ == "__main__":
  main()
