"""Pruning criteria: one registry of score functions with one signature.

    score(params, masks, model_state, prune_data, key, options) -> scores

scores have the params' tree structure (unprunable leaves ignored) and the
LOWEST are pruned. `options` is config.prune (plus the `autos` and `survival`
groups; `budgets`, the per-layer keep counts, for criteria with
layer_budgets). Turning scores into masks (densities, distributions, rounds)
is pruning.py's job, not a criterion's.

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

Each criterion module lists its config.prune options with their defaults in
DEFAULTS (OPTION_DEFAULTS merges them; recipes.base_config puts them in config.prune).
"""
import contextlib
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from autosparse_jax.criteria import fisher, force, ntk_sap, pathkernel, prospr, saliency
from autosparse_jax.criteria.autos import autos_scores
from autosparse_jax.criteria.base import ModelState, PruneData
from autosparse_jax.criteria.npb import DEFAULTS as NPB_DEFAULTS, npb_scores
from autosparse_jax.criteria.saliency import grasp_scores, snip_scores
from autosparse_jax.criteria.survival import survival_scores
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


def register(name, score, **attributes):
  """Adds criterion `name` (see Criterion for the attributes); returns it."""
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f"criterion name {name!r} must be an identifier (it is used in configs and tables).")
  if not callable(score):
    raise ValueError(f"criterion {name!r}: score must be a function "
                     "score(params, masks, model_state, prune_data, key, options) -> scores.")
  REGISTRY[name] = Criterion(name, score, **attributes)
  return REGISTRY[name]


register("random", random_scores, data=False)
register("magnitude", magnitude_scores, data=False)
register("snip", snip_scores)
register("grasp", grasp_scores)
register("synflow", synflow_scores, float64=True, rounds=100, data=False)
register("npb", npb_scores, jittable=False, density_free=False, layer_budgets=True, data=False)
register("autos", autos_scores, jittable=False)
register("survival", survival_scores, jittable=False, data=False)
_MODULES = (saliency, pathkernel, ntk_sap, prospr, force, fisher)
for _module in _MODULES:
  for _name, _spec in _module.CRITERIA.items():
    register(_name, _spec["score"], float64=_spec["float64"], rounds=_spec["rounds"],
             revives=_spec["revives"], data=_spec["data"])

# config.prune options of the criteria, with their defaults (npb's are prefixed npb_).
OPTION_DEFAULTS = {f"npb_{name}": value for name, value in NPB_DEFAULTS.items()}
for _module in _MODULES:
  OPTION_DEFAULTS.update(_module.DEFAULTS)


def names():
  return tuple(REGISTRY)


def jittable_names():
  return tuple(n for n, c in REGISTRY.items() if c.jittable)


def get(name, field="config.criterion"):
  """The Criterion `name`, or a ConfigError naming `field` with the known names."""
  if name not in REGISTRY:
    raise ConfigError(unknown_name_message(field, name, ("none",) + names()))
  return REGISTRY[name]


def precision_scope(name):
  """Context to trace and run criterion `name` in (float64 for SynFlow)."""
  return jax.enable_x64(True) if get(name).float64 else contextlib.nullcontext()


__all__ = ["Criterion", "ModelState", "PruneData", "REGISTRY", "get", "jittable_names", "names",
           "precision_scope", "register"]
