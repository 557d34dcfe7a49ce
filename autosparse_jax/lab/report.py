"""Tables and figures of a sweep: mean +- std over seeds, accuracy vs sparsity, layer densities.

Input is the list of results.jsonl rows (one per trained network); everything
here is a pure function of those rows, so a table can be rebuilt from any
sweep's results.jsonl:  python -m autosparse_jax.lab.report WORKDIR
The std is numpy's default (population, ddof=0) over seeds, as in results.json.
"""
import csv
import io
import os
import sys

import numpy as np

from autosparse_jax import artefacts
from autosparse_jax.artefacts import read_jsonl

DENSE = "dense"  # The criterion label of unpruned networks in rows and tables.
ROWS = "results.jsonl"  # A sweep's rows, one JSON line per trained network.


def aggregate(rows):
  """[{criterion, sparsity, n, mean, std, seeds}] of test accuracy, in first-seen order."""
  groups = {}
  for r in rows:
    groups.setdefault((r["criterion"], float(r["sparsity"])), []).append(r)
  out = []
  for (criterion, sparsity), group in groups.items():
    group = sorted(group, key=lambda r: r["seed"])
    acc = np.asarray([r["test_accuracy"] for r in group], np.float64)
    out.append({"criterion": criterion, "sparsity": sparsity, "n": len(group),
                "mean": float(acc.mean()), "std": float(acc.std()),
                "seeds": [r["seed"] for r in group], "density": float(np.mean([r["density"] for r in group]))})
    if all("inference_flops" in r for r in group):  # Rows of this version: what the masks cost.
      out[-1].update(inference_flops=float(np.mean([r["inference_flops"] for r in group])),
                     inference_flops_dense=float(group[0]["inference_flops_dense"]),
                     bytes=dict(group[0]["bytes"]), structure=group[0].get("structure", "unstructured"))
    if all("training_flops_total" in r for r in group):  # The whole run's training FLOPs (RigL's accounting).
      out[-1].update(training_flops_total=float(np.mean([r["training_flops_total"] for r in group])),
                     training_flops_total_dense=float(np.mean([r["training_flops_total_dense"] for r in group])),
                     sparse_training=group[0].get("sparse_training", "static"))
  return out


def training_flops_markdown(table):
  """Criteria x sparsities: each run's training FLOPs relative to the same steps trained dense (RigL's
  accounting: forward f, backward 2f; a changing-mask method pays for its updates)."""
  rows = [t for t in table if "training_flops_total" in t and t["criterion"] != DENSE]
  if not rows:
    return ""
  cells = {(t["criterion"], t["sparsity"]): t for t in rows}
  sparsities, names = sparsity_order(rows), criteria_order(rows)
  lines = ["training FLOPs of the run relative to dense (x; forward f + backward 2f per example and step, "
           "dynamic_sparsity.py)", "",
           "| criterion | masks while training | " + " | ".join(f"{100 * s:g}%" for s in sparsities) + " |",
           "|---|---|" + "---|" * len(sparsities)]
  for n in names:
    method = next(t["sparse_training"] for t in rows if t["criterion"] == n)
    row = [f"{cells[(n, s)]['training_flops_total'] / cells[(n, s)]['training_flops_total_dense']:.3f}"
           if (n, s) in cells else "" for s in sparsities]
    lines.append(f"| {n} | {method} | " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def training_flops_differ(table):
  """Whether some sparsity's criteria differ in training FLOPs (else the figure would repeat the sparsity one)."""
  return _differs(table, lambda t: round(t["training_flops_total"] / t["training_flops_total_dense"], 6)
                  if "training_flops_total" in t else None)


def plot_accuracy_vs_training_flops(table, path, title="", styles=None):
  """Test accuracy against the run's training FLOPs relative to dense (log scale), one line per criterion."""
  _plot_accuracy_against(table, path, lambda t: t["training_flops_total"] / t["training_flops_total_dense"]
                         if "training_flops_total" in t else None,
                         "training FLOPs of the run / dense (RigL's accounting)", title, styles)


def plot_accuracy_vs_flops(table, path, title="", styles=None):
  """Test accuracy against inference FLOPs per example (log scale), one line per criterion."""
  _plot_accuracy_against(table, path, lambda t: t.get("inference_flops"),
                         "inference FLOPs per example (masked kernels)", title, styles)


def _plot_accuracy_against(table, path, x, xlabel, title, styles):
  """Test accuracy against x(row) (log scale; None: no value), one line per criterion, dense as a line."""
  plt = _pyplot()
  styles = styles or criterion_styles(criteria_order(table))
  fig, ax = plt.subplots(figsize=(7.5, 5))
  for name in criteria_order(table):
    pts = sorted((t for t in table if t["criterion"] == name and x(t) is not None), key=x)
    if pts and name != DENSE:
      ax.errorbar([x(t) for t in pts], [100 * t["mean"] for t in pts], yerr=[100 * t["std"] for t in pts],
                  ms=6, capsize=3, label=name, **styles[name])
    elif pts:
      ax.axhline(100 * pts[0]["mean"], color="black", ls="--", lw=1, label="dense")
  ax.set_xscale("log")
  ax.set_xlabel(xlabel, fontsize=11)
  ax.set_ylabel("test accuracy (%)", fontsize=11)
  ax.set_title(title, fontsize=11)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=9)
  fig.tight_layout()
  artefacts.save_figure(fig, path, dpi=120)
  plt.close(fig)


MARKERS = "osD^vPX*h<>p"


def criterion_styles(names):
  """{criterion: matplotlib style} for every figure of a run: one colour and one marker per criterion,
  dense black and dashed (the same criterion looks the same in every figure)."""
  import matplotlib
  colours = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"].colors
  pruned = [n for n in names if n != DENSE]
  out = {name: {"color": colours[i % len(colours)], "marker": MARKERS[i % len(MARKERS)]}
         for i, name in enumerate(pruned)}
  out[DENSE] = {"color": "black", "marker": "", "ls": "--"}
  return out


def flops_differ(table):
  """Whether some sparsity's criteria differ in inference FLOPs (else the FLOPs figure would repeat the
  sparsity figure: on an MLP every unstructured mask of one density costs the same)."""
  return _differs(table, lambda t: round(t["inference_flops"]) if "inference_flops" in t else None)


def _differs(table, value):
  """Whether the pruned rows of some sparsity take more than one value(row) (None: no value)."""
  by_sparsity = {}
  for t in table:
    if t["criterion"] != DENSE and value(t) is not None:
      by_sparsity.setdefault(t["sparsity"], set()).add(value(t))
  return any(len(values) > 1 for values in by_sparsity.values())


def criteria_order(table):
  names = []
  for t in table:
    if t["criterion"] not in names:
      names.append(t["criterion"])
  return sorted(names, key=lambda n: n != DENSE)  # Dense first, then the sweep's order.


def sparsity_order(table):
  return sorted({t["sparsity"] for t in table if t["criterion"] != DENSE})


def to_csv(table):
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(["criterion", "sparsity", "seeds", "mean_test_accuracy", "std_test_accuracy", "density"])
  for t in table:
    writer.writerow([t["criterion"], f"{t['sparsity']:g}", t["n"], f"{t['mean']:.6f}", f"{t['std']:.6f}",
                     f"{t['density']:.6f}"])
  return buf.getvalue()


COST_NOTE = (
    "What each column compares: MFLOPs are the inference FLOPs per example of the masked network (the "
    "dense network's in brackets); bytes are the weights stored dense (every value), as values + "
    "bitmask (the kept values plus 1 bit per prunable weight saying where they are: the size of a sparse "
    "format, which beats dense once about 1/32 of 32-bit weights are pruned, and exceeds it by the "
    "mask's bits when nothing is pruned, as in the dense row) and, for N:M structures, N:M compressed "
    "(kept values + their indices in each group). Rows whose costs are equal are merged (criteria listed together).")


def cost_markdown(table):
  """What each criterion x sparsity's masks cost: inference FLOPs per example and bytes stored; rows of
  equal cost merged (on an MLP every unstructured mask of one density costs the same)."""
  rows = [t for t in table if "inference_flops" in t]
  if not rows:
    return ""
  merged = {}
  for t in rows:
    b = t["bytes"]
    key = (t["sparsity"], t["structure"], round(t["inference_flops"]), round(t["inference_flops_dense"]),
           b["dense"], b["bitmask"], b.get("nm") or "")
    merged.setdefault(key, []).append(t["criterion"])
  lines = ["inference FLOPs per example and bytes of the weights (masked kernels; sparse_cost.py)", "",
           COST_NOTE, "",
           "| criteria | sparsity | structure | inference MFLOPs (dense) | bytes dense | values + bitmask | "
           "N:M compressed |", "|---|---|---|---|---|---|---|"]
  for (sparsity, structure, flops, flops_dense, dense, bitmask, nm), names in merged.items():
    lines.append(f"| {', '.join(names)} | {100 * sparsity:g}% | {structure} | "
                 f"{flops / 1e6:.3f} ({flops_dense / 1e6:.3f}) | {dense:,} | {bitmask:,} | "
                 f"{f'{nm:,}' if nm != '' else ''} |")
  return "\n".join(lines) + "\n"


def to_markdown(table):
  """Criteria x sparsities, test accuracy in % as mean +- std; the best mean per column in bold."""
  cells = {(t["criterion"], t["sparsity"]): t for t in table}
  sparsities = sparsity_order(table)
  names = criteria_order(table)
  best = {}
  for s in sparsities:
    means = [cells[(n, s)]["mean"] for n in names if (n, s) in cells]
    best[s] = max(means) if means else None
  seeds = sorted({t["n"] for t in table})
  lines = [f"test accuracy (%), mean ± std over {'/'.join(map(str, seeds))} seeds", "",
           "| criterion | " + " | ".join(f"{100 * s:g}%" for s in sparsities) + " |",
           "|---|" + "---|" * len(sparsities)]
  for n in names:
    if n == DENSE:
      dense = [t for t in table if t["criterion"] == DENSE][0]
      text = f"{100 * dense['mean']:.2f} ± {100 * dense['std']:.2f}"
      lines.append(f"| dense (0%) | " + " | ".join(text for _ in sparsities) + " |")
      continue
    row = []
    for s in sparsities:
      t = cells.get((n, s))
      if t is None:
        row.append("")
        continue
      text = f"{100 * t['mean']:.2f} ± {100 * t['std']:.2f}"
      row.append(f"**{text}**" if t["mean"] == best[s] else text)
    lines.append(f"| {n} | " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def parse_markdown(text):
  """{(criterion, sparsity): (mean %, std %)} from to_markdown's output (for checks)."""
  text = text.split("\n\ninference FLOPs per example")[0].split("\n\ntraining FLOPs of the run")[0]  # Accuracy only.
  lines = [l for l in text.splitlines() if l.startswith("|")]
  header = [c.strip() for c in lines[0].strip("|").split("|")][1:]
  sparsities = [float(h.rstrip("%")) / 100 for h in header]
  out = {}
  for line in lines[2:]:
    cells = [c.strip() for c in line.strip("|").split("|")]
    name = "dense" if cells[0].startswith("dense") else cells[0]
    for s, cell in zip(sparsities, cells[1:]):
      if cell:
        mean, std = cell.strip("*").split(" ± ")
        out[(name, 0.0 if name == "dense" else s)] = (float(mean), float(std))
  return out


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")  # Files only: works on headless hosts.
  import matplotlib.pyplot as plt
  return plt


def plot_accuracy(table, path, title="", styles=None):
  """Accuracy vs sparsity with error bars (std over seeds) per criterion: paper Figures 3 and 6.

  Left: every criterion; right: the same zoomed on the leading ones (collapsed
  criteria otherwise squash the differences that matter into one line).
  """
  plt = _pyplot()
  styles = styles or criterion_styles(criteria_order(table))
  sparsities = sparsity_order(table)
  x = np.arange(len(sparsities))
  fig, axes = plt.subplots(1, 2, figsize=(13, 5))
  for ax in axes:
    for name in criteria_order(table):
      pts = [t for t in table if t["criterion"] == name]
      if name == DENSE:
        ax.axhline(100 * pts[0]["mean"], color="black", ls="--", lw=1, label="dense")
        continue
      pts = sorted(pts, key=lambda t: t["sparsity"])
      xs = [sparsities.index(t["sparsity"]) for t in pts]
      ax.errorbar(xs, [100 * t["mean"] for t in pts], yerr=[100 * t["std"] for t in pts],
                  ms=6, capsize=3, label=name, **styles[name])
    ax.set_xticks(x, [f"{100 * s:g}%" for s in sparsities], fontsize=10)
    ax.set_xlabel("sparsity", fontsize=11)
    ax.set_ylabel("test accuracy (%)", fontsize=11)
    ax.grid(alpha=0.3)
  pruned = [t for t in table if t["criterion"] != DENSE]
  top = max(100 * t["mean"] for t in table)
  best_hardest = max(100 * t["mean"] for t in pruned if t["sparsity"] == sparsities[-1])
  axes[1].set_ylim(best_hardest - 4.0, top + 0.5)
  axes[0].set_title(title)
  axes[1].set_title("zoomed on the leading criteria")
  axes[0].legend(fontsize=9, ncol=2)
  fig.tight_layout()
  artefacts.save_figure(fig, path, dpi=120)
  plt.close(fig)


def plot_layer_density(rows, path, styles=None):
  """Per-layer density of each criterion's masks (mean over seeds), one panel per sparsity."""
  plt = _pyplot()
  pruned = [r for r in rows if r["criterion"] != DENSE]
  sparsities = sorted({float(r["sparsity"]) for r in pruned})
  names = criteria_order([{"criterion": r["criterion"]} for r in pruned])
  styles = styles or criterion_styles(names)
  layers = list(pruned[0]["layer_density"])
  labels = [l.split("/")[0] for l in layers]
  width = max(4.5, 0.35 * len(layers) + 2)  # Room for every layer's name at a readable size.
  fig, axes = plt.subplots(1, len(sparsities), figsize=(width * len(sparsities), 5), squeeze=False)
  for ax, s in zip(axes[0], sparsities):
    for name in names:
      group = [r for r in pruned if r["criterion"] == name and float(r["sparsity"]) == s]
      if group:
        dens = [np.mean([r["layer_density"][layer] for r in group]) for layer in layers]
        ax.plot(range(len(layers)), np.maximum(dens, 1e-5), ms=5, label=name, **styles[name])
    ax.set_yscale("log")
    ax.set_title(f"sparsity {100 * s:g}%", fontsize=11)
    ax.set_xlabel("layer", fontsize=11)
    ax.set_xticks(range(len(layers)), labels, rotation=60 if len(layers) > 4 else 0, ha="right"
                  if len(layers) > 4 else "center", fontsize=9)
    ax.tick_params(axis="y", labelsize=9)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("layer density (kept fraction)", fontsize=11)
  axes[0][-1].legend(fontsize=9)
  fig.tight_layout()
  artefacts.save_figure(fig, path, dpi=120)
  plt.close(fig)


def write_sweep_report(rows, directory, title=""):
  """table.csv, table.md and the two figures in `directory` (None: compute only)."""
  table = aggregate(rows)
  markdown = to_markdown(table)
  # The training FLOPs table only where methods differ in them (static masks of one density cost the same).
  for extra in (training_flops_markdown(table) if training_flops_differ(table) else "", cost_markdown(table)):
    if extra:
      markdown = markdown.rstrip("\n") + "\n\n" + extra
  files = {}
  if directory:
    for name, text in (("table.csv", to_csv(table)), ("table.md", markdown)):
      files[name] = os.path.join(directory, name)
      artefacts.write_text(files[name], text)
    styles = criterion_styles(criteria_order(table))  # One look per criterion in every figure.
    files["accuracy_vs_sparsity.png"] = os.path.join(directory, "accuracy_vs_sparsity.png")
    plot_accuracy(table, files["accuracy_vs_sparsity.png"], title, styles)
    if flops_differ(table):  # Else it would repeat the sparsity figure.
      files["accuracy_vs_flops.png"] = os.path.join(directory, "accuracy_vs_flops.png")
      plot_accuracy_vs_flops(table, files["accuracy_vs_flops.png"], title, styles)
    if training_flops_differ(table):  # Methods that train with other FLOPs than their final masks'.
      files["accuracy_vs_training_flops.png"] = os.path.join(directory, "accuracy_vs_training_flops.png")
      plot_accuracy_vs_training_flops(table, files["accuracy_vs_training_flops.png"], title, styles)
    if any(r["criterion"] != DENSE for r in rows):
      files["layer_density.png"] = os.path.join(directory, "layer_density.png")
      plot_layer_density(rows, files["layer_density.png"], styles)
  return {"table": table, "markdown": markdown, "files": files}


def main(argv):
  """Rebuilds the table and figures of a sweep workdir from its results.jsonl."""
  if len(argv) != 2:
    print("usage: python -m autosparse_jax.lab.report SWEEP_WORKDIR", file=sys.stderr)
    return 2
  rows = read_jsonl(os.path.join(argv[1], ROWS))
  if not rows:
    print(f"error: {argv[1]}/{ROWS} holds no rows", file=sys.stderr)
    return 2
  title = f"{os.path.basename(os.path.abspath(argv[1]))}, {rows[-1].get('epochs', '?')} epochs"
  print(write_sweep_report(rows, argv[1], title)["markdown"])
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
