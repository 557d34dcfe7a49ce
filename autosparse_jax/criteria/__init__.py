"""Pruning criteria: one registry of score functions with one signature.

    score(params, masks, model_state, prune_data, key, options) -> scores

scores have the params' tree structure (unprunable leaves ignored) and the
LOWEST are pruned. `options` is the criterion's own typed record (Criterion.options,
a frozen dataclass: criteria/options.py), built by prune_spec.py from a job's config
or the API's keywords. Criteria with layer_budgets also get `budgets=`, the
per-layer keep counts. Turning scores into masks (densities, distributions,
rounds) is pruning.py's job, not a criterion's.

A Criterion records how the pruning module must run its score function:
  jittable      traced under jit/vmap (all seeds at once, R rounds as a lax.scan); False:
                runs on the host, one seed at a time, one-shot (NPB's integer programmes,
                AutoS's sharded scorer, the survival replay)
  float64       trace and run under jax.enable_x64 (SynFlow: float32 underflows)
  rounds        default rounds at init (SynFlow 100; 1 = one-shot); config.prune.rounds overrides
  density_free  the scores do not depend on the target density (host scores are reused
                across the sparsities of a sweep)
  layer_budgets the criterion needs the per-layer keep counts (options.budgets)
  revives       each round keeps the top-k over every prunable weight, pruned ones too
                (FORCE); otherwise rounds keep the top-k among the survivors (nested masks)
  data          the criterion reads the pruning data (False: data-free, e.g. SynFlow)
  runs_network  the criterion calls the network (model_state.logits): a data-free one needs the
                input's shape (the API's input_shape=); data criteria always run it
  needs_init_fn the criterion re-draws the weights (NTK-SAP: the API's init_fn=)
  needs_scorer  the criterion reads a trained AutoS scorer (the API's scorer=)
  job_only      why the criterion runs only in the jobs ('' = it runs through the API too)
  check_options options -> None, raising a named error before any compute (a scorer that does
                not load, score datasets that are missing)
  options       its options record (a frozen dataclass; DataOptions for a plain
                data criterion, NoOptions for none): each field's default, doc and
                checks are declared there once; the config schema, base_config's
                defaults and --describe read them from the records (option_fields()).
"""
import contextlib
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from autosparse_jax import programs
from autosparse_jax.criteria import fisher, force, ntk_sap, pathkernel, prospr, saliency
from autosparse_jax.criteria import autos as autos_criterion, survival as survival_criterion
from autosparse_jax.criteria.autos import AutosOptions, autos_scores
from autosparse_jax.criteria.base import ModelState, PruneData
from autosparse_jax.criteria.npb import NpbOptions, npb_scores
from autosparse_jax.criteria.options import DataOptions, NoOptions, config_path
from autosparse_jax.criteria.saliency import GraspOptions, grasp_scores, snip_scores
from autosparse_jax.criteria.survival import SurvivalOptions, survival_scores
from autosparse_jax.criteria.synflow import synflow_scores
from autosparse_jax.errors import ConfigError, unknown_name_message


@dataclasses.dataclass(frozen=True)
class Criterion:
  name: str
  score: Callable
  jittable: bool = True
  float64: bool = False
  rounds: int = 1
  density_free: bool = True
  layer_budgets: bool = False
  revives: bool = False
  data: bool = True
  options: type = DataOptions
  runs_network: bool = False
  needs_init_fn: bool = False
  needs_scorer: bool = False
  job_only: str = ""
  check_options: Callable = None

  def __post_init__(self):
    if self.data:  # Reading data means running the network on it.
      object.__setattr__(self, "runs_network", True)

  @property
  def needs_input_shape(self):
    """A data-free criterion that runs the network: the API needs the input's shape."""
    return self.runs_network and not self.data


def random_scores(params, masks, model_state, prune_data, key, options):
  """I.i.d. uniform scores: the Random baseline."""
  del masks, model_state, prune_data, options
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(tree, [jax.random.uniform(k, p.shape) for k, p in zip(keys, leaves)])


def magnitude_scores(params, masks, model_state, prune_data, key, options):
  """|theta|: the Magnitude baseline (and LTH when iterated with training)."""
  del masks, model_state, prune_data, key, options
  return jax.tree.map(jnp.abs, params)


REGISTRY = {}
BUILTIN = set()  # Names registered by the package itself (replacing one needs replace=True too).


def register(name, score, *, replace=False, **attributes):
  """Adds criterion `name` (see Criterion for the attributes); returns it.

  A name already registered is refused unless replace=True; replacing drops every
  compiled program of the old criterion (programs.forget), so nothing stale runs.
  """
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f"criterion name {name!r} must be an identifier (it is used in configs and tables).")
  if not callable(score):
    raise ValueError(f"criterion {name!r}: score must be a function "
                     "score(params, masks, model_state, prune_data, key, options) -> scores.")
  unknown = sorted(set(attributes) - {f.name for f in dataclasses.fields(Criterion)} - {"name", "score"})
  if unknown:
    raise ValueError(f"register_criterion({name!r}, ...): {unknown[0]}= is not an attribute of a criterion; "
                     f"attributes: {', '.join(f.name for f in dataclasses.fields(Criterion)[2:])}.")
  options = attributes.get("options", DataOptions)
  if not (isinstance(options, type) and dataclasses.is_dataclass(options)
          and options.__dataclass_params__.frozen):
    raise ValueError(f"register_criterion({name!r}, ..., options={options!r}): options must be a frozen "
                     "dataclass type (@dataclasses.dataclass(frozen=True)) whose fields have defaults.")
  if name in REGISTRY and not replace:
    kind = "a built-in criterion" if name in BUILTIN else "already registered"
    raise ValueError(f"criterion {name!r} is {kind}: pass replace=True to replace it for this process, or "
                     "register your criterion under another name.")
  old = REGISTRY.get(name)
  REGISTRY[name] = Criterion(name, score, **attributes)
  if old is not None:
    programs.forget(old)
  return REGISTRY[name]


register("random", random_scores, data=False, options=NoOptions)
register("magnitude", magnitude_scores, data=False, options=NoOptions)
register("snip", snip_scores)
register("grasp", grasp_scores, options=GraspOptions)
register("synflow", synflow_scores, float64=True, rounds=100, data=False, runs_network=True, options=NoOptions)
register("npb", npb_scores, jittable=False, density_free=False, layer_budgets=True, data=False,
         runs_network=True, options=NpbOptions)
register("autos", autos_scores, jittable=False, options=AutosOptions, needs_scorer=True,
         check_options=autos_criterion.check_options)
register("survival", survival_scores, jittable=False, data=False, options=SurvivalOptions,
         job_only="the score datasets of an IRP job on a registered model",
         check_options=survival_criterion.check_options)
_MODULES = (saliency, pathkernel, ntk_sap, prospr, force, fisher)
for _module in _MODULES:
  for _name, _spec in _module.CRITERIA.items():
    register(_name, _spec["score"], float64=_spec["float64"], rounds=_spec["rounds"],
             revives=_spec["revives"], data=_spec["data"], options=_spec["options"],
             runs_network=_spec.get("runs_network", _spec["data"]), needs_init_fn=_spec.get("needs_init_fn", False))
BUILTIN.update(REGISTRY)


def option_fields():
  """{config path: (record type, dataclasses.Field)} over every registered criterion's options,
  in registration order: where base_config's defaults and the schema's fields come from."""
  out = {}
  for criterion in REGISTRY.values():
    for field in dataclasses.fields(criterion.options):
      out.setdefault(config_path(field), (criterion.options, field))
  return out


def names():
  return tuple(REGISTRY)


def jittable_names():
  return tuple(n for n, c in REGISTRY.items() if c.jittable)


def get(name, field="config.criterion", extra=("none",)):
  """The Criterion `name`, or a ConfigError naming `field` with the known names (and `extra`:
  the jobs' 'none'; the API passes none)."""
  if name not in REGISTRY:
    raise ConfigError(unknown_name_message(field, name, tuple(extra) + names()))
  return REGISTRY[name]


def precision_scope(name):
  """Context to trace and run criterion `name` in (float64 for SynFlow)."""
  return jax.enable_x64(True) if get(name).float64 else contextlib.nullcontext()


__all__ = ["Criterion", "DataOptions", "ModelState", "NoOptions", "PruneData", "REGISTRY", "get",
           "jittable_names", "names", "option_fields", "precision_scope", "register"]
