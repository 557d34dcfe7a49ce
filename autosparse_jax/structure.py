"""Sparsity structure: masks of whole groups (N:M, blocks, channels) from any criterion's scores.

    structure     what is kept                                   unit of the keep counts
    unstructured  single weights (the default)                   weights
    N:M           at most N of every M consecutive inputs of     - (N per group, always)
                  one output (convs: input channels at one tap)
    block:RxC     R x C tiles of a kernel's 2-D view              blocks
    channel       whole output units (a conv filter, a Dense      channels
                  column)

Each is a value (Unstructured, NByM, Block, Channel) parsed once from its text by
`parse`; it owns its group view, its keep counts (`plan`), its top-k (`masks_from_counts`)
and its compliance check, so nothing outside this module branches on which one it is.

A kernel's 2-D view (block, channel) is [inputs, outputs]: Flax / Haiku kernels keep
their outputs last (Dense (in, out), Conv (kh, kw, c_in, c_out): inputs = kh*kw*c_in
in that order, c_in fastest), and PyTorch-layout leaves named `weight` (equinox,
converted torch models) keep them first ((out, in, kh, kw): inputs = in*kh*kw).

N:M follows the hardware's definition (NVIDIA's 2:4 semi-structured sparsity, and
apex ASP's `m4n2_1d` masks bit for bit: tests/reference/make_asp_fixtures.py): a group
is M consecutive inputs of one output along the GEMM's reduction dimension, which for
a convolution is M consecutive INPUT CHANNELS at one spatial tap, in either layout.
Which layout a kernel has (KERNEL_LAYOUTS) is read from its leaf's path and shape:

    ndim 2   a dense layer: `weight` (PyTorch, equinox) is oi, anything else io
    ndim >=4 a convolution: `weight` is oihw, anything else (Flax, Haiku) hwio
    ndim 3   by the innermost module named in the path: a Conv (1-D conv, per tap:
             hwio / oihw); Flax attention's query / key / value (features, heads,
             head_dim): ioo; Dense, DenseGeneral, attention, *proj, mlp, fc, out
             (over their flattened inputs): io / oi; no such name: refused, asking
             for kernel_layout=

and `kernel_layout=` (API) / config.prune.kernel_layout (jobs) names it for any leaf
the rules cannot see: {regex over leaf paths: layout} (a job: ["REGEX=LAYOUT", ...]),
the first regex that matches wins. A conv whose c_in does not divide by M (a 3-channel
stem; a 4x4 patchify conv on 3 channels, whose kh*kw*c_in would divide) and a dense
layer whose inputs do not are refused, naming the layer and the exact `prunable=`
regex that leaves it dense; structure_fallback='dense' leaves every such layer dense
instead, as ASP does (the spec lists them: PruneSpec.dense_layers).

Group scores are the criterion's scores reduced over each group's members
(`group_reduce`: sum, the default; mean; max); pruned members count 0 (sum, mean)
or nothing (max). Block and channel masks keep exactly round(density x groups)
groups under the distribution (global: over all layers' groups; layerwise: per
layer, the layers' counts adding up to the global round(density x groups) by largest
remainder; ERK: the ERK layer densities of the weights, applied to each layer's
groups, largest remainder again), by exact top-k with ties to the lower index, as
unstructured masks do. N:M keeps exactly N per group; iterative criteria prune to
round(d_r x M) per group in round r, ending at N.
"""
import dataclasses
import math
import re

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import masks as masks_lib

GROUP_REDUCTIONS = ("sum", "mean", "max")
STRUCTURE_FALLBACKS = ("refuse", "dense")  # A layer that cannot take the structure: an error, or left dense.
# The defaults of structure_fallback= / config.prune.structure_fallback and kernel_layout= / config.prune.kernel_layout.
DEFAULT_STRUCTURE_FALLBACK = "refuse"
DEFAULT_KERNEL_LAYOUT = ()  # No rules beyond the module docstring's.
# N:M's kernel layouts: how a kernel's axes map to the GEMM's reduction dimension K (inputs) and outputs.
KERNEL_LAYOUTS = {
    "io": "(inputs..., outputs): Flax / Haiku Dense, DenseGeneral over several input axes "
          "(attention's out projection (heads, head_dim, features)); inputs flattened",
    "ioo": "(inputs, outputs...): DenseGeneral to several output axes (Flax attention's query / key / value "
           "(features, heads, head_dim))",
    "oi": "(outputs, inputs...): a PyTorch-style Linear `weight`; inputs flattened",
    "hwio": "(taps..., c_in, c_out): Flax / Haiku convolutions; groups of input channels at one tap",
    "oihw": "(c_out, c_in, taps...): PyTorch-style / equinox convolution `weight`; groups of input channels "
            "at one tap",
}
_CONV_LAYOUTS = ("hwio", "oihw")
_WRAPPERS = ("value", "raw_value")
_CONV_MODULE = re.compile(r"(?i)conv")
_SPLIT_OUTPUTS_MODULE = re.compile(r"(?i)^(query|key|value)$")  # Flax MultiHeadDotProductAttention's.
_DENSE_MODULE = re.compile(r"(?i)(dense|linear|attention|attn|proj|mlp|fc|^out$|^qkv$)")
_PATTERN = re.compile(r"^(unstructured|channel|(\d+):(\d+)|block:(\d+)x(\d+))$")


def _outputs_first(name):
  """PyTorch-layout leaves (`weight`: (out, in, ...)) keep their outputs first; Flax kernels last."""
  parts = [p for p in name.split("/") if p not in _WRAPPERS]
  return bool(parts) and parts[-1].lower().startswith("weight")


def kernel_layout(name, shape, rules=()):
  """The KERNEL_LAYOUTS name of kernel `name` of `shape` (module docstring), or None when the rules cannot
  tell (a 3-D kernel of a module whose name says neither). rules: ((regex, layout), ...) checked first."""
  for pattern, layout in rules:
    if re.search(pattern, name):
      return layout
  first = _outputs_first(name)
  if len(shape) == 2:
    return "oi" if first else "io"
  if len(shape) >= 4:
    return "oihw" if first else "hwio"
  modules = [p for p in name.split("/") if p not in _WRAPPERS][:-1]
  for part in reversed(modules):  # The innermost module that names itself decides.
    if _CONV_MODULE.search(part):
      return "oihw" if first else "hwio"
    if not first and _SPLIT_OUTPUTS_MODULE.match(part):
      return "ioo"
    if _DENSE_MODULE.search(part):
      return "oi" if first else "io"
  return None


def _layout_axes(layout, ndim):
  """(perm, k): leaf.transpose(perm) is (K axes..., output axes...) with its first k axes the inputs, C order."""
  rest = tuple(range(1, ndim))
  return {"io": (tuple(range(ndim)), ndim - 1), "ioo": (tuple(range(ndim)), 1), "oi": (rest + (0,), ndim - 1),
          "hwio": (tuple(range(ndim)), ndim - 1), "oihw": (tuple(range(2, ndim)) + (1, 0), ndim - 1)}[layout]


def parse_kernel_layout(value, field="kernel_layout"):
  """((regex, layout), ...) of `kernel_layout`: None / () / {regex: layout} / ["REGEX=LAYOUT", ...] / pairs."""
  if value is None or (isinstance(value, str) and not value.strip()):
    return ()
  if isinstance(value, str):
    value = [value]
  items = list(value.items()) if isinstance(value, dict) else list(value)
  rules = []
  for item in items:
    if isinstance(item, str):
      pattern, sep, layout = item.rpartition("=")
      if not sep:
        raise ValueError(f"{field} entry {item!r} must read 'REGEX=LAYOUT' (e.g. 'encoder/.*/kernel$=io'), "
                         f"LAYOUT one of {', '.join(KERNEL_LAYOUTS)}.")
    elif isinstance(item, (tuple, list)) and len(item) == 2:
      pattern, layout = item
    else:
      raise ValueError(f"{field}={value!r} must be {{regex: layout}} or a list of 'REGEX=LAYOUT' strings.")
    if layout not in KERNEL_LAYOUTS:
      raise ValueError(f"{field}: layout {layout!r} (for {pattern!r}) is not known: use one of "
                       + "; ".join(f"{k} {v}" for k, v in KERNEL_LAYOUTS.items()) + ".")
    try:
      re.compile(pattern)
    except (re.error, TypeError) as e:
      raise ValueError(f"{field}: {pattern!r} is not a valid regular expression ({e}).") from None
    rules.append((str(pattern), str(layout)))
  return tuple(rules)


def check_structure_fallback(value, field="structure_fallback"):
  if value not in STRUCTURE_FALLBACKS:
    raise ValueError(f"{field}={value!r} is not known: use 'refuse' (a layer that cannot take the structure is an "
                     "error, the default) or 'dense' (such layers stay dense, as NVIDIA's ASP does).")
  return value


class LayoutUnknown(ValueError):
  """A kernel whose layout the rules cannot tell: kernel_layout= must say it (never left dense silently)."""


def dense_prunable(masks, dense):
  """The regex for prunable= that selects exactly the prunable leaves of `masks` but those in `dense`,
  checked against every leaf's path (None when no leaf would be left)."""
  items = [(masks_lib.path_name(p), m) for p, m in jax.tree_util.tree_leaves_with_path(masks)]
  names = [n for n, _ in items]
  keep = [n for n, m in items if np.ndim(m) > 0 and n not in dense]
  if not keep:
    return None
  tails = sorted({n.split("/")[-1] for n in keep})
  alternation = lambda xs: "|".join(re.escape(x) for x in xs)
  for candidate in (rf"^(?!(?:{alternation(sorted(dense))})$)(?:.*/)?(?:{alternation(tails)})$",
                    rf"^(?:{alternation(keep)})$"):
    if [n for n in names if re.search(candidate, n)] == keep:
      return candidate
  return None  # Not reached: the second candidate selects exactly `keep`.


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

  def check_layers(self, masks, fallback=DEFAULT_STRUCTURE_FALLBACK):
    """The prunable layers of `masks` that cannot take this structure, left dense under fallback='dense';
    under 'refuse' (the default) a ValueError naming them and the exact prunable= regex that leaves them dense."""
    unfit = {}
    for name, m in masks_lib.prunable_items(masks, masks):
      try:
        self.check_layer(name, m.shape)
      except LayoutUnknown:
        raise
      except ValueError as e:
        unfit[name] = str(e)
    if unfit and fallback != "dense":
      first, *more = list(unfit.values())
      regex = dense_prunable(masks, set(unfit))
      also = f" Also {', '.join(list(unfit)[1:])}." if more else ""
      them = "it" if len(unfit) == 1 else "them"
      fix = (f"leave {them} dense with prunable={regex!r} (a job: config.prune.prunable), or"
             if regex else "no other layer is prunable: use another structure, or")
      raise ValueError(f"{first.rstrip('.')}.{also} To prune the rest, {fix} structure_fallback='dense' "
                       f"(config.prune.structure_fallback) to leave every layer that cannot take {self} dense, as "
                       "NVIDIA's ASP does.")
    return list(unfit)

  def with_layouts(self, rules):
    """This structure reading kernels' layouts by `rules` (parse_kernel_layout); only N:M groups depend on them."""
    return self

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
    self.check_layers(masks)  # A named error, not a reshape's.
    out = {}
    for name, m in masks_lib.prunable_items(masks, masks):
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
  """At most N of every M consecutive inputs of one output (convs: input channels at one tap); exactly N
  after pruning. layouts: kernel_layout rules ((regex, layout), ...) for leaves the default rules cannot see."""
  n: int
  m: int
  layouts: tuple = ()

  def __str__(self):
    return f"{self.n}:{self.m}"

  def nm(self):
    return (self.n, self.m)

  def with_layouts(self, rules):
    return dataclasses.replace(self, layouts=tuple(rules))

  def check_density(self, density, field="structure", density_field="sparsity"):
    if abs(float(density) - self.n / self.m) > 1e-9:
      wanted = self.n / self.m if density_field.endswith("density") else 1 - self.n / self.m
      raise ValueError(f"{field}={str(self)!r} keeps exactly {self.n} of every {self.m} weights (density "
                       f"{self.n / self.m:g}), but {density_field} asks for density {float(density):g}: set "
                       f"{density_field} to {wanted:g}.")

  def layout(self, name, shape):
    """The KERNEL_LAYOUTS name of a kernel (LayoutUnknown when neither the rules nor kernel_layout tell)."""
    layout = kernel_layout(name, shape, self.layouts)
    if layout is None:
      raise LayoutUnknown(
          f"structure {self}: layer {name} is a 3-D kernel {tuple(shape)} of a module whose name says neither "
          f"Conv nor Dense / attention, so its input axes are unknown: name its layout with kernel_layout="
          f"{{{('^' + re.escape(name) + '$')!r}: 'hwio'}} (a job: config.prune.kernel_layout=['REGEX=LAYOUT']), "
          "LAYOUT one of " + "; ".join(f"{k} {v}" for k, v in KERNEL_LAYOUTS.items()) + ".")
    if len(shape) < (3 if layout in _CONV_LAYOUTS else 2):
      raise LayoutUnknown(f"structure {self}: layer {name} of shape {tuple(shape)} cannot have layout {layout!r} "
                          f"({KERNEL_LAYOUTS[layout]}): fix kernel_layout.")
    return layout

  def check_layer(self, name, shape):
    super().check_layer(name, shape)
    layout = self.layout(name, shape)
    perm, k = _layout_axes(layout, len(shape))
    inputs = [shape[i] for i in perm[:k]]
    if layout in _CONV_LAYOUTS and inputs[-1] % self.m:
      raise ValueError(f"structure {self}: layer {name} (shape {tuple(shape)}, layout {layout}) has {inputs[-1]} "
                       f"input channels at each tap, not a multiple of M={self.m} (a group is {self.m} consecutive "
                       "input channels at one tap, as the hardware's).")
    if int(np.prod(inputs)) % self.m:
      raise ValueError(f"structure {self}: layer {name} (shape {tuple(shape)}, layout {layout}) has "
                       f"{int(np.prod(inputs))} inputs per output, not a multiple of M={self.m}.")

  def view(self, leaf, name):
    """The [K, outputs] matrix of a kernel whose K (inputs) are ordered as the hardware groups them: a conv's
    (taps..., c_in), c_in fastest, in either layout; a dense layer's flattened inputs."""
    perm, k = _layout_axes(self.layout(name, jnp.shape(leaf)), jnp.ndim(leaf))
    t = jnp.transpose(leaf, perm)
    return jnp.reshape(t, (int(np.prod(t.shape[:k])), -1))

  def unview(self, view, name, shape):
    perm, _ = _layout_axes(self.layout(name, shape), len(shape))
    return jnp.transpose(jnp.reshape(view, [shape[i] for i in perm]), tuple(np.argsort(perm)))

  def to_groups(self, leaf, name):
    """[K/M * outputs, M], K-block major: group g = (block g // outputs, output g % outputs)."""
    view = self.view(leaf, name)
    k, out = view.shape
    return jnp.transpose(view.reshape(k // self.m, self.m, out), (0, 2, 1)).reshape(-1, self.m)

  def from_groups(self, groups, name, shape):
    k, out = self.view(jnp.zeros(shape, jnp.bool_), name).shape
    view = jnp.transpose(groups.reshape(k // self.m, out, self.m), (0, 2, 1)).reshape(k, out)
    return self.unview(view, name, shape)

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

  def index_bits(self):
    """Bits of one kept value's index in its group: ceil(log2 M) (2 for 2:4)."""
    return int(math.ceil(math.log2(self.m)))

  def stored_bytes(self, size, itemsize):
    """Bytes of a layer of `size` weights stored N:M: N values per group (explicit zeros where a group keeps
    fewer) and their indices packed at index_bits each (compact_export's nm format, byte for byte)."""
    stored = size // self.m * self.n
    return stored * itemsize + math.ceil(stored * self.index_bits() / 8)

  def storage(self, masks):
    """{prunable layer: True (stored N:M) or False (stored dense: all kept, a layer that cannot take N:M)}, or a
    ValueError naming the first group that keeps more than N (its members' indices) or the layer."""
    out = {}
    for name, m in masks_lib.prunable_items(masks, masks):
      m = np.asarray(m, bool)
      try:
        self.check_layer(name, m.shape)
      except LayoutUnknown:
        raise
      except ValueError as e:
        if not m.all():
          raise ValueError(f"{e} Its mask is not all ones, so it can be stored neither {self} nor dense.") from None
        out[name] = False
        continue
      groups = np.asarray(self.to_groups(m, name))
      over = np.flatnonzero(groups.sum(axis=1) > self.n)
      if over.size:
        members = np.asarray(self.to_groups(np.arange(m.size).reshape(m.shape), name))[over[0]]
        at = lambda i: "[" + ", ".join(str(int(c)) for c in np.unravel_index(int(i), m.shape)) + "]"
        raise ValueError(f"masks are not {self}: layer {name}'s group {at(members[0])}..{at(members[-1])} (the "
                         f"{self.m} consecutive inputs of one output) keeps {int(groups[over[0]].sum())} of "
                         f"{self.m}, more than {self.n}; prune with structure='{self}'.")
      out[name] = True
    return out


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
                       f"(shape {tuple(shape)}), which does not tile into {self.rows} x {self.cols} blocks (or pick "
                       "a block size that divides it).")

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
