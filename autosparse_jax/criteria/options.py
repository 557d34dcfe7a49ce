"""Typed options of the criteria: each criterion owns one frozen record, declared once, here or in its module.

A record's fields carry their default and, in `metadata`, what the config schema
needs (doc, range, choices, config path): schema.py, recipes.base_config (the
defaults in config.prune) and `--describe` read them from the record, nowhere
else. The config path of a field is `prune.<name>` unless `config=` says
otherwise (the `autos` criterion's scorer settings live in config.autos).

Records are frozen and hashable: a record is part of the key of every compiled
pruning program (programs.py), so two specs that read the same options share a
program and two that differ never do.
"""
import dataclasses
import typing

# A field's kind in the schema, from its annotation (schema.Field.kind).
_KINDS = {int: "int", float: "float", str: "str", bool: "bool", typing.Tuple[str, ...]: "strs"}


def option(default, doc, *, config=None, kind=None, jobs=None, **checks):
  """A record field: default, one-line doc, config path (default prune.<name>) and schema checks.

  checks: low, high, low_open, high_open, choices (a tuple), minus_one (schema.Field's).
  """
  metadata = dict(doc=doc, config=config, kind=kind, jobs=jobs, checks=checks)
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class NoOptions:
  """A criterion that reads no option (random, magnitude, SynFlow)."""


@dataclasses.dataclass(frozen=True)
class DataOptions:
  """The pruning data of a criterion that reads the training set (SNIP, GraSP, Fisher, ...)."""
  batch_size: int = option(128, "pruning data: batch size", low=1)
  num_batches: int = option(0, "pruning data: batches (0 = every whole batch of the training set, as the "
                            "originals)", low=0)
  grad_reduction: str = option("sum", "gradients over batches: sum (the originals: a sum of batch means) or "
                               "mean", choices=("sum", "mean"))


def config_path(field):
  """'prune.grasp_temperature', 'autos.scorer_dir', ...: where a record field lives in a job config."""
  return field.metadata.get("config") or f"prune.{field.name}"


def kind(record_type, field):
  """The schema kind of a record field (int, float, str, bool, regex, strs)."""
  if field.metadata.get("kind"):
    return field.metadata["kind"]
  hints = typing.get_type_hints(record_type)
  return _KINDS[hints[field.name]]


def from_values(record_type, values, where):
  """record_type(**values) with each value converted to the field's type; ValueError names the field."""
  hints = typing.get_type_hints(record_type)
  names = {f.name for f in dataclasses.fields(record_type)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(f"{where}: {unknown[0]} is not an option of {record_type.__name__}.")
  converted = {}
  for name, value in values.items():
    converted[name] = _convert(hints[name], value, f"{where}{name}")
  return record_type(**converted)


def _convert(hint, value, where):
  if hint is bool:
    if not isinstance(value, (bool,)) and value not in (0, 1):
      raise ValueError(f"{where}={value!r} must be True or False.")
    return bool(value)
  if hint is int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
      raise ValueError(f"{where}={value!r} must be an integer.")
    return int(value)
  if hint is float:
    if isinstance(value, bool):
      raise ValueError(f"{where}={value!r} must be a number.")
    try:
      return float(value)
    except (TypeError, ValueError):
      raise ValueError(f"{where}={value!r} must be a number.") from None
  if hint is str:
    if not isinstance(value, str):
      raise ValueError(f"{where}={value!r} must be a string.")
    return value
  if hint == typing.Tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
      raise ValueError(f"{where}={value!r} must be a list of strings.")
    return tuple(value)
  return value


def data_options(options):
  """The DataOptions part of a record (g_0 reads only these): one g_0 program per pruning data."""
  return DataOptions(**{f.name: getattr(options, f.name) for f in dataclasses.fields(DataOptions)})
