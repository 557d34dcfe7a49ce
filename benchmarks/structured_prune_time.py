"""Pruning time of structured vs unstructured masks on ResNet-18 (CIFAR, width 1): python benchmarks/structured_prune_time.py

asj.prune at sparsity 0.5, the stem (27 inputs) and the head (10 outputs) left dense for every structure,
median of 3 compiled calls; magnitude (the mask step alone) and SynFlow with 10 rounds. BENCHMARKS.md has the table.
"""
import time
import jax, jax.numpy as jnp, numpy as np
import autosparse_jax as asj
from autosparse_jax import masks
from autosparse_jax.models import get_model
model = get_model("resnet18", 10)
v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
params = v["params"]
apply_fn = lambda p, x: model.apply({"params": p, "batch_stats": v["batch_stats"]}, x, train=False)
# The 3-channel stem (27 inputs) cannot be 2:4: every structure prunes the same leaves, the stem left dense.
prunable = lambda name, leaf: masks.default_prunable(name, leaf) and not name.startswith(("stem_conv/", "head/"))
n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
print("ResNet-18 params", n)
rows = []
for crit, extra in (("magnitude", {}), ("synflow", {"input_shape": (1, 32, 32, 3), "rounds": 10})):
  for structure in ("unstructured", "2:4", "block:4x4", "channel"):
    kw = dict(sparsity=0.5, structure=structure, prunable=prunable, apply_fn=apply_fn, **extra)
    jax.block_until_ready(asj.prune(crit, params, **kw))
    times = []
    for _ in range(3):
      t = time.perf_counter(); jax.block_until_ready(asj.prune(crit, params, **kw)); times.append(time.perf_counter() - t)
    rows.append((crit, structure, float(np.median(times))))
base = {}
for crit, structure, s in rows:
  base.setdefault(crit, s)
  print(f"| {crit} | {structure} | {s:.3f} s | {s / base[crit]:.2f}x |")
