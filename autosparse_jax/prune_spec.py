"""PruneSpec: what to prune and how, one frozen record, validated once at each door and handed down.

    spec = prune_spec.from_keywords("snip", density=0.1, distribution="erk")   # the API
    spec = prune_spec.from_config(config, "snip", density=0.1)                # a job's config
    spec = prune_spec.irp_spec(config)                                        # an IRP job's levels

Below the doors the kept fraction is a density (users type sparsities; the doors turn
them into densities once). The spec plans its own keep counts (`spec.plan(masks)`:
the density after each round of its schedule, in its structure's unit, under its
distribution): a one-shot prune, R rounds at init and IRP's levels all take their
counts from here and nowhere else.

Every check of a pruning setting lives here once (check_distribution, check_ablation,
check_rounds, check_min_per_layer, check_min_per_layer_fits, structure checks), called by
the API's door and the jobs' schema alike with the name the user typed (`field=`).
`options` is the criterion's own typed record (criteria/options.py): the record
declares each option's default once, and both doors fill it from the same fields, so
the same settings give the same spec, the same compiled program and the same masks.
"""
import dataclasses
import difflib
from typing import Any, Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import criteria, dynamic_sparsity, masks as masks_lib, structure as structure_lib
from autosparse_jax.criteria.options import DataOptions, config_path, from_values
from autosparse_jax.errors import ConfigError, unknown_name_message

# Density after round r of R: exponential d^(r/R) (SynFlow; IRP's "geometric") or linear in
# the pruned count (IRP's "count", the original's equal number per round).
ROUND_SCHEDULES = ("exponential", "linear")
SCHEDULE_ALIASES = {"geometric": "exponential", "count": "linear"}
IRP_SCHEDULES = ("count", "geometric")  # config.irp.schedule's names (the original code's).
# Frankle et al. (ICLR 2021)'s sanity checks of a criterion. Does its gain lie in the layer
# densities it picks or in the weights?
#   shuffle_layerwise  each layer's mask randomly permuted: same layer densities, random weights
#   reinit             the same masks on a theta_0 drawn from another key (keys.reinit_key)
#   invert             the HIGHEST scores are pruned instead of the lowest
ABLATIONS = ("none", "shuffle_layerwise", "reinit", "invert")


@dataclasses.dataclass(frozen=True)
class PruneSpec:
  """A pruning: criterion, target density, layer distribution, rounds, ablation, prunable, options.

  density       kept fraction of the prunable weights at the end
  distribution  global | layerwise | erk (masks.DISTRIBUTIONS)
  min_per_layer keep at least this many weights in every layer (global only)
  rounds        rounds down to density (0 = the criterion's default: SynFlow 100, most 1)
  schedule      the rounds' densities: exponential | linear
  ablation      Frankle et al.'s sanity check (ABLATIONS)
  prunable      'default' (masks.default_prunable), a regex over leaf paths, or (path, leaf) -> bool
  options       the criterion's options record (criteria.get(criterion).options)
  structure     a structure.Structure (Unstructured, NByM, Block, Channel)
  group_reduce  sum | mean | max: a group's score from its members' (block, channel)
  kernel_layout N:M: ((regex, layout), ...) naming the layout of leaves the rules cannot see
                (structure.KERNEL_LAYOUTS; the API takes {regex: layout}, a job ["REGEX=LAYOUT"])
  structure_fallback  refuse | dense: a layer that cannot take the structure is an error (the
                default) or left dense, as NVIDIA's ASP does (dense_layers lists them)
  sparse_training  how masks change while training, a dynamic_sparsity record (Static: never;
                GMP, SET, RigL), unresolved (its steps need the run's length: .resolve(total_steps))
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
  structure: structure_lib.Structure = structure_lib.UNSTRUCTURED
  group_reduce: str = "sum"
  kernel_layout: tuple = structure_lib.DEFAULT_KERNEL_LAYOUT
  structure_fallback: str = structure_lib.DEFAULT_STRUCTURE_FALLBACK
  sparse_training: Any = dynamic_sparsity.Static()

  def __post_init__(self):
    if self.options is None:
      object.__setattr__(self, "options", self.record.options())
    rules = structure_lib.parse_kernel_layout(self.kernel_layout)
    object.__setattr__(self, "kernel_layout", rules)
    object.__setattr__(self, "structure", structure_lib.parse(self.structure).with_layouts(rules))

  @property
  def record(self):
    """The criterion's registry record: what it needs and how it runs."""
    return criteria.get(self.criterion)

  @property
  def num_rounds(self):
    return int(self.rounds) or self.record.rounds

  @property
  def distribution_used(self):
    """The layer distribution pruning uses: a criterion with layer budgets (NPB) turns `global` into ERK."""
    if self.record.layer_budgets and self.distribution == "global":
      return "erk"
    return self.distribution

  def with_density(self, density):
    return dataclasses.replace(self, density=float(density))

  def densities(self):
    """The density after each of the spec's rounds, ending exactly at spec.density."""
    return schedule(self.density, self.num_rounds, self.schedule)

  def plan(self, masks):
    """The keep counts of every round: [R] (global; N:M: per group) or [R, layers], in the structure's unit."""
    return self.structure.plan(self.structured(masks), self.densities(), self.distribution_used)

  def dense_layers(self, masks):
    """The prunable layers that cannot take the structure, left dense under structure_fallback='dense' ([]
    under 'refuse', where they are a ValueError naming them and the prunable= regex that leaves them dense)."""
    return self.structure.check_layers(masks, self.structure_fallback)

  def structured(self, masks):
    """`masks` with the dense_layers unprunable (0-d True): the layers the structure prunes."""
    dense = set(self.dense_layers(masks)) if self.structure_fallback == "dense" else ()
    if not dense:
      return masks
    return jax.tree_util.tree_map_with_path(
        lambda p, m: jnp.ones((), jnp.bool_) if masks_lib.path_name(p) in dense else m, masks)

  def weight_counts(self, masks):
    """Weights to keep per layer (or in all) at spec.density: a criterion's layer budgets are weights."""
    return masks_lib.keep_counts(masks, self.density, self.distribution_used)

  def program_fields(self):
    """Every field a compiled pruning program reads: all but the density (keep counts are an argument) and
    sparse_training (the training program's, keyed there)."""
    return (self.criterion, self.distribution, int(self.min_per_layer), self.num_rounds, self.schedule,
            self.ablation, self.prunable, self.options, self.structure, self.group_reduce, self.kernel_layout,
            self.structure_fallback)


def schedule(final_density, rounds, kind, field="round_schedule", names=ROUND_SCHEDULES):
  """Density after each of `rounds` rounds, ending exactly at `final_density`.

  kind: a name of ROUND_SCHEDULES or its IRP alias; `names` are the ones an error lists for `field`.
  """
  name = SCHEDULE_ALIASES.get(kind, kind)
  if name not in ROUND_SCHEDULES:
    raise ValueError(unknown_name_message(field, kind, names))
  i = np.arange(1, int(rounds) + 1)
  if name == "exponential":
    return float(final_density) ** (i / int(rounds))
  return 1.0 - (1.0 - float(final_density)) * i / int(rounds)


# ---- The checks: each once, called by the API (keyword names) and the schema (config paths).

def check_sparsity(value, field="sparsity", allow_zero=False):
  """A sparsity in (0, 1) ([0, 1) with allow_zero) or a ValueError naming `field`."""
  try:
    s = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{field}={value!r} must be a number in (0, 1) (the fraction of prunable "
                     "weights removed; 0.9 keeps 10%).") from None
  low_ok = s >= 0.0 if allow_zero else s > 0.0
  if not (low_ok and s < 1.0):
    interval = "[0, 1)" if allow_zero else "(0, 1)"
    raise ValueError(f"{field}={value} must lie in {interval} (the fraction of prunable weights "
                     "removed; 0.9 keeps 10%).")
  return s


def check_distribution(value, field="distribution"):
  if value not in masks_lib.DISTRIBUTIONS:
    raise ValueError(unknown_name_message(field, value, masks_lib.DISTRIBUTIONS))
  return value


def check_ablation(value, field="ablation"):
  if value not in ABLATIONS:
    raise ValueError(unknown_name_message(field, value, ABLATIONS))
  return value


def check_min_per_layer(value, distribution, field="min_per_layer", distribution_field="distribution"):
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
    raise ValueError(f"{field}={value!r} must be an integer >= 0.")
  if value and distribution != "global":
    raise ValueError(f"{field}={value} applies to {distribution_field}='global' only ({distribution!r} gives "
                     f"every layer its own count): set {field}=0 or {distribution_field}='global'.")
  return int(value)


def check_rounds(criterion, rounds, field="rounds"):
  """Rounds at init: an integer >= 0; more than one only for criteria that run under jit."""
  if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0:
    raise ValueError(f"{field}={rounds!r} must be an integer >= 0 (0 = the criterion's default).")
  if not criteria.get(criterion).jittable and rounds > 1:
    raise ValueError(f"{field}={rounds} is not supported by criterion {criterion!r} (one-shot only): set "
                     f"{field} to 0.")
  return int(rounds)


def check_structure(value, density, field="structure", density_field="sparsity"):
  """The parsed structure; N:M fixes the density at N/M, so another density is refused."""
  parsed = structure_lib.parse(value, field)
  parsed.check_density(density, field, density_field)
  return parsed


def check_min_per_layer_fits(min_per_layer, masks, density, field="min_per_layer", where=""):
  """min_per_layer x layers must fit in the weights kept at `density` (global)."""
  layers = len(masks_lib.prunable_items(masks, masks))
  kept = masks_lib.num_to_keep(float(density), sum(int(m.size) for _, m in masks_lib.prunable_items(masks, masks)))
  if min_per_layer * layers > kept:
    raise ValueError(f"{field}={min_per_layer} x {layers} prunable layers = {min_per_layer * layers} weights, "
                     f"more than the {kept} kept{where}: lower it.")


def check_layers(spec, masks, field="structure"):
  """The network's layers against the spec: structure groups, min_per_layer (named errors); returns the
  layers structure_fallback='dense' leaves dense."""
  try:
    dense = spec.dense_layers(masks)
  except ValueError as e:
    raise ValueError(str(e) if field == "structure" else f"{field}={str(spec.structure)!r}: {e}") from None
  if spec.min_per_layer:
    check_min_per_layer_fits(spec.min_per_layer, masks, spec.density)
  return dense


def option_names(criterion):
  return tuple(f.name for f in dataclasses.fields(criteria.get(criterion, "criterion", extra=()).options))


def unknown_option_message(criterion, name, known, prefix=""):
  every = sorted({f.name for c in criteria.REGISTRY.values() for f in dataclasses.fields(c.options)})
  guess = difflib.get_close_matches(name, known or every, n=1)
  elsewhere = name in every and name not in known
  return (f"{prefix}{name}= is not an option of criterion {criterion!r}"
          + (" (it is another criterion's)" if elsewhere else "")
          + (f": did you mean {guess[0]}=?" if guess else ".")
          + (f" Its options: {', '.join(known)}." if known else f" {criterion!r} takes no options."))


def from_keywords(criterion, *, density=1.0, distribution="global", min_per_layer=0, rounds=0,
                  round_schedule="exponential", ablation="none", prunable=masks_lib.DEFAULT_PRUNABLE,
                  structure=structure_lib.UNSTRUCTURED, group_reduce="sum",
                  kernel_layout=structure_lib.DEFAULT_KERNEL_LAYOUT,
                  structure_fallback=structure_lib.DEFAULT_STRUCTURE_FALLBACK, fixed=(), preset=None, **options):
  """The spec of the API's keywords; ValueError naming a keyword that is not this criterion's option.

  fixed: option names the caller sets itself (the API's batch_size from its batches, scorer_dir
  from scorer=): refused as keywords; preset: their values (only those the record has).
  """
  record = criteria.get(criterion, "criterion", extra=()).options
  known = [n for n in option_names(criterion) if n not in fixed]
  for name in options:
    if name not in known:
      raise ValueError(unknown_option_message(criterion, name, known))
  check_distribution(distribution)
  check_min_per_layer(min_per_layer, distribution)
  check_rounds(criterion, rounds)
  schedule(0.5, 1, round_schedule)
  check_ablation(ablation)
  parsed = check_structure(structure, density)
  structure_lib.check_group_reduce(group_reduce)
  layouts = structure_lib.parse_kernel_layout(kernel_layout)
  structure_lib.check_structure_fallback(structure_fallback)
  values = {**options, **{k: v for k, v in (preset or {}).items() if k in option_names(criterion)}}
  return PruneSpec(criterion=criterion, density=float(density), distribution=distribution,
                   min_per_layer=int(min_per_layer), rounds=int(rounds), schedule=round_schedule,
                   ablation=ablation, prunable=prunable, structure=parsed, group_reduce=group_reduce,
                   kernel_layout=layouts, structure_fallback=structure_fallback,
                   options=from_values(record, values, ""))


# ---- The jobs' door: a config (ml_collections.ConfigDict or a dict) to a spec, errors naming config paths.

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


def settings_from_config(config, rounds=None, round_schedule=None, schedule_field="config.prune.round_schedule",
                         schedule_names=ROUND_SCHEDULES):
  """The pruning settings of config.prune that do not depend on the criterion or the density, each checked
  (ConfigError naming its config path): every job's validation and from_config read them here."""
  prune = config.prune
  distribution = prune.get("distribution", "global")
  round_schedule = prune.get("round_schedule", "exponential") if round_schedule is None else round_schedule
  try:
    settings = dict(
        distribution=check_distribution(distribution, "config.prune.distribution"),
        min_per_layer=check_min_per_layer(int(prune.get("min_per_layer", 0)), distribution,
                                          "config.prune.min_per_layer", "config.prune.distribution"),
        rounds=int(prune.get("rounds", 0)) if rounds is None else int(rounds), schedule=round_schedule,
        ablation=check_ablation(prune.get("ablation", "none"), "config.prune.ablation"),
        prunable=prune.get("prunable", masks_lib.DEFAULT_PRUNABLE),
        structure=structure_lib.parse(prune.get("structure", "unstructured"), "config.prune.structure"),
        group_reduce=prune.get("group_reduce", "sum"),
        kernel_layout=structure_lib.parse_kernel_layout(
            prune.get("kernel_layout", structure_lib.DEFAULT_KERNEL_LAYOUT), "config.prune.kernel_layout"),
        structure_fallback=structure_lib.check_structure_fallback(
            prune.get("structure_fallback", structure_lib.DEFAULT_STRUCTURE_FALLBACK),
            "config.prune.structure_fallback"))
    schedule(0.5, 1, round_schedule, schedule_field, schedule_names)
    structure_lib.check_group_reduce(settings["group_reduce"], "config.prune.group_reduce")
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return settings


def from_config(config, criterion=None, density=None, rounds=None, round_schedule=None,
                density_field="config.sparsity", schedule_field="config.prune.round_schedule",
                schedule_names=ROUND_SCHEDULES):
  """The spec of a job's config: config.criterion and 1 - config.sparsity unless given, every setting
  checked (ConfigError naming its config path)."""
  criterion = config.criterion if criterion is None else criterion
  density = 1.0 - float(config.get("sparsity", 0.0)) if density is None else float(density)
  settings = settings_from_config(config, rounds, round_schedule, schedule_field, schedule_names)
  try:
    check_structure(settings["structure"], density, "config.prune.structure", density_field)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  spec = PruneSpec(criterion=criterion, density=density, options=options_from_config(config, criterion),
                   **settings)
  return dataclasses.replace(spec, sparse_training=sparse_training_from_config(config, density,
                                                                               spec.distribution_used))


def sparse_training_from_config(config, density, distribution="global"):
  """config.sparse_training as its dynamic_sparsity record (Static when absent); GMP's target is `density`
  (1 - config.sparsity) under `distribution`. ConfigError naming config.sparse_training.FIELD."""
  values = dict(config.get("sparse_training") or {})
  try:
    return dynamic_sparsity.from_config_values(values, 1.0 - float(density), distribution)
  except ValueError as e:
    raise ConfigError(config_message(str(e), "config.sparse_training.")) from None


def config_message(message, prefix):
  """A record's message ('drop_fraction=1.5 must ...') with its field as a config path."""
  head = message.split("=", 1)[0]
  if head.isidentifier():
    field = "config.sparsity" if head == "sparsity" else prefix + head
    return field + message[len(head):]
  return message


def resolve_sparse_training(record, total_steps):
  """The record with its steps fixed for a run of `total_steps` steps (ConfigError naming the field)."""
  try:
    return record.resolve(total_steps)
  except ValueError as e:
    raise ConfigError(config_message(str(e), "config.sparse_training.")
                      + f" (the run has {total_steps} steps: config.train.epochs x steps per epoch)") from None


def check_sparse_training(record, criterion, structure, where="config"):
  """What a changing-mask method can start from and keep: its criterion's masks, an unstructured mask."""
  method = record.method
  if method == "static":
    return
  if not structure.single_weights:
    raise ConfigError(f"{where}.sparse_training.method={method!r} cannot keep {where}.prune.structure="
                      f"{str(structure)!r} (it drops and regrows single weights): set {where}.prune.structure="
                      f"'unstructured' or {where}.sparse_training.method='static'.")
  if method in ("set", "rigl") and criterion == "none":
    raise ConfigError(f"{where}.sparse_training.method={method!r} trains sparse from its first step: set "
                      f"{where}.criterion to the masks it starts from ('random' with distribution 'erk' is "
                      "RigL's own start; 'snip' for SNIP + RigL).")
  if method == "gmp" and criterion != "none" and not record.initial_sparsity:
    raise ConfigError(f"{where}.sparse_training.method='gmp' with {where}.criterion={criterion!r}: the criterion "
                      f"prunes at init to {where}.sparse_training.initial_sparsity, which is 0: set it (e.g. 0.5) "
                      f"or {where}.criterion='none' for GMP from dense.")


def irp_spec(config):
  """The spec of an IRP job: config.irp.rounds rounds on config.irp.schedule down to config.irp.final_density."""
  return from_config(config, density=float(config.irp.final_density), rounds=int(config.irp.rounds),
                     round_schedule=config.irp.schedule, density_field="config.irp.final_density",
                     schedule_field="config.irp.schedule", schedule_names=IRP_SCHEDULES)


def check_config_criterion(config, criterion, where="config.criterion"):
  """`criterion` and what it needs from a job's config, before compute: its rounds (one-shot criteria take
  0 or 1) and its options' own checks (the AutoS scorer, the survival score datasets). Returns its options."""
  record = criteria.get(criterion, where)
  try:
    check_rounds(criterion, int(config.prune.get("rounds", 0)), "config.prune.rounds")
  except ValueError as e:
    raise ConfigError(str(e).replace(f"criterion {criterion!r}", f"{where}={criterion!r}")) from None
  options = options_from_config(config, criterion)
  if record.check_options is not None:  # Clear errors now, not after loading the data.
    record.check_options(options, where, criterion)
  return options


def prunable_from_config(config):
  """config.prune.prunable: which leaves every network of a job prunes (dense jobs too)."""
  return config.prune.get("prunable", masks_lib.DEFAULT_PRUNABLE)


def data_options_from_config(config):
  """The pruning data of config.prune as a DataOptions record (IRP's g_0 reads it for every criterion)."""
  values = {f.name: config.prune[f.name] for f in dataclasses.fields(DataOptions) if f.name in config.prune}
  try:
    return from_values(DataOptions, values, "config.prune.")
  except ValueError as e:
    raise ConfigError(str(e)) from None
