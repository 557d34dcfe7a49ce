"""PruneSpec: what to prune and how, one frozen record built here from a job's config or the API's keywords.

    spec = prune_spec.from_config(config, criterion="snip", sparsity=0.9)   # the jobs
    spec = prune_spec.from_keywords("snip", sparsity=0.9, distribution="erk")  # asj.prune / asj.score

pruning.py takes it explicitly (no ConfigDict below this module). Its `options`
is the criterion's own typed record (criteria/options.py): the record declares
each option's default once, and both builders fill it from the same fields, so
the same settings give the same spec, the same compiled program and the same
masks through either door.
"""
import dataclasses
import difflib
from typing import Any, Callable, Union

from autosparse_jax import criteria, masks as masks_lib, structure as structure_lib
from autosparse_jax.criteria.options import DataOptions, config_path, from_values
from autosparse_jax.errors import ConfigError

ROUND_SCHEDULES = ("exponential", "linear")
ABLATIONS = ("none", "shuffle_layerwise", "reinit", "invert")


@dataclasses.dataclass(frozen=True)
class PruneSpec:
  """A pruning at init: criterion, target density, layer distribution, rounds, ablation, prunable, options.

  density       kept fraction of the prunable weights at the end (1 - sparsity)
  distribution  global | layerwise | erk (masks.DISTRIBUTIONS)
  min_per_layer keep at least this many weights in every layer (global only)
  rounds        rounds at init (0 = the criterion's default: SynFlow 100, most 1)
  schedule      the rounds' densities: exponential | linear
  ablation      Frankle et al.'s sanity check (pruning.ABLATIONS)
  prunable      'default' (masks.default_prunable), a regex over leaf paths, or (path, leaf) -> bool
  options       the criterion's options record (criteria.get(criterion).options)
  structure     unstructured | N:M (e.g. 2:4) | block:RxC | channel (structure.py)
  group_reduce  sum | mean | max: a group's score from its members' (block, channel)
  """
  criterion: str
  density: float = 1.0
  distribution: str = "global"
  min_per_layer: int = 0
  rounds: int = 0
  schedule: str = "exponential"
  ablation: str = "none"
  prunable: Union[str, Callable] = masks_lib.DEFAULT_PRUNABLE
  options: Any = None
  structure: str = structure_lib.UNSTRUCTURED
  group_reduce: str = "sum"

  def __post_init__(self):
    if self.options is None:
      object.__setattr__(self, "options", criteria.get(self.criterion).options())

  @property
  def parsed_structure(self):
    return structure_lib.parse(self.structure)

  @property
  def sparsity(self):
    return 1.0 - self.density

  @property
  def num_rounds(self):
    return int(self.rounds) or criteria.get(self.criterion).rounds

  def with_density(self, density):
    return dataclasses.replace(self, density=float(density))

  def program_fields(self):
    """Every field a compiled pruning program reads: all but the density (keep counts are an argument)."""
    return (self.criterion, self.distribution, int(self.min_per_layer), self.num_rounds, self.schedule,
            self.ablation, self.prunable, self.options, self.structure, self.group_reduce)


def _config_value(config, path):
  node = config
  for part in path.split("."):
    if part not in node:
      return dataclasses.MISSING
    node = node[part]
  return node


def options_from_config(config, criterion):
  """The criterion's options record with the values of config (each field at its config path)."""
  record = criteria.get(criterion).options
  values = {}
  for field in dataclasses.fields(record):
    value = _config_value(config, config_path(field))
    if value is not dataclasses.MISSING:
      values[field.name] = value
  try:
    return from_values(record, values, "config.")
  except ValueError as e:
    raise ConfigError(str(e)) from None


def from_config(config, criterion=None, sparsity=None):
  """The spec of a job's config (config.criterion / config.sparsity unless given)."""
  criterion = config.criterion if criterion is None else criterion
  sparsity = float(config.get("sparsity", 0.0) if sparsity is None else sparsity)
  prune = config.prune
  return PruneSpec(
      criterion=criterion, density=1.0 - sparsity, distribution=prune.distribution,
      min_per_layer=int(prune.min_per_layer), rounds=int(prune.get("rounds", 0)),
      schedule=prune.get("round_schedule", "exponential"), ablation=prune.get("ablation", "none"),
      prunable=prune.prunable, options=options_from_config(config, criterion),
      structure=prune.get("structure", structure_lib.UNSTRUCTURED), group_reduce=prune.get("group_reduce", "sum"))


def check_structure(text, density, field="structure", density_field="sparsity"):
  """The parsed structure; N:M fixes the density at N/M, so another density is refused."""
  parsed = structure_lib.parse(text, field)
  if parsed.kind == "nm" and abs(float(density) - parsed.n / parsed.m) > 1e-9:
    wanted = parsed.n / parsed.m if density_field.endswith("density") else 1 - parsed.n / parsed.m
    raise ValueError(f"{field}={text!r} keeps exactly {parsed.n} of every {parsed.m} weights (density "
                     f"{parsed.n / parsed.m:g}), but {density_field} asks for density {float(density):g}: set "
                     f"{density_field} to {wanted:g}.")
  return parsed


def option_names(criterion):
  return tuple(f.name for f in dataclasses.fields(criteria.get(criterion, "criterion", extra=()).options))


def from_keywords(criterion, *, density=1.0, distribution="global", min_per_layer=0, rounds=0,
                  round_schedule="exponential", ablation="none", prunable=masks_lib.DEFAULT_PRUNABLE,
                  structure=structure_lib.UNSTRUCTURED, group_reduce="sum", fixed=(), preset=None, **options):
  """The spec of the API's keywords; ValueError naming a keyword that is not this criterion's option.

  fixed: option names the caller sets itself (the API's batch_size from its batches, scorer_dir
  from scorer=): refused as keywords; preset: their values (only those the record has).
  """
  record = criteria.get(criterion, "criterion", extra=()).options
  known = [n for n in option_names(criterion) if n not in fixed]
  for name in options:
    if name not in known:
      every = sorted({f.name for c in criteria.REGISTRY.values() for f in dataclasses.fields(c.options)})
      guess = difflib.get_close_matches(name, known or every, n=1)
      elsewhere = name in every and name not in fixed
      raise ValueError(
          f"{name}= is not an option of criterion {criterion!r}"
          + (" (it is another criterion's)" if elsewhere else "")
          + (f": did you mean {guess[0]}=?" if guess else ".")
          + (f" Its options: {', '.join(known)}." if known else f" {criterion!r} takes no options."))
  if distribution not in masks_lib.DISTRIBUTIONS:
    raise ValueError(f"distribution={distribution!r} is not known: use one of "
                     f"{', '.join(masks_lib.DISTRIBUTIONS)}.")
  if isinstance(min_per_layer, bool) or not isinstance(min_per_layer, int) or min_per_layer < 0:
    raise ValueError(f"min_per_layer={min_per_layer!r} must be an integer >= 0.")
  if min_per_layer and distribution != "global":
    raise ValueError(f"min_per_layer={min_per_layer} applies to distribution='global' only (layerwise and "
                     "erk give every layer its own count): drop min_per_layer= or use distribution='global'.")
  if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
    raise ValueError(f"rounds={rounds!r} must be an integer >= 0 (0 = the criterion's default).")
  if round_schedule not in ROUND_SCHEDULES:
    raise ValueError(f"round_schedule={round_schedule!r} is not known: use one of {', '.join(ROUND_SCHEDULES)}.")
  if ablation not in ABLATIONS:
    raise ValueError(f"ablation={ablation!r} is not known: use one of {', '.join(ABLATIONS)}.")
  check_structure(structure, density)
  if group_reduce not in structure_lib.GROUP_REDUCTIONS:
    raise ValueError(f"group_reduce={group_reduce!r} is not known: use one of "
                     f"{', '.join(structure_lib.GROUP_REDUCTIONS)}.")
  spec = criteria.get(criterion, "criterion", extra=())
  if not spec.jittable and rounds > 1:
    raise ValueError(f"rounds={rounds} is not supported by criterion {criterion!r} (one-shot only).")
  return PruneSpec(criterion=criterion, density=float(density), distribution=distribution,
                   min_per_layer=int(min_per_layer), rounds=int(rounds), schedule=round_schedule,
                   ablation=ablation, prunable=prunable, structure=str(structure_lib.parse(structure)),
                   group_reduce=group_reduce,
                   options=from_values(record, {**options, **{k: v for k, v in (preset or {}).items()
                                                              if k in option_names(criterion)}}, ""))


def data_options_from_config(config):
  """The pruning data of config.prune as a DataOptions record (IRP's g_0 reads it for every criterion)."""
  values = {f.name: config.prune[f.name] for f in dataclasses.fields(DataOptions) if f.name in config.prune}
  try:
    return from_values(DataOptions, values, "config.prune.")
  except ValueError as e:
    raise ConfigError(str(e)) from None
