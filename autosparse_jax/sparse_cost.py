"""What a mask really saves: inference and training FLOPs from the network's own program, and bytes stored.

    asj.cost(params, masks, apply_fn, input_shape) -> dict

FLOPs of the dense network are XLA's own count (`cost_analysis()` of the compiled
`apply_fn`). What the masks remove is read
from the network's jaxpr, not from a formula per model: every `dot_general` and
`conv_general_dilated` one of whose operands is a masked parameter (followed
through reshapes, transposes, dtype casts and nested calls) counts, for each
weight, the multiply-adds it takes part in: the other operand's free size for a
matmul; for a convolution, the batch times the output positions where that kernel
tap meets the input (padding taken into account, as XLA counts). So

    kept_macs      multiply-adds of the masked layers with the masks (exact)
    masked_flops   XLA's dense FLOPs - 2 x the multiply-adds the masks remove
    training       one training step by RigL's accounting (Evci et al. 2020, Appendix H): the
                   forward pass f, the backward pass 2f (input and weight gradients), at the
                   training batch: 3 x f x batch, f the (masked) inference FLOPs per example.
                   Independent of any loss, and of what XLA simplifies in a gradient program
                   (a sum-of-logits loss drops most of the backward pass from its count).

Bytes stored (params' own dtypes): dense; values + a bitmask (kept values, 1 bit
per prunable weight); N:M compressed (N values per group, explicit zeros where a
group keeps fewer, + ceil(log2 M)-bit indices packed: the 2:4 semi-structured layout
GPUs run, and exactly the payload of compact_export's `nm` file; a layer that cannot
take N:M and keeps every weight is stored dense). N:M bytes are given only for masks
that keep at most N of every M; otherwise `nm` is None and `nm_why_not` names the
first group that keeps more (or the layer that cannot be stored). Mock sparsity, dense weights times masks,
runs at the dense cost on today's kernels: these are what a sparse kernel could
save (BENCHMARKS.md measures what it does on CPU).
"""
import math

import jax
import jax.numpy as jnp
from jax.extend.core import Literal
import numpy as np

from autosparse_jax import masks as masks_lib, structure as structure_lib

_LAYOUT_OPS = ("reshape", "transpose", "squeeze", "expand_dims", "rev")
_SAME_OPS = ("convert_element_type", "copy", "copy_p", "reduce_precision", "optimization_barrier")


def _sub_jaxprs(eqn):
  for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
    sub = eqn.params.get(name)
    if sub is not None:
      return getattr(sub, "jaxpr", sub)
  return None


def _conv_multiplicity(eqn, kernel_shape):
  """For each kernel element: how many multiply-adds it takes part in (batch x valid output positions)."""
  lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
  out = eqn.outvars[0].aval
  dn = eqn.params["dimension_numbers"]
  lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
  strides, padding = eqn.params["window_strides"], eqn.params["padding"]
  rhs_dilation = eqn.params.get("rhs_dilation") or (1,) * len(strides)
  lhs_dilation = eqn.params.get("lhs_dilation") or (1,) * len(strides)
  mult = np.ones(rhs.shape, np.float64) * lhs.shape[lhs_spec[0]]
  for d in range(len(strides)):
    size_in = (lhs.shape[lhs_spec[2 + d]] - 1) * lhs_dilation[d] + 1
    taps, outs = rhs.shape[rhs_spec[2 + d]], out.shape[out_spec[2 + d]]
    positions = np.arange(outs)[:, None] * strides[d] - padding[d][0] + np.arange(taps)[None, :] * rhs_dilation[d]
    valid = (positions >= 0) & (positions < size_in) & (positions % lhs_dilation[d] == 0)
    shape = [1] * len(rhs.shape)
    shape[rhs_spec[2 + d]] = taps
    mult = mult * valid.sum(axis=0).reshape(shape)
  return mult


def _dot_multiplicity(eqn, operand):
  """Multiply-adds each element of operand `operand` (0 or 1) of a dot_general takes part in."""
  (contract_l, contract_r), (batch_l, batch_r) = eqn.params["dimension_numbers"]
  other = eqn.invars[1 - operand].aval
  used = set(contract_r if operand == 0 else contract_l) | set(batch_r if operand == 0 else batch_l)
  return float(np.prod([s for i, s in enumerate(other.shape) if i not in used]))


def masked_macs(apply_fn, params, masks, x):
  """{"macs": dense multiply-adds of the masked layers, "kept": with the masks, "layers": per layer}."""
  closed = jax.make_jaxpr(apply_fn)(params, x)
  param_paths = [masks_lib.path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
  mask_leaves = [np.asarray(m, np.float64) for m in jax.tree.leaves(masks)]
  n_params = len(param_paths)
  tracked = {}  # jaxpr var -> (layer name, mask array laid out like the var)
  for var, name, m in zip(closed.jaxpr.invars[:n_params], param_paths, mask_leaves):
    if m.ndim > 0:
      tracked[var] = (name, m)
  layers = {}

  def walk(jaxpr, env):
    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      ins = [env.get(v) if not isinstance(v, Literal) else None for v in eqn.invars]
      sub = _sub_jaxprs(eqn)
      if sub is not None:
        inner = {iv: t for iv, t in zip(sub.invars[-len(eqn.invars):] if len(sub.invars) >= len(eqn.invars)
                                        else sub.invars, ins) if t is not None}
        outs = walk(sub, inner)
        for ov, iv in zip(eqn.outvars, sub.outvars):
          if iv in outs:
            env[ov] = outs[iv]
        continue
      if name in _SAME_OPS and ins and ins[0] is not None:
        env[eqn.outvars[0]] = ins[0]
      elif name in _LAYOUT_OPS and ins and ins[0] is not None:
        layer, m = ins[0]
        env[eqn.outvars[0]] = (layer, np.asarray(eqn.primitive.bind(jnp.asarray(m), **eqn.params)))
      elif name in ("dot_general", "conv_general_dilated"):
        for operand in (0, 1):
          if ins[operand] is None:
            continue
          layer, m = ins[operand]
          if name == "dot_general":
            mult = np.full(m.shape, _dot_multiplicity(eqn, operand))
          elif operand == 1:
            mult = _conv_multiplicity(eqn, m.shape)
          else:
            continue
          entry = layers.setdefault(layer, {"macs": 0.0, "kept": 0.0})
          entry["macs"] += float(mult.sum())
          entry["kept"] += float((mult * m).sum())
    return {v: env[v] for v in jaxpr.outvars if not isinstance(v, Literal) and v in env}

  walk(closed.jaxpr, dict(tracked))
  return {"macs": sum(v["macs"] for v in layers.values()), "kept": sum(v["kept"] for v in layers.values()),
          "layers": layers}


def _xla_flops(fn, *args):
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", float("nan")))


def _nm_structure(nm):
  """The NByM of `nm`: (N, M), 'N:M' or a structure.NByM (with its kernel_layout rules)."""
  parsed = structure_lib.parse(f"{nm[0]}:{nm[1]}" if isinstance(nm, (tuple, list)) else nm, "nm")
  if parsed.nm() is None:
    raise ValueError(f"nm={nm!r} is not an N:M structure: pass (N, M), e.g. (2, 4), or 'N:M'.")
  return parsed


def stored_bytes(params, masks, nm=None):
  """Bytes of the weights stored dense, as values + bitmask, and (nm: (N, M), 'N:M' or a structure.NByM) as
  N:M compressed, or None with the reason in `nm_why_not` when the masks are not N:M (module docstring)."""
  structure, storage, why_not = None, None, None
  if nm is not None:
    structure = _nm_structure(nm)
    try:
      storage = structure.storage(masks)
    except ValueError as e:
      why_not = str(e)
  dense = bitmask = compressed = 0
  for (path, p), m in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(masks)):
    size, itemsize = int(np.prod(np.shape(p))), np.dtype(p.dtype).itemsize
    dense += size * itemsize
    if np.ndim(m) == 0:
      bitmask += size * itemsize
      compressed += size * itemsize
      continue
    kept = int(np.asarray(m).sum())
    bitmask += kept * itemsize + math.ceil(size / 8)
    if storage is not None:
      nm_layer = storage[masks_lib.path_name(path)]
      compressed += structure.stored_bytes(size, itemsize) if nm_layer else size * itemsize
  out = {"dense": dense, "bitmask": bitmask}
  if nm is not None:
    out["nm"] = compressed if storage is not None else None
    if why_not is not None:
      out["nm_why_not"] = why_not
  return out


def cost(params, masks, apply_fn, input_shape, nm=None, dense_flops=None, train_batch=None):
  """FLOPs (inference, one training step) and bytes of `params` under `masks` (module docstring).

  input_shape: a batch's shape, e.g. (1, 28, 28, 1): inference FLOPs are per that batch.
  train_batch: the training step's batch size (default: input_shape's); its FLOPs are per step,
  3 x the inference FLOPs per example x train_batch (RigL's forward f + backward 2f).
  nm: (N, M), 'N:M' or a structure.NByM to also give the N:M compressed bytes (None, with
  `nm_why_not`, for masks that keep more than N of some M). dense_flops: the dense inference FLOPs of
  input_shape from an earlier call on the same network (the jobs compute them once per task).
  """
  x = jnp.zeros(tuple(input_shape), jnp.float32)
  batch = int(train_batch or input_shape[0])
  table = masked_macs(apply_fn, params, masks, x)
  removed = table["macs"] - table["kept"]
  inference = _xla_flops(apply_fn, params, x) if dense_flops is None else float(dense_flops)
  masked = inference - 2.0 * removed
  per_example = 3.0 * batch / x.shape[0]  # Forward f + backward 2f, per example of the batch.
  kept = sum(int(np.asarray(m).sum()) for _, m in masks_lib.prunable_items(masks, masks))
  total = sum(int(m.size) for _, m in masks_lib.prunable_items(masks, masks))
  return {"inference_flops_dense": inference, "inference_flops": masked,
          "training_flops_dense": per_example * inference, "training_flops": per_example * masked,
          "train_batch": batch,
          "macs_masked_layers_dense": table["macs"], "kept_macs": table["kept"],
          "kept_weights": kept, "prunable_weights": total, "bytes": stored_bytes(params, masks, nm)}
