"""A compact export of pruned weights: asj.export(params, masks, path, format=...) / asj.load_export(path).

One .npz file (uncompressed, written atomically), with `__meta__` (JSON: format,
version, every leaf's path, shape, dtype and whether it is prunable) and per leaf:

  bitmask  prunable leaf i: `values_i` (the kept values in C order) and `bits_i`
           (np.packbits of the flat mask); other leaves: `dense_i`. Round trip bit-exact.
  nm       (N:M masks; structure= '2:4' by default) prunable leaf i: `values_i` [outputs,
           K/M, N] and `indices_i`, each value's position in its group of M, packed (below).
           K is the kernel's inputs in the hardware's order (structure.NByM.view: a conv's
           (taps..., c_in), c_in fastest, in either layout; a dense layer's flattened
           inputs), so per output row `values.reshape(out, K*N/M)` is the compressed [out,
           K/2] matrix of the 2:4 semi-structured format GPUs run and the indices its metadata.
           A group that keeps fewer than N stores explicit zeros at its lowest unkept
           positions (indices ascending in every group), as the hardware does; loading marks
           a stored position kept when its value is not 0 (a kept weight of exactly 0.0 comes
           back pruned; the params are bit-exact either way). A prunable layer that cannot take
           N:M (structure_fallback='dense') and keeps every weight is stored as `dense_i`.
           Masks that keep more than N of some M are refused, naming the first such group.
  bcoo     prunable leaf i: `data_i`, `coords_i` of jax.experimental.sparse.BCOO.fromdense
           (n_batch = n_dense = 0), the same values.

Index packing (nm): the indices of a leaf, in the C order of [outputs, K/M, N], form one
bit stream of ceil(log2 M) bits per index (2 for 2:4), each index least significant
bit first; stream bit i is bit (i mod 8) of byte i // 8 (np.packbits(bitorder='little')).
For 2:4 that is four indices to a byte, the first in bits 0-1: indices (0, 1, 2, 3) pack
to 0xE4. So the payload (every array but `__meta__`) is exactly what asj.cost reports
as `bytes["nm"]`.

Versions: 2 (this one: nm indices packed, groups along input channels at one tap). Files
of version 1 (nm: one uint8 per index, groups over the flattened inputs of
structure.matrix) still load, as they were written.

load_export(path, like=None) returns (params, masks): nested dicts by leaf path, or the
tree of `like` (e.g. your params, for an NNX State or an equinox model), refused when its
paths, shapes or dtypes differ from the file's (the first difference named). A file that
is not such an export, cut short or inconsistent is refused naming it.
"""
import io
import re
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import artefacts, masks as masks_lib, structure as structure_lib

FORMATS = ("bitmask", "nm", "bcoo")
VERSION = 2
READS = (1, 2)  # Versions load_export reads.
DEFAULT_NM = "2:4"  # format='nm' without structure=: the hardware's.


def pack_indices(indices, bits):
  """uint8 bytes of the flat `indices` at `bits` bits each (module docstring: LSB first)."""
  idx = np.asarray(indices, np.uint8).reshape(-1)
  stream = ((idx[:, None] >> np.arange(bits, dtype=np.uint8)) & 1).reshape(-1)
  return np.packbits(stream, bitorder="little")


def unpack_indices(packed, count, bits):
  """The `count` indices of pack_indices' bytes."""
  stream = np.unpackbits(np.asarray(packed, np.uint8), count=count * bits, bitorder="little").reshape(count, bits)
  return (stream.astype(np.int64) << np.arange(bits)).sum(axis=1)


def _nm_structure(structure, kernel_layout):
  parsed = structure_lib.parse(DEFAULT_NM if structure is None else structure, "structure")
  if parsed.nm() is None:
    raise ValueError(f"format='nm' stores N:M masks: structure={str(parsed)!r} is not N:M (use e.g. '2:4', the "
                     "default, or format='bitmask').")
  layouts = structure_lib.parse_kernel_layout(kernel_layout)
  return parsed.with_layouts(layouts) if layouts else parsed


def export(params, masks, path, format="bitmask", structure=None, kernel_layout=None):
  """Writes params under masks to `path` (.npz) in `format`; returns {file bytes, payload bytes}.

  masks: bool (or 0/1) masks of params' exact tree and shapes (asj.init_masks / asj.prune), refused naming
  the first leaf that differs. structure (format='nm'): 'N:M', default '2:4'; kernel_layout: as asj.prune's.
  """
  if format not in FORMATS:
    raise ValueError(f"format={format!r} is not known: use one of {', '.join(FORMATS)}.")
  masks = masks_lib.check_masks(params, masks, argument="masks=")
  parsed, storage = None, {}
  if format == "nm":
    parsed = _nm_structure(structure, kernel_layout)
    storage = parsed.storage(masks)  # N:M layers, dense layers, or the first group keeping more than N.
  arrays, leaves = {}, []
  for i, ((p_path, p), m) in enumerate(zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(masks))):
    p, m = np.asarray(p), np.asarray(m, bool)
    name = masks_lib.path_name(p_path)
    leaf = {"path": name, "shape": list(p.shape), "dtype": str(p.dtype), "prunable": bool(m.ndim)}
    leaves.append(leaf)
    if m.ndim == 0 or (format == "nm" and not storage[name]):
      arrays[f"dense_{i}"] = p
      if m.ndim:
        leaf["stored"] = "dense"
    elif format == "bitmask":
      arrays[f"values_{i}"] = p[m]
      arrays[f"bits_{i}"] = np.packbits(m.reshape(-1))
    elif format == "bcoo":
      from jax.experimental import sparse
      sp = sparse.BCOO.fromdense(jnp.where(m, p, 0), nse=int(m.sum()))
      arrays[f"data_{i}"], arrays[f"coords_{i}"] = np.asarray(sp.data), np.asarray(sp.indices)
    else:
      leaf["layout"] = parsed.layout(name, p.shape)
      groups_m = np.asarray(parsed.to_groups(jnp.asarray(m), name))  # [K/M * out, M], K-block major.
      groups_p = np.where(groups_m, np.asarray(parsed.to_groups(jnp.asarray(p), name)), np.zeros((), p.dtype))
      out = parsed.view(jnp.zeros(p.shape, jnp.bool_), name).shape[1]
      # Kept positions first, then the lowest unkept (explicit zeros), ascending in each group.
      order = np.sort(np.argsort(~groups_m, axis=1, kind="stable")[:, :parsed.n], axis=1)
      values = np.take_along_axis(groups_p, order, axis=1)
      arrays[f"values_{i}"] = values.reshape(-1, out, parsed.n).transpose(1, 0, 2).copy()
      arrays[f"indices_{i}"] = pack_indices(order.reshape(-1, out, parsed.n).transpose(1, 0, 2), parsed.index_bits())
  meta = {"format": format, "version": VERSION, "leaves": leaves,
          "structure": str(parsed) if parsed is not None else None}
  arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  artefacts.write_atomic(path, lambda f: f.write(buffer.getvalue()), binary=True)
  payload = sum(a.nbytes for k, a in arrays.items() if k != "__meta__")
  return {"file_bytes": len(buffer.getvalue()), "payload_bytes": payload}


def _refuse(path, what):
  return artefacts.DamagedFile(f"{path} is not a readable autosparse export ({what}); nothing was changed. Write it "
                               "again with asj.export(params, masks, path, format=...).")


def _nm_leaf(arrays, i, leaf, parsed, version):
  """(params, masks) of nm leaf i: version 2 (packed indices, the hardware's groups) or 1 (uint8, matrix groups)."""
  shape, dtype = tuple(leaf["shape"]), np.dtype(leaf["dtype"])
  values = arrays[f"values_{i}"]
  out, blocks = values.shape[0], values.shape[1]
  if version == 1:
    indices = arrays[f"indices_{i}"].astype(np.int64)
  else:
    indices = unpack_indices(arrays[f"indices_{i}"], values.size, parsed.index_bits()).reshape(values.shape)
  groups_p = np.zeros((blocks * out, parsed.m), dtype)
  groups_m = np.zeros(groups_p.shape, bool)
  flat_v = values.transpose(1, 0, 2).reshape(-1, parsed.n)
  flat_i = indices.transpose(1, 0, 2).reshape(-1, parsed.n)
  np.put_along_axis(groups_p, flat_i, flat_v, axis=1)
  np.put_along_axis(groups_m, flat_i, flat_v != 0 if version > 1 else True, axis=1)
  if version == 1:  # Groups of M consecutive rows of structure.matrix's [inputs, outputs] view.
    k = blocks * parsed.m
    back = lambda g: np.asarray(structure_lib.unmatrix(
        jnp.asarray(g.reshape(blocks, out, parsed.m).transpose(0, 2, 1).reshape(k, out)), shape, leaf["path"]))
    return back(groups_p), back(groups_m)
  layout = structure_lib.NByM(parsed.n, parsed.m, ((f"^{re.escape(leaf['path'])}$", leaf["layout"]),))
  return (np.asarray(layout.from_groups(jnp.asarray(groups_p), leaf["path"], shape)),
          np.asarray(layout.from_groups(jnp.asarray(groups_m), leaf["path"], shape)))


def load_export(path, like=None):
  """(params, masks) of an export: nested dicts by leaf path, or the tree structure of `like` (its paths,
  shapes and dtypes must be the file's: the first difference is named)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise _refuse(path, f"{type(e).__name__}: {' '.join(str(e).split())[:160]}") from None
  try:
    meta = json.loads(bytes(arrays["__meta__"]).decode())
    if meta.get("version") not in READS or meta.get("format") not in FORMATS:
      raise _refuse(path, f"format {meta.get('format')!r} version {meta.get('version')!r}, this version reads "
                    f"versions {', '.join(map(str, READS))}")
    parsed = structure_lib.parse(meta["structure"]) if meta["format"] == "nm" else None
    params, masks = [], []
    for i, leaf in enumerate(meta["leaves"]):
      shape, dtype = tuple(leaf["shape"]), np.dtype(leaf["dtype"])
      if not leaf["prunable"] or leaf.get("stored") == "dense":
        params.append(arrays[f"dense_{i}"].astype(dtype).reshape(shape))
        masks.append(np.ones(shape if leaf["prunable"] else (), bool))
        continue
      size = int(np.prod(shape))
      if meta["format"] == "bitmask":
        m = np.unpackbits(arrays[f"bits_{i}"], count=size).astype(bool).reshape(shape)
        p = np.zeros(shape, dtype)
        p[m] = arrays[f"values_{i}"]
      elif meta["format"] == "bcoo":
        coords, values = arrays[f"coords_{i}"], arrays[f"data_{i}"]
        p = np.zeros(shape, dtype)
        m = np.zeros(shape, bool)
        p[tuple(coords.T)] = values
        m[tuple(coords.T)] = True
      else:
        p, m = _nm_leaf(arrays, i, leaf, parsed, meta["version"])
      params.append(p)
      masks.append(m)
  except artefacts.DamagedFile:
    raise
  except (KeyError, ValueError, TypeError, IndexError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise _refuse(path, f"{type(e).__name__}: {' '.join(str(e).split())[:160]}") from None
  if like is not None:
    _check_like(like, meta["leaves"], path)
    treedef = jax.tree.structure(like)
    return jax.tree.unflatten(treedef, params), jax.tree.unflatten(treedef, masks)
  nest = lambda leaves: _nested([leaf["path"] for leaf in meta["leaves"]], leaves)
  return nest(params), nest(masks)


def _check_like(like, leaves, path):
  """ValueError naming the first leaf of `like` whose path, shape or dtype is not the file's."""
  ours = jax.tree_util.tree_leaves_with_path(like)
  for (p, x), leaf in zip(ours, leaves):
    name, shape = masks_lib.path_name(p), tuple(np.shape(x))
    dtype = np.dtype(getattr(x, "dtype", None) or np.asarray(x).dtype)
    what = (f"path {name!r}" if name != leaf["path"] else
            f"shape {shape}" if shape != tuple(leaf["shape"]) else
            f"dtype {dtype}" if dtype != np.dtype(leaf["dtype"]) else None)
    if what:
      raise ValueError(f"like= leaf {name!r} has {what}, but the export {path} holds {leaf['path']!r} of shape "
                       f"{tuple(leaf['shape'])} and dtype {leaf['dtype']} there: pass the tree the file was "
                       "exported from (or like=None for nested dicts by path).")
  if len(ours) != len(leaves):
    first = (f"the file's {leaves[len(ours)]['path']!r} is missing from like=" if len(leaves) > len(ours) else
             f"like='s {masks_lib.path_name(ours[len(leaves)][0])!r} is not in the file")
    raise ValueError(f"like= has {len(ours)} leaves, the export {path} holds {len(leaves)} ({first}).")


def _nested(paths, leaves):
  out = {}
  for path, leaf in zip(paths, leaves):
    node = out
    parts = path.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = leaf
  return out
