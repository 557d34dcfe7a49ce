"""The structured_reproduction table: python benchmarks/structured_table.py PIPELINE_WORKDIR OUT_DIR CHANNEL_STAGE_WORKDIR

Accuracy per criterion x setting from the stages' results.jsonl, the cost of each setting (training FLOPs
recomputed from SNIP's seed-0 masks at batch 128) and each setting's ranking (results/lenet_mnist_structured).
"""
import json, os, sys
import numpy as np
root, out = sys.argv[1], sys.argv[2]
settings = [("unstructured", 0.5, "unstructured 50%"), ("nm_2_4", 0.5, "2:4 (50%)"),
            ("unstructured", 0.75, "unstructured 75%"), ("nm_1_4", 0.75, "1:4 (75%)"),
            ("channel", 0.5, "channel 50%"), ("channel", 0.75, "channel 75%")]
rows = {}
stage_dirs = {"unstructured": os.path.join(root, "unstructured"), "nm_2_4": os.path.join(root, "nm_2_4"),
              "nm_1_4": os.path.join(root, "nm_1_4"), "channel": sys.argv[3]}
for stage in ("unstructured", "nm_2_4", "nm_1_4", "channel"):
  for line in open(os.path.join(stage_dirs[stage], "results.jsonl")):
    r = json.loads(line)
    rows.setdefault((stage, r["criterion"], float(r["sparsity"])), []).append(r)
criteria = ["random", "magnitude", "snip", "grasp", "synflow", "synflow_l2", "autos"]
lines = ["test accuracy (%), mean ± std over 3 seeds (LeNet-300-100 / MNIST, 20 epochs)", "",
         "| criterion | " + " | ".join(s[2] for s in settings) + " |", "|---|" + "---|" * len(settings)]
best = {}
for st, sp, label in settings:
  best[label] = max(np.mean([r["test_accuracy"] for r in rows[(st, c, sp)]]) for c in criteria)
ranks = {}
for c in criteria:
  cells = []
  for st, sp, label in settings:
    acc = np.asarray([r["test_accuracy"] for r in rows[(st, c, sp)]]) * 100
    text = f"{acc.mean():.2f} ± {acc.std():.2f}"
    cells.append(f"**{text}**" if abs(acc.mean() / 100 - best[label]) < 1e-12 else text)
  lines.append(f"| {c} | " + " | ".join(cells) + " |")
dense = [json.loads(l) for l in open(os.path.join(root, "unstructured", "results.jsonl")) if json.loads(l)["criterion"] == "dense"]
acc = np.asarray([r["test_accuracy"] for r in dense]) * 100
lines.append(f"| dense | {acc.mean():.2f} ± {acc.std():.2f} (all settings) |" + " |" * (len(settings) - 1))
lines += ["", "cost per example and bytes of the weights (seed 0's masks; every criterion's masks cost the same in a setting)", "",
          "| setting | inference MFLOPs per example | training MFLOPs per step (batch 128; SNIP's masks, seed 0) | bytes dense | values + bitmask | N:M compressed |",
          "|---|---|---|---|---|---|"]
from autosparse_jax import prune_spec, pruning
from autosparse_jax.lab import config_tools, engine, runs
from autosparse_jax.lab.runs import mask_cost
pipeline = config_tools.load_config("structured_reproduction")
for st, sp, label in settings:
  r = rows[(st, "snip", sp)][0]
  b = r["bytes"]
  config = pipeline[st]
  config.data.data_dir = "/work/tfds"
  task = engine.build_task(config)
  states = runs.prune_states(prune_spec.from_config(config, "snip", density=1.0 - sp), task, engine.init_states(config, task))[0]
  c = mask_cost(task, states, int(config.train.batch_size), prune_spec.from_config(config, "snip", density=1.0 - sp).structure)[0]  # Seed 0, SNIP's masks.
  assert abs(c["inference_flops"] - r["inference_flops"]) < 1e-6 * r["inference_flops_dense"], (label, c, r)
  lines.append(f"| {label} | {r['inference_flops']/1e6:.3f} (dense {r['inference_flops_dense']/1e6:.3f}) | "
               f"{c['training_flops']/1e6:.1f} (dense {c['training_flops_dense']/1e6:.1f}) | {b['dense']} | {b['bitmask']} | {b.get('nm', '')} |")
# Ranking under structure: per setting, the criteria ordered by mean accuracy.
lines += ["", "ranking (best first):", ""]
for st, sp, label in settings:
  order = sorted(criteria, key=lambda c: -np.mean([r["test_accuracy"] for r in rows[(st, c, sp)]]))
  lines.append(f"- {label}: " + " > ".join(order))
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "table.md"), "w").write("\n".join(lines) + "\n")
with open(os.path.join(out, "results.jsonl"), "w") as f:
  for (st, c, sp), rs in rows.items():
    for r in rs:
      f.write(json.dumps(dict(r, stage=st), sort_keys=True) + "\n")
print("\n".join(lines))
