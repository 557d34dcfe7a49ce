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
import dataclasses
import re
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from autosparse_jax import criteria, keys, masks as masks_lib, programs, prune_spec, pruning, structure as structure_lib
from autosparse_jax.console import log
from autosparse_jax.criteria.autos import cached_scorer
from autosparse_jax.criteria.base import PruneData
from autosparse_jax.data.specs import DatasetSpec
from autosparse_jax.errors import ConfigError

# Options the API sets itself from its own arguments (batches=, scorer=): not keywords.
_FIXED_OPTIONS = ("batch_size", "num_batches", "scorer_dir")
# Compiled programs of the API, least recently used dropped first: a program holds its executable
# (device memory), so a long session that prunes many networks keeps only the recent ones.
_PROGRAMS = programs.BoundedCache(32, "api programs")

default_prunable = masks_lib.default_prunable


def init_masks(params, prunable=None):
  """All-ones masks; `prunable`: None / 'default' (default_prunable), a regex over leaf paths, or a
  function (path, leaf) -> bool."""
  return masks_lib.init_masks(params, prunable, field="prunable")


@flax.struct.dataclass
class FunctionModel:
  """A network given as apply_fn(params, x) -> logits, in the shape criteria expect of a model."""
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  spec: DatasetSpec = flax.struct.field(pytree_node=False)
  init_fn: Callable = flax.struct.field(pytree_node=False, default=None)  # key -> fresh params (NTK-SAP).
  batch_stats: Any = flax.struct.field(default_factory=dict)

  def logits(self, params, x, dtype=None):
    if self.apply_fn is None:
      raise ValueError("this criterion calls the network, but it was registered without runs_network=True: "
                       "register it with asj.register_criterion(name, fn, data=False, runs_network=True) and "
                       "pass input_shape= (or batches=).")
    if dtype is not None:  # SynFlow's float64 pass: parameters and input in that dtype.
      params = jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p,
                            params)
      x = x.astype(dtype)
    return self.apply_fn(params, x)

  def inputs(self, x):
    return x  # The user's batches are the network's inputs as they are.


# ---- Checks of the arguments: each a ValueError naming the argument and the fix, before any compute.

def _criterion(name):
  if not isinstance(name, str):
    raise ValueError(f"criterion={name!r} must be a criterion's name (a string): one of "
                     f"{', '.join(criteria.names())}.")
  try:
    criterion = criteria.get(name, "criterion", extra=())
  except ConfigError as e:
    raise ValueError(str(e)) from None
  if criterion.job_only:
    raise ValueError(f"criterion {name!r} needs {criterion.job_only}; through "
                     "asj.prune/asj.score use one of "
                     f"{', '.join(n for n, c in criteria.REGISTRY.items() if not c.job_only)}, or run "
                     "the prune job with a registered model (config.imports).")
  return criterion


def _leaf_names(tree):
  return [masks_lib.path_name(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _check_params(params):
  leaves = jax.tree_util.tree_leaves_with_path(params)
  if not leaves:
    raise ValueError("params= has no array leaves: pass the network's parameter pytree (e.g. "
                     "net.init(key, x)['params'], or the State of nnx.split).")
  for path, leaf in leaves:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"params leaf {masks_lib.path_name(path)!r} has dtype {dtype or type(leaf).__name__}: "
                       "criteria differentiate and rank floating-point weights only. Keep integer or other "
                       "state out of params= (e.g. in another Flax collection, or split it off with "
                       "nnx.split(model, nnx.Param, ...)).")


def _check_masks(params, masks):
  masks = masks_lib.check_masks(params, masks)
  if not any(np.ndim(m) > 0 for m in jax.tree.leaves(masks)):
    raise ValueError("masks= has no prunable leaf (every leaf is 0-d): nothing to prune.")
  return masks


def _key(key):
  """Raw uint32[2] key data of `key` (a jax.random.key or PRNGKey); None = key 0."""
  if key is None:
    return jax.random.PRNGKey(0)
  if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
    raise ValueError(f"key={key!r} is an integer, not a PRNG key: pass key=jax.random.key({key}).")
  try:
    key = jnp.asarray(key)
  except TypeError:
    raise ValueError(f"key={key!r} must be a PRNG key: jax.random.key(seed) or jax.random.PRNGKey(seed).") from None
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape != ():
      raise ValueError(f"key= must be one PRNG key, got an array of keys of shape {key.shape}: pass one, "
                       "e.g. keys[0].")
    return jax.random.key_data(key)
  if key.shape != (2,) or key.dtype != jnp.uint32:
    raise ValueError(f"key= must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)), got an "
                     f"array of dtype {key.dtype} and shape {key.shape}.")
  return key


def _data(batches, criterion):
  """(x [N, ...] float32, y [N] int32, batch size) of an iterable of (x, y) pairs, checked."""
  if batches is None:
    raise ValueError(f"criterion {criterion!r} reads data: pass batches=[(x, y), ...] (x the network's "
                     "input batch, y the integer labels).")
  if isinstance(batches, tuple) and len(batches) == 2 and np.ndim(batches[1]) == 1 and np.ndim(batches[0]) > 1:
    raise ValueError("batches= looks like one (x, y) pair: pass a list of pairs, batches=[(x, y)].")
  try:
    items = list(batches)
  except TypeError:
    raise ValueError(f"batches= must be an iterable of (x, y) pairs, got {type(batches).__name__}.") from None
  if not items:
    raise ValueError(f"batches= is empty: criterion {criterion!r} needs at least one (x, y) batch.")
  xs, ys = [], []
  for i, item in enumerate(items):
    if not (isinstance(item, (tuple, list)) and len(item) == 2):
      raise ValueError(f"batches[{i}] must be a pair (x, y) of an input batch and its integer labels; got "
                       f"{type(item).__name__}{f' of length {len(item)}' if hasattr(item, '__len__') else ''}.")
    x, y = np.asarray(item[0]), np.asarray(item[1])
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)) or x.ndim < 2:
      raise ValueError(f"batches[{i}][0] (x) must be a numeric array [batch, ...] (ndim >= 2), got dtype "
                       f"{x.dtype} and shape {x.shape}.")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
      hint = " (one-hot labels? pass y.argmax(-1))" if y.ndim == 2 else ""
      raise ValueError(f"batches[{i}][1] (y) must be integer class labels of shape [batch], got dtype {y.dtype} "
                       f"and shape {y.shape}{hint}.")
    if len(y) != len(x):
      raise ValueError(f"batches[{i}]: x has {len(x)} examples but y has {len(y)} labels.")
    if xs and x.shape[1:] != xs[0].shape[1:]:
      raise ValueError(f"batches[{i}][0] has example shape {x.shape[1:]}, batches[0][0] has {xs[0].shape[1:]}: "
                       "every batch must hold inputs of one shape.")
    xs.append(x.astype(np.float32))
    ys.append(y.astype(np.int32))
  return np.concatenate(xs), np.concatenate(ys), len(ys[0])


def _logits_width(apply_fn, params, example_shape, argument):
  """The logits' width of apply_fn on a batch of `example_shape`, by one abstract evaluation (no compute)."""
  x = jax.ShapeDtypeStruct((2,) + tuple(example_shape), jnp.float32)
  try:
    out = jax.eval_shape(apply_fn, params, x)
  except Exception as e:  # noqa: BLE001  (whatever the user's network raises on a wrong shape)
    params_fault = _params_fault(e, params, argument, example_shape)
    if params_fault:
      raise ValueError(params_fault) from None
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ValueError(f"apply_fn(params, x) fails on x of {argument} with example shape {tuple(example_shape)} "
                     f"({type(e).__name__}: {first[:300]}). Pass inputs in the layout your network expects "
                     "(e.g. NHWC images for Flax convolutions, not NCHW or flattened).") from None
  if not hasattr(out, "shape") or len(out.shape) != 2 or out.shape[0] != 2:
    raise ValueError(f"apply_fn(params, x) must return logits [batch, classes]; on x of {argument} with example "
                     f"shape {tuple(example_shape)} it returns {getattr(out, 'shape', type(out).__name__)}.")
  return int(out.shape[1])


_FLAX_PARAM_SHAPE = re.compile(r'For parameter "([^"]+)" in "([^"]*)", the given initializer is expected to generate '
                               r'shape (\([^)]*\)), but the existing parameter it received has shape (\([^)]*\))')
_FLAX_PARAM_MISSING = re.compile(r'Could not find parameter named "([^"]+)" in scope "([^"]*)"')
_SHAPE = re.compile(r"\((\d+(?:, ?\d+)*),?\)")


def _params_fault(error, params, argument, example_shape):
  """The one-line message when apply_fn failed because `params` are not its model's (a Flax parameter of
  another shape or missing; or a shape error naming exactly one params leaf's shape), else None."""
  text = str(error)
  where = f"on x of {argument} with example shape {tuple(example_shape)}"
  fix = "Pass the params this apply_fn's network was initialised with (e.g. net.init(key, x)['params'])."
  match = _FLAX_PARAM_SHAPE.search(text)
  if match:
    name, scope, expected, got = match.groups()
    leaf = "/".join([part for part in scope.split("/") if part] + [name])
    hint = ""
    exp, have = (tuple(int(d) for d in re.findall(r"\d+", shape)) for shape in (expected, got))
    if len(exp) == len(have) >= 2 and exp[-1] == have[-1] and exp[:-2] == have[:-2]:
      hint = (f" Only its input axis differs: if the params are right, x of {argument} has the wrong layout "
              "for them (e.g. NHWC images for Flax convolutions, not NCHW or flattened).")
    return (f"params do not fit apply_fn's model: params leaf {leaf!r} has shape {got}, but the model makes it "
            f"{expected} {where}. {fix}{hint}")
  match = _FLAX_PARAM_MISSING.search(text)
  if match:
    name, scope = match.groups()
    leaf = "/".join([part for part in scope.split("/") if part] + [name])
    return (f"params do not fit apply_fn's model: it reads params leaf {leaf!r}, which params= does not have "
            f"({where}). {fix}")
  if isinstance(error, (TypeError, ValueError)) and "shape" in text.lower():
    x_shapes = {tuple(example_shape), (2,) + tuple(example_shape)}
    shapes = {tuple(int(d) for d in re.findall(r"\d+", m)) for m in _SHAPE.findall(text)} - x_shapes
    leaves = [(masks_lib.path_name(path), tuple(np.shape(leaf)))
              for path, leaf in jax.tree_util.tree_leaves_with_path(params) if np.ndim(leaf) >= 2]
    whole = [(n, shape) for n, shape in leaves if shape in shapes]
    part = [(n, shape) for n, shape in leaves
            if any(0 < len(s) < len(shape) and s in (shape[:len(s)], shape[-len(s):]) for s in shapes)]
    named = whole if len(whole) == 1 else part if len(part) == 1 else []
    if named:
      name, shape = named[0]
      first = text.strip().splitlines()[0][:200]
      return (f"params do not fit apply_fn's model: params leaf {name!r} has shape {shape}, and apply_fn fails "
              f"on it ({where}; {type(error).__name__}: {first}). {fix} If the params are right, pass inputs in "
              "the layout they were made for.")
  return None


def _network(attrs, params, apply_fn, batches, input_shape, num_classes, init_fn):
  """(FunctionModel, PruneData or None, batch size, apply_fn's fingerprint) of one call, checked.

  What is needed comes from the criterion's record (data, runs_network, needs_init_fn). A criterion
  that does not run the network gets a model without apply_fn, so no compiled program can hold one.
  """
  criterion = attrs.name
  if attrs.needs_init_fn and not callable(init_fn):
    raise ValueError(f"criterion {criterion!r} draws fresh weights every round: pass init_fn=lambda key: params "
                     "(e.g. lambda k: net.init(k, x)['params']).")
  if apply_fn is None and attrs.runs_network:
    raise ValueError(f"criterion {criterion!r} runs the network: pass apply_fn=lambda params, x: logits.")
  if apply_fn is not None and not callable(apply_fn):
    raise ValueError(f"apply_fn= must be a function (params, x) -> logits, got {type(apply_fn).__name__}.")
  if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
                                  or num_classes < 1):
    raise ValueError(f"num_classes={num_classes!r} must be a positive integer (the logits' width).")
  data, batch, shape = None, 1, ()
  if attrs.data:
    images, labels, batch = _data(batches, criterion)
    data, shape, argument = PruneData(jnp.asarray(images), jnp.asarray(labels)), images.shape[1:], "batches="
  elif input_shape is not None:
    if (not isinstance(input_shape, (tuple, list)) or len(input_shape) < 2
            or not all(isinstance(d, (int, np.integer)) and d > 0 for d in input_shape)):
      raise ValueError(f"input_shape={input_shape!r} must be a batch's shape (1, ...) of positive integers, "
                       "e.g. (1, 28, 28, 1).")
    shape, argument = tuple(int(d) for d in input_shape)[1:], "input_shape="
  elif attrs.needs_input_shape:
    raise ValueError(f"criterion {criterion!r} is data-free but runs the network, so it needs the input's shape: "
                     "pass input_shape=(1, ...) (a batch of one, e.g. (1, 28, 28, 1)).")
  fingerprint = None
  if attrs.runs_network:
    width = _logits_width(apply_fn, params, shape, argument)
    if num_classes is not None and int(num_classes) != width:
      raise ValueError(f"num_classes={num_classes} but apply_fn returns {width} logits: drop num_classes= "
                       "(it is read from the logits) or fix the network.")
    num_classes = width
    if data is not None:
      low, high = int(data.labels.min()), int(data.labels.max())
      if low < 0 or high >= width:
        raise ValueError(f"the labels in batches= span {low}..{high}, but apply_fn returns {width} logits: "
                         f"labels must be class indices in [0, {width}) (e.g. 1..10 -> y - 1).")
    # Every program that runs the network is keyed by the function it was given, whatever the criterion.
    fingerprint = programs.function_fingerprint(apply_fn, params, jax.ShapeDtypeStruct((1,) + tuple(shape),
                                                                                       jnp.float32))
    if attrs.needs_init_fn:
      fingerprint = (fingerprint, programs.function_fingerprint(init_fn, jax.random.PRNGKey(0)))
  else:
    apply_fn, init_fn = None, None  # Not called: the program must not capture them.
  spec = DatasetSpec("user", tuple(shape), int(num_classes or 1), (0.0,), (1.0,))
  return FunctionModel(apply_fn, spec, init_fn), data, batch, fingerprint


def _scorer_dir(attrs, scorer):
  """The AutoS scorer's directory of `scorer=` (criteria that need a scorer only)."""
  if not attrs.needs_scorer:
    if scorer is not None:
      readers = " or ".join(repr(n) for n, c in criteria.REGISTRY.items() if c.needs_scorer)
      raise ValueError(f"scorer= is for criterion {readers} only, not {attrs.name!r}: drop it.")
    return None
  if scorer is None:
    raise ValueError(f"criterion {attrs.name!r} needs scorer=asj.autos.pretrained(NAME) (names: "
                     "asj.autos.pretrained_names()) or scorer=asj.autos.load_scorer(DIR).")
  directory = scorer if isinstance(scorer, str) else getattr(scorer, "directory", None)
  if not isinstance(directory, str) or not hasattr(cached_scorer_or_none(directory), "features"):
    raise ValueError(f"scorer={scorer!r} is not an AutoS scorer: pass asj.autos.pretrained(NAME), "
                     "asj.autos.load_scorer(DIR) or the scorer_dir (a path) an autos_train job wrote.")
  return directory


def cached_scorer_or_none(directory):
  try:
    return cached_scorer(directory)
  except (OSError, ValueError, KeyError, ConfigError):
    return None


def _spec(criterion, density, options, scorer_dir, batch_size, **settings):
  """The call's PruneSpec; batch_size / num_batches come from batches=, scorer_dir from scorer=."""
  fixed = [n for n in _FIXED_OPTIONS if n in options]
  if fixed:
    raise ValueError(f"{fixed[0]}= is set by asj.prune/asj.score itself (batch_size and num_batches from "
                     "batches=, scorer_dir from scorer=): drop it.")
  preset = dict(batch_size=batch_size, num_batches=0)  # The user's batches, all of them.
  if scorer_dir is not None:
    preset["scorer_dir"] = scorer_dir
    if "grad_reduction" not in options:  # The g_0 features the scorer learnt from.
      options = dict(options, grad_reduction=cached_scorer(scorer_dir).info.get("g0_reduction") or "sum")
  try:
    return prune_spec.from_keywords(criterion, density=density, fixed=_FIXED_OPTIONS, preset=preset,
                                    **settings, **options)
  except ConfigError as e:
    raise ValueError(str(e)) from None


def _prepare(criterion, params, apply_fn, batches, input_shape, key, prunable, masks, num_classes, init_fn,
             scorer, density, options, **settings):
  """Every check of one call, in order, before any compute: (criterion, spec, net, data, masks, key, fp)."""
  attrs = _criterion(criterion)
  _check_params(params)
  scorer_dir = _scorer_dir(attrs, scorer)
  prunable_spec = prunable if prunable is not None else masks_lib.DEFAULT_PRUNABLE
  spec = _spec(criterion, density, options, scorer_dir, 1, prunable=prunable_spec, **settings)  # Options first.
  if masks is None:
    masks = init_masks(params, prunable)
  else:
    if prunable is not None:
      raise ValueError("pass masks= or prunable=, not both: masks= already says which leaves are prunable.")
    masks = _check_masks(params, masks)
  key = _key(key)
  net, data, batch, fingerprint = _network(attrs, params, apply_fn, batches, input_shape, num_classes, init_fn)
  if isinstance(spec.options, criteria.DataOptions):  # The pruning data: the user's batches, all of them.
    spec = dataclasses.replace(spec, options=dataclasses.replace(spec.options, batch_size=batch))
  return attrs, spec, net, data, masks, key, fingerprint


def _program(what, attrs, spec, net, fingerprint, params):
  """jit(vmap) of one network's scoring or pruning over a leading axis of one, as the jobs run
  every network (the same bits); data and keep counts are arguments, not constants. Cached by
  programs.program_key: the criterion's record, the spec, the network's fingerprint, the shapes."""
  key = programs.program_key(f"api_{what}", spec=spec, criterion=attrs, model=(fingerprint, net.spec),
                             args=(params,))

  def build():
    if what == "score":
      def fn(p, m, k, data, plan):
        scores = attrs.score(p, m, net, data, keys.prune_key(k, 0), spec.options)
        return scores, pruning.finite_layers(scores, m)
    else:
      def fn(p, m, k, data, plan):
        new, _, finite = pruning.prune_network(spec, p, m, net, data, k, plan)
        return new, finite
    return jax.jit(jax.vmap(fn, in_axes=(0, 0, 0, None, None)))

  return _PROGRAMS.get(key, build)


def _run(what, attrs, spec, net, fingerprint, params, masks, key, data, plan=None):
  add = lambda t: jax.tree.map(lambda x: jnp.asarray(x)[None], t)
  program = _program(what, attrs, spec, net, fingerprint, params)
  with criteria.precision_scope(attrs.name):
    out, finite = program(add(params), add(masks), add(key), data, plan)
  pruning.check_finite(attrs.name, finite, masks)
  return jax.tree.map(lambda x: x[0], out)


def score(criterion, params, *, apply_fn=None, batches=None, input_shape=None, key=None, prunable=None,
          masks=None, num_classes=None, init_fn=None, scorer=None, **options):
  """Scores shaped like `params` (the LOWEST are pruned): the criterion's one-shot scores (round 0).

  options: the criterion's own options (its record: prune_spec.option_names(criterion)),
  e.g. grasp_temperature=, grasp_samples_per_class=, grad_reduction=.
  """
  attrs, spec, net, data, masks, key, fingerprint = _prepare(
      criterion, params, apply_fn, batches, input_shape, key, prunable, masks, num_classes, init_fn, scorer,
      1.0, options)
  if not attrs.jittable:
    _, scores = pruning.host_prune(spec, params, masks, net, data, key, masks_lib.keep_counts(masks, 1.0))
    pruning.check_finite(criterion, pruning.finite_layers(scores, masks), masks)
    return scores
  return _run("score", attrs, spec, net, fingerprint, params, masks, key, data)


def prune(criterion, params, *, sparsity=None, density=None, apply_fn=None, batches=None, input_shape=None,
          key=None, distribution="global", min_per_layer=0, rounds=0, round_schedule="exponential",
          ablation="none", structure="unstructured", group_reduce="sum",
          kernel_layout=structure_lib.DEFAULT_KERNEL_LAYOUT,
          structure_fallback=structure_lib.DEFAULT_STRUCTURE_FALLBACK, prunable=None, masks=None,
          num_classes=None, init_fn=None, scorer=None, **options):
  """A mask pytree like `params` keeping exactly round(density x n) prunable weights.

  sparsity (or density = 1 - sparsity); distribution: global | layerwise | erk;
  min_per_layer: keep at least this many weights per layer (global only). Iterative
  criteria run their rounds (SynFlow 100; rounds= to change, round_schedule= their
  densities; SynFlow and synflow_l2 call apply_fn with float64 params and input:
  layers that fix their dtype compute in it, others in float64). ablation=: Frankle et
  al.'s sanity checks ('invert' prunes the highest scores). structure=: 'unstructured', 'N:M'
  (e.g. '2:4', with sparsity=1 - N/M), 'block:RxC' or 'channel' (structure.py), group scores
  reduced by group_reduce= (sum | mean | max). N:M groups M consecutive input channels at one tap
  of a conv (either layout) or M consecutive inputs of a dense layer; kernel_layout={regex: layout}
  names the layout of a leaf the rules cannot see (structure.KERNEL_LAYOUTS). A layer that cannot
  take the structure is refused with the prunable= regex that leaves it dense;
  structure_fallback='dense' leaves every such layer dense instead (logged). For `autos`:
  scorer=asj.autos.pretrained(NAME) (or load_scorer(DIR), or a scorer_dir).
  """
  if (sparsity is None) == (density is None):
    raise ValueError("pass exactly one of sparsity= (fraction removed, e.g. 0.9) or density= (kept).")
  try:
    target = 1.0 - prune_spec.check_sparsity(sparsity, "sparsity") if density is None else \
        1.0 - prune_spec.check_sparsity(1.0 - float(density), "1 - density")
  except (ValueError, TypeError) as e:
    raise ValueError(str(e) if density is None else f"density={density!r} must be a number in (0, 1) (the "
                     "fraction of prunable weights kept).") from None
  if ablation in ("shuffle_layerwise", "reinit"):
    raise ValueError(f"ablation={ablation!r} changes the network after pruning (the jobs' TrainState): "
                     "through asj.prune use ablation='none' or 'invert'.")
  attrs, spec, net, data, masks, key, fingerprint = _prepare(
      criterion, params, apply_fn, batches, input_shape, key, prunable, masks, num_classes, init_fn, scorer,
      target, options, distribution=distribution, min_per_layer=min_per_layer, rounds=rounds,
      round_schedule=round_schedule, ablation=ablation, structure=structure, group_reduce=group_reduce,
      kernel_layout=kernel_layout, structure_fallback=structure_fallback)
  dense = prune_spec.check_layers(spec, masks)
  if dense:
    log(f"structure {spec.structure}: left dense (structure_fallback='dense'): {', '.join(dense)}")
  plan = spec.plan(masks)
  if not attrs.jittable:
    new, _ = pruning.host_prune(spec, params, masks, net, data, key, plan[-1])
    return jax.tree.map(jnp.asarray, new)
  return _run("prune", attrs, spec, net, fingerprint, params, masks, key, data, plan)


def masked(tx, masks):
  """`tx` (any optax GradientTransformation) with pruned entries' updates exactly 0.

  Gradients are masked before `tx` (its moments never see pruned entries) and
  updates after it (weight decay, momentum or Adam cannot move them): with
  params = apply_masks(params, masks), pruned weights stay exactly 0. masks: bool (or 0/1)
  masks of the params' tree and shapes; init(params) refuses others, naming the first leaf that
  differs. Static masks only: for masks that change while training, asj.sparse_training.
  """
  masks = masks_lib.check_masks(masks, masks)  # bool, or a named error for other values.

  def zero(tree):
    return jax.tree.map(lambda u, m: jnp.where(m, u, jnp.zeros((), u.dtype)), tree, masks)

  def init(params):
    masks_lib.check_masks(params, masks)
    return tx.init(params)

  def update(updates, state, params=None):
    masks_lib.check_masks(updates, masks, params_argument="the updates")
    updates, state = tx.update(zero(updates), state, params)
    return zero(updates), state

  return optax.GradientTransformation(init, update)


def apply_masks(params, masks):
  """params with pruned entries set to exactly 0; masks of another tree or shape are refused, naming
  the first leaf that differs (masks.check_masks)."""
  return masks_lib.apply_masks(params, masks_lib.check_masks(params, masks))


def register_criterion(name, fn, *, replace=False, **attributes):
  """Adds criterion `name`: fn(params, masks, model_state, prune_data, key, options) -> scores.

  model_state.logits(params, x) is the forward pass; prune_data.images /
  .labels the data; `options` is an instance of attributes' options= record
  (a frozen dataclass; default criteria.DataOptions: batch_size, num_batches,
  grad_reduction); the lowest scores are pruned. attributes: see
  criteria.Criterion (data=False for data-free criteria, rounds=R, float64=True).
  A name already registered (a built-in such as 'snip' included) is refused unless
  replace=True, which also drops every compiled program of the old function.
  Registered criteria work here and in the jobs (config.imports loads the module).
  """
  return criteria.register(name, fn, replace=replace, **attributes)


def criterion_names():
  return criteria.names()


__all__ = ["apply_masks", "criterion_names", "init_masks", "masked", "prune", "register_criterion", "score"]
