"""Sparsity structure: masks of whole groups (N:M, blocks, channels) from any criterion's scores.

    structure     what is kept                                   unit of the keep counts
    unstructured  single weights (the default)                   weights
    N:M           at most N of every M consecutive weights        - (N per group, always)
                  along a kernel's input dimension
    block:RxC     R x C tiles of a kernel's 2-D view              blocks
    channel       whole output units (a conv filter, a Dense      channels
                  column)

A kernel's 2-D view is [inputs, outputs]: Flax / Haiku kernels keep their outputs
last (Dense (in, out), Conv (kh, kw, c_in, c_out): inputs = kh*kw*c_in in that
order, c_in fastest, the GEMM reduction dimension a GPU's 2:4 kernels group), and
PyTorch-layout leaves named `weight` (equinox, converted torch models) keep them
first ((out, in, kh, kw): inputs = in*kh*kw). N:M groups M consecutive inputs of
one output (NVIDIA's 2:4 semi-structured layout is exactly N=2, M=4 along K). A
layer whose inputs do not divide by M (or whose 2-D view does not divide into R x
C tiles) is refused with its name: leave it dense with `prunable=` (a 2:4 model
usually keeps its 3-channel stem dense).

Group scores are the criterion's scores reduced over each group's members
(`group_reduce`: sum, the default; mean; max); pruned members count 0 (sum, mean)
or nothing (max). Block and channel masks keep exactly round(density x groups)
groups under the distribution (global: over all layers' groups; layerwise: per
layer; ERK: the ERK layer densities of the weights, applied to each layer's groups),
by exact top-k with ties to the lower index, as unstructured masks do. N:M keeps
exactly N per group; iterative criteria prune to round(d_r x M) per group in round r,
ending at N.
"""
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import masks as masks_lib

UNSTRUCTURED = "unstructured"
GROUP_REDUCTIONS = ("sum", "mean", "max")
_PATTERN = re.compile(r"^(unstructured|channel|(\d+):(\d+)|block:(\d+)x(\d+))$")


@dataclasses.dataclass(frozen=True)
class Structure:
  kind: str          # unstructured | nm | block | channel
  n: int = 0         # N:M
  m: int = 0
  rows: int = 0      # block:RxC
  cols: int = 0

  @property
  def grouped(self):
    return self.kind in ("block", "channel")

  def __str__(self):
    return {"unstructured": UNSTRUCTURED, "channel": "channel", "nm": f"{self.n}:{self.m}",
            "block": f"block:{self.rows}x{self.cols}"}[self.kind]


def parse(text, field="structure"):
  """The Structure of 'unstructured', 'N:M' (e.g. '2:4'), 'block:RxC' (e.g. 'block:4x4') or 'channel'."""
  match = _PATTERN.match(str(text).strip()) if isinstance(text, str) else None
  if not match:
    raise ValueError(f"{field}={text!r} is not a sparsity structure: use 'unstructured', 'N:M' (e.g. '2:4', "
                     "'1:4'), 'block:RxC' (e.g. 'block:4x4') or 'channel'.")
  if match.group(1) in (UNSTRUCTURED, "channel"):
    return Structure(match.group(1))
  if match.group(2):
    n, m = int(match.group(2)), int(match.group(3))
    if not 0 < n < m:
      raise ValueError(f"{field}={text!r}: N:M needs 0 < N < M (e.g. '2:4' keeps 2 of every 4).")
    return Structure("nm", n=n, m=m)
  rows, cols = int(match.group(4)), int(match.group(5))
  if rows < 1 or cols < 1 or rows * cols < 2:
    raise ValueError(f"{field}={text!r}: blocks need R, C >= 1 and more than one weight (e.g. 'block:4x4').")
  return Structure("block", rows=rows, cols=cols)


def _outputs_first(name):
  """PyTorch-layout leaves (`weight`: (out, in, ...)) keep their outputs first; Flax kernels last."""
  parts = [p for p in name.split("/") if p not in ("value", "raw_value")]
  return bool(parts) and parts[-1].lower().startswith("weight")


def matrix(leaf, name):
  """The [inputs, outputs] 2-D view of a kernel (see the module docstring)."""
  if jnp.ndim(leaf) < 2:
    raise ValueError(f"layer {name} has shape {jnp.shape(leaf)}: a structure needs kernels of ndim >= 2.")
  if _outputs_first(name):
    return jnp.reshape(leaf, (leaf.shape[0], -1)).T
  return jnp.reshape(leaf, (-1, leaf.shape[-1]))


def unmatrix(view, shape, name):
  if _outputs_first(name):
    return jnp.reshape(view.T, shape)
  return jnp.reshape(view, shape)


def check_divisible(structure, name, shape):
  """ValueError naming the layer when its 2-D view does not split into the structure's groups."""
  if _outputs_first(name):
    outputs, inputs = shape[0], int(np.prod(shape[1:]))
  else:
    inputs, outputs = int(np.prod(shape[:-1])), shape[-1]
  if structure.kind == "nm" and inputs % structure.m:
    raise ValueError(f"structure {structure}: layer {name} has {inputs} inputs per output (shape {tuple(shape)}), "
                     f"not a multiple of M={structure.m}: leave it dense with prunable= (e.g. a regex without it) "
                     "or use another structure.")
  if structure.kind == "block" and (inputs % structure.rows or outputs % structure.cols):
    raise ValueError(f"structure {structure}: layer {name}'s [inputs, outputs] view is {inputs} x {outputs} "
                     f"(shape {tuple(shape)}), which does not tile into {structure.rows} x {structure.cols} blocks: "
                     "leave it dense with prunable= or pick a block size that divides it.")


def to_groups(leaf, name, structure):
  """[groups, members] of a kernel: N:M groups, blocks or output channels (see the module docstring)."""
  view = matrix(leaf, name)
  k, out = view.shape
  if structure.kind == "nm":
    m = structure.m
    return jnp.transpose(view.reshape(k // m, m, out), (0, 2, 1)).reshape(-1, m)
  if structure.kind == "block":
    r, c = structure.rows, structure.cols
    return jnp.transpose(view.reshape(k // r, r, out // c, c), (0, 2, 1, 3)).reshape(-1, r * c)
  return view.T  # channel: [outputs, inputs]


def from_groups(groups, name, shape, structure):
  """The kernel of `shape` whose to_groups are `groups` (the inverse)."""
  probe = matrix(jnp.zeros(shape, jnp.bool_), name)
  k, out = probe.shape
  if structure.kind == "nm":
    m = structure.m
    view = jnp.transpose(groups.reshape(k // m, out, m), (0, 2, 1)).reshape(k, out)
  elif structure.kind == "block":
    r, c = structure.rows, structure.cols
    view = jnp.transpose(groups.reshape(k // r, out // c, r, c), (0, 2, 1, 3)).reshape(k, out)
  else:
    view = groups.T
  return unmatrix(view, shape, name)


def group_scores(scores, alive, reduce):
  """[groups] scores of [groups, members] `scores`; pruned members count 0 (sum, mean) or nothing (max)."""
  s = jnp.asarray(scores)
  s = jnp.where(jnp.isnan(s), -jnp.inf, s) if jnp.issubdtype(s.dtype, jnp.floating) else s
  if reduce == "max":
    low = -jnp.inf if jnp.issubdtype(s.dtype, jnp.floating) else jnp.iinfo(s.dtype).min
    return jnp.max(jnp.where(alive, s, low), axis=1)
  total = jnp.sum(jnp.where(alive, s, jnp.zeros((), s.dtype)), axis=1)
  return total / s.shape[1] if reduce == "mean" else total


def group_counts(structure, masks):
  """{layer name: number of groups} of the prunable layers (checked for divisibility)."""
  out = {}
  for name, m in masks_lib.prunable_items(masks, masks):
    check_divisible(structure, name, m.shape)
    if structure.kind == "nm":
      out[name] = m.size // structure.m
    elif structure.kind == "block":
      out[name] = m.size // (structure.rows * structure.cols)
    else:
      out[name] = int(matrix(jnp.zeros(m.shape, jnp.bool_), name).shape[1])
  return out


def keep_plan(structure, masks, densities, distribution):
  """The keep counts of each round (density in `densities`) in the structure's unit.

  unstructured: weights (masks.keep_counts); block / channel: groups, [R] (global) or
  [R, layers]; N:M: [R] weights kept per group, round(d x M) (the last round's is N).
  """
  if structure.kind == UNSTRUCTURED:
    return np.stack([np.asarray(masks_lib.keep_counts(masks, float(d), distribution)) for d in densities])
  counts = group_counts(structure, masks)
  if structure.kind == "nm":
    return np.asarray([int(np.floor(float(d) * structure.m + 0.5)) for d in densities], np.int64)
  shapes = [m.shape for _, m in masks_lib.prunable_items(masks, masks)]
  units = np.asarray(list(counts.values()), np.int64)
  return np.stack([np.asarray(masks_lib.keep_counts_for(shapes, units, float(d), distribution))
                   for d in densities])


def masks_from_counts(structure, reduce, scores, masks, counts, min_per_layer=0):
  """Structured top-k masks for `counts` (from keep_plan); unstructured: masks.masks_from_counts."""
  if structure.kind == UNSTRUCTURED:
    return masks_lib.masks_from_counts(scores, masks, counts, min_per_layer)
  items = masks_lib.prunable_items(scores, masks)
  alive = [m for _, m in masks_lib.prunable_items(masks, masks)]
  grouped_alive = [to_groups(m, name, structure) for (name, _), m in zip(items, alive)]
  grouped_scores = [to_groups(s, name, structure) for (name, s), m in zip(items, alive)]
  if structure.kind == "nm":
    kept = []
    for g, a in zip(grouped_scores, grouped_alive):
      if jnp.issubdtype(g.dtype, jnp.floating):  # As masks.keep_order: NaN and pruned lowest.
        s = jnp.where(jnp.isnan(g) | ~a, -jnp.inf, g + 0.0)
      else:
        s = jnp.where(a, g, jnp.iinfo(g.dtype).min)
      order = jnp.argsort(s, axis=1, stable=True, descending=True)
      rank = jnp.argsort(order, axis=1, stable=True)
      kept.append((rank < counts) & a)
  else:
    names = [name for name, _ in items]
    gscores = {n: group_scores(g, a, reduce) for n, g, a in zip(names, grouped_scores, grouped_alive)}
    galive = {n: jnp.any(a, axis=1) for n, a in zip(names, grouped_alive)}
    gkeep = masks_lib.masks_from_counts(gscores, galive, counts, min_per_layer)
    kept = [gkeep[n][:, None] & a for n, a in zip(names, grouped_alive)]
  full = [from_groups(k, name, m.shape, structure) for k, (name, _), m in zip(kept, items, alive)]
  it = iter(full)
  return jax.tree.map(lambda m: next(it) if m.ndim > 0 else m, masks)


def compliance(structure, masks):
  """{layer: fraction of groups obeying the structure} (host numbers; 1.0 everywhere = compliant).

  N:M: a group keeps at most N; block / channel: a group is all kept or all pruned.
  """
  out = {}
  for name, m in masks_lib.prunable_items(masks, masks):
    if structure.kind == UNSTRUCTURED:
      out[name] = 1.0
      continue
    check_divisible(structure, name, m.shape)  # A named error, not a reshape's.
    g = np.asarray(to_groups(jnp.asarray(m), name, structure))
    ok = g.sum(axis=1) <= structure.n if structure.kind == "nm" else (g.all(axis=1) | ~g.any(axis=1))
    out[name] = float(ok.mean())
  return out
