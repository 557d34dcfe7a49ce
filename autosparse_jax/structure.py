"""Sparsity structure: masks of whole groups (N:M, blocks, channels) from any criterion's scores.

    structure     what is kept                                   unit of the keep counts
    unstructured  single weights (the default)                   weights
    N:M           at most N of every M consecutive weights        - (N per group, always)
                  along a kernel's input dimension
    block:RxC     R x C tiles of a kernel's 2-D view              blocks
    channel       whole output units (a conv filter, a Dense      channels
                  column)

Each is a value (Unstructured, NByM, Block, Channel) parsed once from its text by
`parse`; it owns its group view, its keep counts (`plan`), its top-k (`masks_from_counts`)
and its compliance check, so nothing outside this module branches on which one it is.

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

GROUP_REDUCTIONS = ("sum", "mean", "max")
_PATTERN = re.compile(r"^(unstructured|channel|(\d+):(\d+)|block:(\d+)x(\d+))$")


def _outputs_first(name):
  """PyTorch-layout leaves (`weight`: (out, in, ...)) keep their outputs first; Flax kernels last."""
  parts = [p for p in name.split("/") if p not in ("value", "raw_value")]
  return bool(parts) and parts[-1].lower().startswith("weight")


def _inputs_outputs(name, shape):
  if _outputs_first(name):
    return int(np.prod(shape[1:])), shape[0]
  return int(np.prod(shape[:-1])), shape[-1]


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


def group_scores(scores, alive, reduce):
  """[groups] scores of [groups, members] `scores`; pruned members count 0 (sum, mean) or nothing (max)."""
  s = jnp.asarray(scores)
  s = jnp.where(jnp.isnan(s), -jnp.inf, s) if jnp.issubdtype(s.dtype, jnp.floating) else s
  if reduce == "max":
    low = -jnp.inf if jnp.issubdtype(s.dtype, jnp.floating) else jnp.iinfo(s.dtype).min
    return jnp.max(jnp.where(alive, s, low), axis=1)
  total = jnp.sum(jnp.where(alive, s, jnp.zeros((), s.dtype)), axis=1)
  return total / s.shape[1] if reduce == "mean" else total


class Structure:
  """What a mask keeps together. Subclasses define the groups; this class the shared machinery."""
  single_weights = False  # Keep counts are in weights and a weight may go on its own.

  def check_density(self, density, field="structure", density_field="sparsity"):
    """ValueError when the structure cannot end at `density` (only N:M fixes it)."""

  def check_layer(self, name, shape):
    """ValueError naming the layer when its 2-D view does not split into this structure's groups."""
    if len(shape) < 2:
      raise ValueError(f"layer {name} has shape {tuple(shape)}: a structure needs kernels of ndim >= 2.")

  def check_layers(self, masks):
    for name, m in masks_lib.prunable_items(masks, masks):
      self.check_layer(name, m.shape)

  def nm(self):
    """(N, M) when every group keeps at most N of M weights (compact N:M storage), else None."""
    return None

  def to_groups(self, leaf, name):
    """[groups, members] of a kernel."""
    raise NotImplementedError

  def from_groups(self, groups, name, shape):
    """The kernel of `shape` whose to_groups are `groups` (the inverse)."""
    raise NotImplementedError

  def plan(self, masks, densities, distribution):
    """The keep counts of each round (density in `densities`): [R] (global) or [R, layers]."""
    raise NotImplementedError

  def masks_from_counts(self, reduce, scores, masks, counts, min_per_layer=0):
    """Top-k masks for `counts` (a row of plan), nested in `masks`, ties to the lower index."""
    raise NotImplementedError

  def group_ok(self, groups):
    """[groups] bool: the group obeys the structure."""
    raise NotImplementedError

  def compliance(self, masks):
    """{layer: fraction of groups obeying the structure} (host numbers; 1.0 everywhere = compliant)."""
    out = {}
    for name, m in masks_lib.prunable_items(masks, masks):
      self.check_layer(name, m.shape)  # A named error, not a reshape's.
      out[name] = float(np.asarray(self.group_ok(np.asarray(self.to_groups(jnp.asarray(m), name)))).mean())
    return out

  def _apply_groups(self, kept, items, alive, masks):
    full = [self.from_groups(k, name, m.shape) for k, (name, _), m in zip(kept, items, alive)]
    it = iter(full)
    return jax.tree.map(lambda m: next(it) if m.ndim > 0 else m, masks)


@dataclasses.dataclass(frozen=True)
class Unstructured(Structure):
  single_weights = True

  def __str__(self):
    return "unstructured"

  def to_groups(self, leaf, name):
    return jnp.reshape(leaf, (-1, 1))

  def from_groups(self, groups, name, shape):
    return jnp.reshape(groups, shape)

  def plan(self, masks, densities, distribution):
    return np.stack([np.asarray(masks_lib.keep_counts(masks, float(d), distribution)) for d in densities])

  def masks_from_counts(self, reduce, scores, masks, counts, min_per_layer=0):
    return masks_lib.masks_from_counts(scores, masks, counts, min_per_layer)

  def group_ok(self, groups):
    return np.ones(groups.shape[0], bool)


@dataclasses.dataclass(frozen=True)
class NByM(Structure):
  """At most N of every M consecutive inputs of one output; exactly N after pruning."""
  n: int
  m: int

  def __str__(self):
    return f"{self.n}:{self.m}"

  def nm(self):
    return (self.n, self.m)

  def check_density(self, density, field="structure", density_field="sparsity"):
    if abs(float(density) - self.n / self.m) > 1e-9:
      wanted = self.n / self.m if density_field.endswith("density") else 1 - self.n / self.m
      raise ValueError(f"{field}={str(self)!r} keeps exactly {self.n} of every {self.m} weights (density "
                       f"{self.n / self.m:g}), but {density_field} asks for density {float(density):g}: set "
                       f"{density_field} to {wanted:g}.")

  def check_layer(self, name, shape):
    super().check_layer(name, shape)
    inputs, _ = _inputs_outputs(name, shape)
    if inputs % self.m:
      raise ValueError(f"structure {self}: layer {name} has {inputs} inputs per output (shape {tuple(shape)}), "
                       f"not a multiple of M={self.m}: leave it dense with prunable= (e.g. a regex without it) "
                       "or use another structure.")

  def to_groups(self, leaf, name):
    view = matrix(leaf, name)
    k, out = view.shape
    return jnp.transpose(view.reshape(k // self.m, self.m, out), (0, 2, 1)).reshape(-1, self.m)

  def from_groups(self, groups, name, shape):
    k, out = matrix(jnp.zeros(shape, jnp.bool_), name).shape
    view = jnp.transpose(groups.reshape(k // self.m, out, self.m), (0, 2, 1)).reshape(k, out)
    return unmatrix(view, shape, name)

  def plan(self, masks, densities, distribution):
    """Weights kept per group in each round, round(d x M): [R], the last one N."""
    self.check_layers(masks)
    return np.asarray([int(np.floor(float(d) * self.m + 0.5)) for d in densities], np.int64)

  def masks_from_counts(self, reduce, scores, masks, counts, min_per_layer=0):
    items = masks_lib.prunable_items(scores, masks)
    alive = [m for _, m in masks_lib.prunable_items(masks, masks)]
    kept = []
    for (name, s), m in zip(items, alive):
      g, a = self.to_groups(s, name), self.to_groups(m, name)
      if jnp.issubdtype(g.dtype, jnp.floating):  # As masks.keep_order: NaN and pruned lowest.
        g = jnp.where(jnp.isnan(g) | ~a, -jnp.inf, g + 0.0)
      else:
        g = jnp.where(a, g, jnp.iinfo(g.dtype).min)
      order = jnp.argsort(g, axis=1, stable=True, descending=True)
      rank = jnp.argsort(order, axis=1, stable=True)
      kept.append((rank < counts) & a)
    return self._apply_groups(kept, items, alive, masks)

  def group_ok(self, groups):
    return groups.sum(axis=1) <= self.n


class _WholeGroups(Structure):
  """Block and channel: groups kept or pruned whole, counted in groups under the distribution."""

  def group_count(self, name, shape):
    raise NotImplementedError

  def plan(self, masks, densities, distribution):
    self.check_layers(masks)
    items = masks_lib.prunable_items(masks, masks)
    shapes = [m.shape for _, m in items]
    units = np.asarray([self.group_count(name, m.shape) for name, m in items], np.int64)
    return np.stack([np.asarray(masks_lib.keep_counts_for(shapes, units, float(d), distribution))
                     for d in densities])

  def masks_from_counts(self, reduce, scores, masks, counts, min_per_layer=0):
    items = masks_lib.prunable_items(scores, masks)
    alive = [m for _, m in masks_lib.prunable_items(masks, masks)]
    names = [name for name, _ in items]
    grouped_alive = [self.to_groups(m, name) for name, m in zip(names, alive)]
    gscores = {n: group_scores(self.to_groups(s, n), a, reduce)
               for (n, s), a in zip(items, grouped_alive)}
    galive = {n: jnp.any(a, axis=1) for n, a in zip(names, grouped_alive)}
    gkeep = masks_lib.masks_from_counts(gscores, galive, counts, min_per_layer)
    kept = [gkeep[n][:, None] & a for n, a in zip(names, grouped_alive)]
    return self._apply_groups(kept, items, alive, masks)

  def group_ok(self, groups):
    return groups.all(axis=1) | ~groups.any(axis=1)


@dataclasses.dataclass(frozen=True)
class Block(_WholeGroups):
  """R x C tiles of a kernel's [inputs, outputs] view."""
  rows: int
  cols: int

  def __str__(self):
    return f"block:{self.rows}x{self.cols}"

  def check_layer(self, name, shape):
    super().check_layer(name, shape)
    inputs, outputs = _inputs_outputs(name, shape)
    if inputs % self.rows or outputs % self.cols:
      raise ValueError(f"structure {self}: layer {name}'s [inputs, outputs] view is {inputs} x {outputs} "
                       f"(shape {tuple(shape)}), which does not tile into {self.rows} x {self.cols} blocks: "
                       "leave it dense with prunable= or pick a block size that divides it.")

  def group_count(self, name, shape):
    return int(np.prod(shape)) // (self.rows * self.cols)

  def to_groups(self, leaf, name):
    view = matrix(leaf, name)
    k, out = view.shape
    r, c = self.rows, self.cols
    return jnp.transpose(view.reshape(k // r, r, out // c, c), (0, 2, 1, 3)).reshape(-1, r * c)

  def from_groups(self, groups, name, shape):
    k, out = matrix(jnp.zeros(shape, jnp.bool_), name).shape
    r, c = self.rows, self.cols
    view = jnp.transpose(groups.reshape(k // r, out // c, r, c), (0, 2, 1, 3)).reshape(k, out)
    return unmatrix(view, shape, name)


@dataclasses.dataclass(frozen=True)
class Channel(_WholeGroups):
  """Whole output units: a conv filter, a Dense column."""

  def __str__(self):
    return "channel"

  def group_count(self, name, shape):
    return _inputs_outputs(name, shape)[1]

  def to_groups(self, leaf, name):
    return matrix(leaf, name).T  # [outputs, inputs]

  def from_groups(self, groups, name, shape):
    return unmatrix(groups.T, shape, name)


UNSTRUCTURED = Unstructured()  # The default of the jobs' config.prune.structure and the API's structure=.


def parse(value, field="structure"):
  """The Structure of 'unstructured', 'N:M' (e.g. '2:4'), 'block:RxC' (e.g. 'block:4x4') or 'channel'
  (a Structure is returned as it is)."""
  if isinstance(value, Structure):
    return value
  match = _PATTERN.match(value.strip()) if isinstance(value, str) else None
  if not match:
    raise ValueError(f"{field}={value!r} is not a sparsity structure: use 'unstructured', 'N:M' (e.g. '2:4', "
                     "'1:4'), 'block:RxC' (e.g. 'block:4x4') or 'channel'.")
  if match.group(1) == "unstructured":
    return UNSTRUCTURED
  if match.group(1) == "channel":
    return Channel()
  if match.group(2):
    n, m = int(match.group(2)), int(match.group(3))
    if not 0 < n < m:
      raise ValueError(f"{field}={value!r}: N:M needs 0 < N < M (e.g. '2:4' keeps 2 of every 4).")
    return NByM(n, m)
  rows, cols = int(match.group(4)), int(match.group(5))
  if rows < 1 or cols < 1 or rows * cols < 2:
    raise ValueError(f"{field}={value!r}: blocks need R, C >= 1 and more than one weight (e.g. 'block:4x4').")
  return Block(rows, cols)


def check_group_reduce(value, field="group_reduce"):
  if value not in GROUP_REDUCTIONS:
    raise ValueError(f"{field}={value!r} is not known: use one of {', '.join(GROUP_REDUCTIONS)}.")
