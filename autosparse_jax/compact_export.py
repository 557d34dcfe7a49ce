"""A compact export of pruned weights: asj.export(params, masks, path, format=...) / asj.load_export(path).

One .npz file (uncompressed, written atomically), with `__meta__` (JSON: format,
version, every leaf's path, shape, dtype and whether it is prunable) and per leaf:

  bitmask  prunable leaf i: `values_i` (the kept values in C order) and `bits_i`
           (np.packbits of the flat mask); other leaves: `dense_i`. Round trip bit-exact.
  nm       (N:M masks, e.g. 2:4) prunable leaf i: `values_i` [outputs, inputs/M, N] and
           `indices_i` uint8 [outputs, inputs/M, N], each kept value's position in its group
           of M consecutive inputs (structure.py's [inputs, outputs] view: Flax kernels'
           inputs kh*kw*c_in). Per output row this is the 2:4 semi-structured format GPUs
           run (cuSPARSELt / torch.sparse.to_sparse_semi_structured): values.reshape(out,
           inputs*N/M) is the compressed [out, K/2] matrix and the indices its 2-bit metadata.
  bcoo     prunable leaf i: `data_i`, `coords_i` of jax.experimental.sparse.BCOO.fromdense
           (n_batch = n_dense = 0), the same values.

load_export(path, like=None) returns (params, masks): nested dicts by leaf path, or the
tree of `like` (e.g. your params, for an NNX State or an equinox model). A file that is
not such an export, cut short or inconsistent is refused naming it.
"""
import io
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import artefacts, masks as masks_lib, structure as structure_lib

FORMATS = ("bitmask", "nm", "bcoo")
VERSION = 1


def export(params, masks, path, format="bitmask", structure=None):
  """Writes params under masks to `path` (.npz) in `format`; returns {file bytes, payload bytes}."""
  if format not in FORMATS:
    raise ValueError(f"format={format!r} is not known: use one of {', '.join(FORMATS)}.")
  if jax.tree.structure(params) != jax.tree.structure(masks):
    raise ValueError("masks= must have the tree structure of params= (asj.init_masks(params) / asj.prune).")
  parsed = None
  if format == "nm":
    parsed = structure_lib.parse(structure or "", "structure") if structure else None
    if parsed is None or parsed.nm() is None:
      raise ValueError("format='nm' needs structure='N:M' (e.g. '2:4'), the structure the masks were pruned with.")
    parsed.check_layers(masks)  # Every prunable layer splits into groups of M, or its name.
    bad = {n: f for n, f in parsed.compliance(masks).items() if f < 1.0}
    if bad:
      raise ValueError(f"masks are not {parsed}: layer(s) {', '.join(bad)} keep more than {parsed.n} of some group of "
                       f"{parsed.m}; prune with structure='{parsed}' first.")
  arrays, leaves = {}, []
  for i, ((p_path, p), m) in enumerate(zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(masks))):
    p, m = np.asarray(p), np.asarray(m)
    name = masks_lib.path_name(p_path)
    leaves.append({"path": name, "shape": list(p.shape), "dtype": str(p.dtype), "prunable": bool(m.ndim)})
    if m.ndim == 0:
      arrays[f"dense_{i}"] = p
    elif format == "bitmask":
      arrays[f"values_{i}"] = p[m]
      arrays[f"bits_{i}"] = np.packbits(m.reshape(-1))
    elif format == "bcoo":
      from jax.experimental import sparse
      sp = sparse.BCOO.fromdense(jnp.where(m, p, 0), nse=int(m.sum()))
      arrays[f"data_{i}"], arrays[f"coords_{i}"] = np.asarray(sp.data), np.asarray(sp.indices)
    else:
      groups_m = np.asarray(parsed.to_groups(jnp.asarray(m), name))  # [K/M * out, M], k-block major.
      groups_p = np.asarray(parsed.to_groups(jnp.asarray(p), name))
      out = structure_lib.matrix(jnp.zeros(p.shape), name).shape[1]
      order = np.argsort(~groups_m, axis=1, kind="stable")[:, :parsed.n]  # Kept positions, ascending.
      values = np.take_along_axis(groups_p, order, axis=1)
      arrays[f"values_{i}"] = values.reshape(-1, out, parsed.n).transpose(1, 0, 2).copy()
      arrays[f"indices_{i}"] = order.astype(np.uint8).reshape(-1, out, parsed.n).transpose(1, 0, 2).copy()
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


def load_export(path, like=None):
  """(params, masks) of an export: nested dicts by leaf path, or the tree structure of `like`."""
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise _refuse(path, f"{type(e).__name__}: {' '.join(str(e).split())[:160]}") from None
  try:
    meta = json.loads(bytes(arrays["__meta__"]).decode())
    if meta.get("version") != VERSION or meta.get("format") not in FORMATS:
      raise _refuse(path, f"format {meta.get('format')!r} version {meta.get('version')!r}, this version reads "
                    f"version {VERSION}")
    parsed = structure_lib.parse(meta["structure"]) if meta["format"] == "nm" else None
    params, masks = [], []
    for i, leaf in enumerate(meta["leaves"]):
      shape, dtype = tuple(leaf["shape"]), np.dtype(leaf["dtype"])
      if not leaf["prunable"]:
        params.append(arrays[f"dense_{i}"].astype(dtype).reshape(shape))
        masks.append(np.ones((), bool))
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
        values, indices = arrays[f"values_{i}"], arrays[f"indices_{i}"].astype(np.int64)
        out = values.shape[0]
        groups_p = np.zeros((values.shape[1] * out, parsed.m), dtype)
        groups_m = np.zeros(groups_p.shape, bool)
        flat_v = values.transpose(1, 0, 2).reshape(-1, parsed.n)
        flat_i = indices.transpose(1, 0, 2).reshape(-1, parsed.n)
        np.put_along_axis(groups_p, flat_i, flat_v, axis=1)
        np.put_along_axis(groups_m, flat_i, True, axis=1)
        p = np.asarray(parsed.from_groups(jnp.asarray(groups_p), leaf["path"], shape))
        m = np.asarray(parsed.from_groups(jnp.asarray(groups_m), leaf["path"], shape))
      params.append(p)
      masks.append(m)
  except artefacts.DamagedFile:
    raise
  except (KeyError, ValueError, TypeError, IndexError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise _refuse(path, f"{type(e).__name__}: {' '.join(str(e).split())[:160]}") from None
  if like is not None:
    treedef = jax.tree.structure(like)
    if treedef.num_leaves != len(params):
      raise ValueError(f"like= has {treedef.num_leaves} leaves, the export {path} holds {len(params)}.")
    return jax.tree.unflatten(treedef, params), jax.tree.unflatten(treedef, masks)
  nest = lambda leaves: _nested([leaf["path"] for leaf in meta["leaves"]], leaves)
  return nest(params), nest(masks)


def _nested(paths, leaves):
  out = {}
  for path, leaf in zip(paths, leaves):
    node = out
    parts = path.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = leaf
  return out
