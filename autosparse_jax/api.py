"""The public API: prune your own JAX network before training, in your own training loop.

    import autosparse_jax as asj
    scores = asj.score("grasp", params, apply_fn=apply_fn, batches=batches, key=key)
    masks = asj.prune("snip", params, apply_fn=apply_fn, batches=batches, sparsity=0.9, key=key)
    tx = asj.masked(optax.adam(1e-3), masks)
    params = asj.apply_masks(params, masks)

`params` is any pytree (Flax linen params, an NNX State from nnx.split, a dict
of arrays); `apply_fn(params, x) -> logits` runs the network in inference mode.
These are thin wrappers over the jobs' own code path (pruning.py, criteria/):
same scores, same exact top-k, same tie-breaking, and for the same theta_0 and
key the same masks as `configs/prune.py`.
"""
import difflib
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from autosparse_jax import criteria, keys, masks as masks_lib, pruning, recipes
from autosparse_jax.config_tools import canonical_json
from autosparse_jax.criteria.autos import cached_scorer
from autosparse_jax.criteria.base import PruneData
from autosparse_jax.data.specs import DatasetSpec

# Criteria that reach into a Flax module of this package's registry (train-mode BatchNorm,
# re-initialisation, per-layer interception) or into an IRP run: not for a plain apply_fn.
NEEDS_REGISTRY_MODEL = {"survival": "the score datasets of an IRP job on a registered model"}
# Data-free criteria that run the network: they need the input's shape.
NEEDS_INPUT_SHAPE = ("synflow", "synflow_l2", "npb", "ntk_sap")
DEFAULT_OPTIONS = pruning.criterion_options(recipes.base_config())  # The jobs' defaults, one source.
# Options the API sets itself from its own arguments.
_API_FIELDS = {"distribution", "min_per_layer", "prunable", "batch_size", "num_batches"}


def default_prunable(path, leaf):
  """Dense and Conv kernels (every leaf with ndim >= 2); biases and norms stay dense."""
  del path
  return jnp.ndim(leaf) >= 2


def init_masks(params, prunable=None):
  """All-ones masks; `prunable`: None (ndim >= 2), a regex over leaf paths, or (path, leaf) -> bool."""
  if prunable is None:
    prunable = default_prunable
  if isinstance(prunable, str):
    return masks_lib.init_masks(params, prunable)
  if not callable(prunable):
    raise ValueError(f"prunable={prunable!r} must be a regex over leaf paths (e.g. r'kernel$') or a "
                     "function (path, leaf) -> bool.")
  masks = jax.tree_util.tree_map_with_path(
      lambda path, p: jnp.ones(jnp.shape(p), jnp.bool_) if prunable(masks_lib.path_name(path), p)
      else jnp.ones((), jnp.bool_), params)
  if not any(m.ndim > 0 for m in jax.tree.leaves(masks)):
    raise ValueError("prunable= selects no leaf of params: nothing to prune.")
  return masks


@flax.struct.dataclass
class FunctionModel:
  """A network given as apply_fn(params, x) -> logits, in the shape criteria expect of a model."""
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  spec: DatasetSpec = flax.struct.field(pytree_node=False)
  init_fn: Callable = flax.struct.field(pytree_node=False, default=None)  # key -> fresh params (NTK-SAP).
  batch_stats: Any = flax.struct.field(default_factory=dict)

  def logits(self, params, x, dtype=None):
    if dtype is not None:  # SynFlow's float64 pass: parameters and input in that dtype.
      params = jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p,
                            params)
      x = x.astype(dtype)
    return self.apply_fn(params, x)

  def inputs(self, x):
    return x  # The user's batches are the network's inputs as they are.


def _options(criterion, overrides):
  """The criterion's options: the jobs' defaults, with keyword overrides checked by name."""
  options = ml_collections.ConfigDict(DEFAULT_OPTIONS.to_dict())
  for name, value in overrides.items():
    if name not in options or name in _API_FIELDS or isinstance(options[name], ml_collections.ConfigDict):
      known = sorted(k for k in options if k not in _API_FIELDS
                     and not isinstance(options[k], ml_collections.ConfigDict))
      guess = difflib.get_close_matches(name, known, n=1)
      raise ValueError(f"{name}= is not an option of asj.prune/asj.score for {criterion!r}"
                       + (f": did you mean {guess[0]}=?" if guess else "")
                       + f" Options: {', '.join(known)}.")
    options[name] = value
  return options


def _data(batches, criterion):
  """(images [N, ...] float32, labels [N] int32, batch size) of an iterable of (x, y)."""
  if batches is None:
    raise ValueError(f"criterion {criterion!r} reads data: pass batches=[(x, y), ...] (x the network's "
                     "input batch, y the integer labels).")
  xs, ys = [], []
  for i, item in enumerate(batches):
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
      raise ValueError(f"batches[{i}] must be a pair (x, y); got {type(item).__name__}.")
    xs.append(np.asarray(item[0], np.float32))
    ys.append(np.asarray(item[1]).astype(np.int32).reshape(-1))
  if not xs:
    raise ValueError(f"batches= is empty: criterion {criterion!r} needs at least one (x, y) batch.")
  return np.concatenate(xs), np.concatenate(ys), len(ys[0])


def _network(criterion, params, apply_fn, batches, input_shape, num_classes, init_fn=None):
  """(FunctionModel, PruneData or None, batch size) for one call."""
  spec_attrs = criteria.get(criterion, "criterion")
  if criterion in NEEDS_REGISTRY_MODEL:
    raise ValueError(f"criterion {criterion!r} needs {NEEDS_REGISTRY_MODEL[criterion]}; through "
                     "asj.prune/asj.score use one of "
                     f"{', '.join(n for n in criteria.names() if n not in NEEDS_REGISTRY_MODEL)}, or run "
                     "the prune job with a registered model (config.imports).")
  if criterion == "ntk_sap" and init_fn is None:
    raise ValueError("criterion 'ntk_sap' draws fresh weights every round: pass init_fn=lambda key: params "
                     "(e.g. lambda k: net.init(k, x)['params']).")
  if apply_fn is None and (spec_attrs.data or criterion in NEEDS_INPUT_SHAPE + ("autos",)):
    raise ValueError(f"criterion {criterion!r} runs the network: pass apply_fn=lambda params, x: logits.")
  data, batch = None, 1
  if spec_attrs.data:
    images, labels, batch = _data(batches, criterion)
    data = PruneData(jnp.asarray(images), jnp.asarray(labels))
    shape = images.shape[1:]
    num_classes = num_classes or int(labels.max()) + 1
  elif input_shape is not None:
    shape = tuple(input_shape)[1:]
  elif criterion in NEEDS_INPUT_SHAPE:
    raise ValueError(f"criterion {criterion!r} is data-free but needs the input's shape: pass "
                     "input_shape=(1, ...) (a batch of one, e.g. (1, 28, 28, 1)).")
  else:
    shape = ()
  if apply_fn is not None and not num_classes and shape:
    out = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((1,) + tuple(shape), jnp.float32))
    num_classes = int(out.shape[-1])
  spec = DatasetSpec("user", tuple(shape), int(num_classes or 1), (0.0,), (1.0,))
  return FunctionModel(apply_fn, spec, init_fn), data, batch


_PROGRAMS = {}  # (what, criterion, apply_fn, spec, options) -> jitted program: compiled once per network.


def _program(what, criterion, net, opts):
  """jit(vmap) of one network's scoring or pruning over a leading axis of one, as the jobs run
  every network (the same bits); data and keep counts are arguments, not constants."""
  key = (what, criterion, net.apply_fn, net.spec, canonical_json(opts))
  if key not in _PROGRAMS:
    if what == "score":
      def fn(p, m, k, data, plan):
        scores = criteria.get(criterion).score(p, m, net, data, keys.prune_key(k, 0), opts)
        return scores, pruning.finite_layers(scores, m)
    else:
      def fn(p, m, k, data, plan):
        new, _, finite = pruning.prune_network(criterion, p, m, net, data, k, opts, plan, with_finite=True)
        return new, finite
    _PROGRAMS[key] = jax.jit(jax.vmap(fn, in_axes=(0, 0, 0, None, None)))
  return _PROGRAMS[key]


def _run(what, criterion, net, opts, params, masks, key, data, plan=None):
  add = lambda t: jax.tree.map(lambda x: jnp.asarray(x)[None], t)
  with criteria.precision_scope(criterion):
    out, finite = _program(what, criterion, net, opts)(add(params), add(masks), add(key), data, plan)
  pruning.check_finite(criterion, finite, masks)
  return jax.tree.map(lambda x: x[0], out)


def _key(key):
  if key is None:
    return jax.random.PRNGKey(0)
  key = jnp.asarray(key)
  return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def score(criterion, params, *, apply_fn=None, batches=None, input_shape=None, key=None, prunable=None,
          masks=None, num_classes=None, init_fn=None, **options):
  """Scores shaped like `params` (the LOWEST are pruned): the criterion's one-shot scores.

  options: the criterion's keywords with the jobs' defaults (temperature as
  grasp_temperature=, samples_per_class as grasp_samples_per_class=, grad_reduction=, ...).
  """
  net, data, batch = _network(criterion, params, apply_fn, batches, input_shape, num_classes, init_fn)
  opts = _options(criterion, options)
  opts.batch_size, opts.num_batches = batch, 0
  masks = init_masks(params, prunable) if masks is None else masks
  spec = criteria.get(criterion)
  if not spec.jittable:
    _, scores = pruning.host_prune(criterion, params, masks, net, data, _key(key), _host_options(opts, options),
                                   masks_lib.keep_counts(masks, 1.0))
    pruning.check_finite(criterion, pruning.finite_layers(scores, masks), masks)
    return scores
  return _run("score", criterion, net, opts, params, masks, _key(key), data)  # Round 0's key.


def _host_options(opts, options):
  """Options of a host criterion: the AutoS scorer's directory, and its g_0 reduction by default."""
  scorer = options.get("scorer")
  if scorer is not None:
    opts.autos.scorer_dir = scorer if isinstance(scorer, str) else scorer.directory
    if "grad_reduction" not in options:  # The features the scorer learnt from.
      trained = cached_scorer(opts.autos.scorer_dir).info.get("g0_reduction")
      opts.grad_reduction = trained or opts.grad_reduction
  return opts


def prune(criterion, params, *, sparsity=None, density=None, apply_fn=None, batches=None, input_shape=None,
          key=None, distribution="global", min_per_layer=0, prunable=None, masks=None, num_classes=None,
          init_fn=None, **options):
  """A mask pytree like `params` keeping exactly round(density x n) prunable weights.

  sparsity (or density = 1 - sparsity); distribution: global | layerwise | erk;
  min_per_layer: keep at least this many weights per layer (global). Iterative
  criteria run their rounds (SynFlow 100, rounds= to change; SynFlow and synflow_l2
  call apply_fn with float64 params and input: layers that fix their dtype compute
  in it, others in float64). For `autos`:
  scorer=asj.autos.pretrained(NAME) (or load_scorer(DIR), or a scorer_dir).
  """
  if (sparsity is None) == (density is None):
    raise ValueError("pass exactly one of sparsity= (fraction removed, e.g. 0.9) or density= (kept).")
  target = 1.0 - pruning.check_sparsity(sparsity, "sparsity") if density is None else \
      1.0 - pruning.check_sparsity(1.0 - float(density), "1 - density")
  if distribution not in masks_lib.DISTRIBUTIONS:
    raise ValueError(f"distribution={distribution!r} is not known: use one of "
                     f"{', '.join(masks_lib.DISTRIBUTIONS)}.")
  scorer = options.pop("scorer", None)
  if criterion == "autos" and scorer is None:
    raise ValueError("criterion 'autos' needs scorer=asj.autos.pretrained(NAME) (names: "
                     "asj.autos.pretrained_names()) or scorer=asj.autos.load_scorer(DIR).")
  net, data, batch = _network(criterion, params, apply_fn, batches, input_shape, num_classes, init_fn)
  opts = _options(criterion, options)
  opts.batch_size, opts.num_batches = batch, 0
  opts.distribution, opts.min_per_layer = distribution, int(min_per_layer)
  masks = init_masks(params, prunable) if masks is None else masks
  plan = pruning.init_plan(criterion, masks, opts, target)
  if not criteria.get(criterion).jittable:
    new, scores = pruning.host_prune(criterion, params, masks, net, data, _key(key),
                                     _host_options(opts, dict(options, scorer=scorer)), plan[-1])
    pruning.check_finite(criterion, pruning.finite_layers(scores, masks), masks)
    return jax.tree.map(jnp.asarray, new)
  return _run("prune", criterion, net, opts, params, masks, _key(key), data, plan)


def masked(tx, masks):
  """`tx` (any optax GradientTransformation) with pruned entries' updates exactly 0.

  Gradients are masked before `tx` (its moments never see pruned entries) and
  updates after it (weight decay, momentum or Adam cannot move them): with
  params = apply_masks(params, masks), pruned weights stay exactly 0.
  """
  def zero(tree):
    return jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros((), u.dtype)), tree, masks)

  def update(updates, state, params=None):
    updates, state = tx.update(zero(updates), state, params)
    return zero(updates), state

  return optax.GradientTransformation(tx.init, update)


def apply_masks(params, masks):
  """params with pruned entries set to exactly 0."""
  return masks_lib.apply_masks(params, masks)


def register_criterion(name, fn, **attributes):
  """Adds criterion `name`: fn(params, masks, model_state, prune_data, key, options) -> scores.

  model_state.logits(params, x) is the forward pass; prune_data.images /
  .labels the data; the lowest scores are pruned. attributes: see
  criteria.Criterion (data=False for data-free criteria, rounds=R, float64=True).
  Registered criteria work here and in the jobs (config.imports loads the module).
  """
  return criteria.register(name, fn, **attributes)


def criterion_names():
  return criteria.names()


__all__ = ["apply_masks", "criterion_names", "init_masks", "masked", "prune", "register_criterion", "score"]
