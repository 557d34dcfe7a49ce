"""One declarative schema of every config field: its type, what it may be, which jobs read it, what it means.

check(config) runs in-process before any compute and before the workdir is
touched (jobs.run calls it), and reports every problem of a config at once, one
line each, naming the field, the value, what is allowed and, for names, "did
you mean". describe(config) prints the schema of a config's job (the CLI's
--describe). Job-specific rules that need more than one field (IRP schedules
that prune nothing, min_per_layer above the weights kept, batch sizes against
the mesh) are in cross_checks.
"""
import copy
import dataclasses
import difflib
import re
from typing import Callable, Optional, Tuple

from autosparse_jax import masks as masks_lib, prune_spec, structure as structure_lib
from autosparse_jax.lab.config_tools import config_to_dict, flatten
from autosparse_jax.errors import ConfigError

TRAINING = ("train", "prune", "irp", "sweep")  # Jobs that build a task and train networks.
ALL = TRAINING + ("pipeline", "autos_train", "ccc")  # Every job: config.job (jobs/<name>.py).


@dataclasses.dataclass(frozen=True)
class Field:
  name: str
  kind: str                 # int | float | bool | str | regex | ints | floats | strs | any
  jobs: Tuple[str, ...]
  doc: str
  low: Optional[float] = None
  high: Optional[float] = None
  low_open: bool = False    # low excluded
  high_open: bool = False   # high excluded
  choices: Optional[Callable[[], tuple]] = None  # Called at check time (registries can grow).
  minus_one: bool = False   # -1 also allowed (a sentinel)
  verb: str = "be"          # "must be in ..." ("lie" for sparsities, as the messages always said)

  def allowed(self):
    parts = []
    if self.choices is not None:
      parts.append("one of " + ", ".join(map(str, self.choices())))
    if self.low is not None or self.high is not None:
      lo = "" if self.low is None else f"{'(' if self.low_open else '['}{self.low:g}"
      hi = "" if self.high is None else f"{self.high:g}{')' if self.high_open else ']'}"
      if self.low is not None and self.high is not None:
        parts.append(f"in {lo}, {hi}")
      elif self.low is not None:
        parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
      else:
        parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
    if self.minus_one:
      parts.append("or -1")
    kind = {"ints": "a list of integers", "floats": "a list of numbers", "strs": "a list of strings",
            "regex": "a regular expression", "float": "a number", "int": "an integer", "bool": "True or False",
            "str": "a string", "any": "any value"}[self.kind]
    return kind + (" " + " ".join(parts) if parts else "")


def _models():
  from autosparse_jax.models import MODELS
  return tuple(MODELS)


def _datasets():
  from autosparse_jax.data.specs import DATASETS
  return tuple(DATASETS)


def _criteria():
  from autosparse_jax import criteria
  return ("none",) + criteria.names()


def _schedules():
  from autosparse_jax.prune_spec import ROUND_SCHEDULES, SCHEDULE_ALIASES
  return ROUND_SCHEDULES + tuple(SCHEDULE_ALIASES)


def _ablations():
  from autosparse_jax.prune_spec import ABLATIONS
  return ABLATIONS


def _choices(*values):
  return lambda: values


def _field(name, kind, jobs, doc, **kw):
  return Field(name, kind, tuple(jobs), doc, **kw)


PRUNING = ("prune", "irp", "sweep")  # Jobs that prune (the train job trains dense networks only).
AT_INIT = ("prune", "sweep")  # Jobs that prune at init, by config.criterion or the sweep's criteria.
FIELDS = [
    _field("job", "str", ALL, "which job runs", choices=lambda: ALL),
    _field("imports", "strs", ALL, "modules imported first: where you register criteria (asj.register_criterion)"),
    _field("model", "str", TRAINING, "network", choices=_models),
    _field("width", "float", TRAINING, "channel-count scale (1.0 = the paper's networks)", low=0.0, low_open=True, high=64.0),
    _field("dtype", "str", TRAINING + ("autos_train",), "compute dtype (params, optimizer state, BN statistics, loss "
       "and pruning scores stay float32)", choices=lambda: tuple(__import__(
           "autosparse_jax.models", fromlist=["DTYPES"]).DTYPES)),
    _field("conv", "str", TRAINING, "how conv nets convolve: auto (im2col where XLA:CPU is slow), xla, im2col",
       choices=lambda: __import__("autosparse_jax.models.conv", fromlist=["CONV_IMPLS"]).CONV_IMPLS),
    _field("dataset", "str", TRAINING, "dataset", choices=_datasets),
    _field("data.data_dir", "str", TRAINING, "TFDS data dir ('' = $TFDS_DATA_DIR or ~/tensorflow_datasets)"),
    _field("data.eval_batch_size", "int", TRAINING, "test-set batch size", low=1),
    _field("data.synthetic.image_shape", "ints", TRAINING, "synthetic data: image shape (H, W, C)", low=1),
    _field("data.synthetic.num_classes", "int", TRAINING, "synthetic data: classes", low=2),
    _field("data.synthetic.num_train", "int", TRAINING, "synthetic data: training examples", low=1),
    _field("data.synthetic.num_test", "int", TRAINING, "synthetic data: test examples", low=1),
    _field("data.synthetic.seed", "int", TRAINING, "synthetic data: its seed", low=0),
    _field("seed", "int", TRAINING + ("autos_train",), "first seed (theta_0 of seed s: keys.py)", low=0),
    _field("num_seeds", "int", TRAINING, "seeds seed..seed+num_seeds-1, trained vmapped in one program", low=1),
    _field("train_seed", "int", TRAINING, "-1, or T: theta_0 from the seed, everything else from T", low=0, minus_one=True),
    _field("train.epochs", "int", TRAINING + ("autos_train",), "epochs of training (per IRP round)", low=1),
    _field("train.batch_size", "int", TRAINING + ("autos_train",), "training batch size", low=1),
    _field("train.optimizer", "str", TRAINING, "optimizer", choices=_choices("sgd", "adam")),
    _field("train.lr", "float", TRAINING + ("autos_train",), "learning rate", low=0.0, low_open=True),
    _field("train.momentum", "float", TRAINING, "SGD momentum (0 = none)", low=0.0, high=1.0, high_open=True),
    _field("train.nesterov", "bool", TRAINING, "Nesterov momentum"),
    _field("train.weight_decay", "float", TRAINING, "coupled (PyTorch-style) weight decay", low=0.0),
    _field("train.lr_drop_epochs", "ints", TRAINING, "epochs after which the learning rate drops (increasing)", low=1),
    _field("train.lr_drop_factor", "float", TRAINING, "factor of each drop", low=0.0, low_open=True, high=1.0),
    _field("train.log_every_steps", "int", TRAINING, "progress line every N steps (0 = each epoch)", low=0),
    _field("train.loop", "str", TRAINING, "how an epoch is driven", choices=_choices("auto", "scan", "python")),
    _field("criterion", "str", ("prune", "irp"), "pruning criterion (the train job trains dense networks)",
       choices=_criteria),
    _field("sparsity", "float", ("prune",), "fraction of prunable weights removed (one sparsity)", low=0.0, high=1.0,
       high_open=True, verb="lie"),
    _field("sparsities", "floats", ("prune", "sweep"), "the sparsities networks are pruned to at init, each trained: "
       "prune: each in turn (empty: config.sparsity alone); sweep: the grid's sparsity axis", low=0.0,
       low_open=True, high=1.0, high_open=True, verb="lie"),
    _field("prune.prunable", "regex", TRAINING, "which leaves are prunable: 'default' (weight matrices and conv kernels: "
       "masks.default_prunable) or a regex over parameter paths"),
    _field("prune.distribution", "str", PRUNING, "layer budgets", choices=_choices(*masks_lib.DISTRIBUTIONS)),
    _field("prune.min_per_layer", "int", PRUNING, "keep at least this many weights per layer (global)", low=0),
    _field("prune.rounds", "int", AT_INIT, "rounds of pruning at init (0 = the criterion's default)", low=0),
    _field("prune.round_schedule", "str", AT_INIT, "densities of those rounds", choices=_schedules),
    _field("prune.ablation", "str", AT_INIT, "Frankle et al.'s sanity check", choices=_ablations),
    _field("prune.structure", "str", PRUNING, "sparsity structure: unstructured, N:M (e.g. 2:4: sparsity 1 - N/M), "
       "block:RxC (e.g. block:4x4) or channel (whole output units)"),
    _field("prune.group_reduce", "str", PRUNING, "a group's score from its members' scores (block, channel)",
       choices=_choices("sum", "mean", "max")),
    _field("prune.kernel_layout", "strs", PRUNING, "N:M: 'REGEX=LAYOUT' for kernels whose layout the rules cannot "
       "tell (LAYOUT: " + ", ".join(structure_lib.KERNEL_LAYOUTS) + "; structure.py)"),
    _field("prune.structure_fallback", "str", PRUNING, "a layer that cannot take the structure: refuse (an error) or "
       "dense (left dense, as NVIDIA's ASP; listed in dense_layers)",
       choices=_choices(*structure_lib.STRUCTURE_FALLBACKS)),
    _field("scorer.datasets", "strs", ("autos_train",), "score datasets the scorer learns from"),
    _field("scorer.backbone", "str", ("autos_train",), "scorer network", choices=_choices("resnet18", "vgg19", "mlp")),
    _field("scorer.features", "strs", ("autos_train",), "scorer inputs", choices=_choices("theta0", "g0")),
    _field("scorer.width", "float", ("autos_train",), "scorer width scale", low=0.0, low_open=True, high=64.0),
    _field("scorer.holdout_fraction", "float", ("autos_train",), "weights held out", low=0.0, low_open=True,
       high=1.0, high_open=True),
    _field("mesh.seeds", "int", TRAINING, "devices the seeds are spread over", low=1),
    _field("mesh.data", "int", TRAINING, "data-parallel devices (-1 = the rest)", low=1, minus_one=True),
    _field("mesh.shard_train_set", "bool", TRAINING, "training images split over the devices"),
    _field("distributed.initialize", "str", ALL, "jax.distributed start-up", choices=_choices("auto", "yes", "no")),
    _field("distributed.timeout_s", "int", ALL, "seconds processes wait for each other", low=1),
    _field("checkpoint_every_steps", "int", TRAINING, "mid-run checkpoints every N steps (0 = epoch ends only)", low=0),
    _field("checkpoint_min_seconds", "float", TRAINING, "at most one mid-run checkpoint per this many seconds", low=0.0),
    _field("preemption_signal", "str", ALL, "the signal that stops a job with a checkpoint (exit 75)",
       choices=_choices("TERM", "USR1", "INT")),
    _field("tensorboard", "bool", ALL, "TensorBoard event files in WORKDIR/tensorboard"),
    _field("export", "str", ("prune",), "the trained networks under their masks, one file per seed in WORKDIR/export "
       "('' = none)", choices=_choices("", "bitmask", "nm", "bcoo")),
    _field("sparse_training.method", "str", AT_INIT, "masks while training: static (fixed), gmp (gradual magnitude "
       "pruning to config.sparsity), set / rigl (drop and regrow)", choices=_choices("static", "gmp", "set", "rigl")),
    _field("sparse_training.update_every_steps", "int", AT_INIT, "steps between mask updates", low=1),
    _field("sparse_training.start_step", "int", AT_INIT, "first update step (-1: start_fraction, or 0)", low=0,
       minus_one=True),
    _field("sparse_training.end_step", "int", AT_INIT, "last update step (-1: end_fraction, or 75% of the run)",
       low=0, minus_one=True),
    _field("sparse_training.start_fraction", "float", AT_INIT, "first update at this fraction of the run's steps "
       "(-1: not given)", low=0.0, high=1.0, minus_one=True),
    _field("sparse_training.end_fraction", "float", AT_INIT, "last update at this fraction of the run's steps "
       "(-1: not given)", low=0.0, high=1.0, minus_one=True),
    _field("sparse_training.drop_fraction", "float", AT_INIT, "SET / RigL: fraction of each layer's kept weights "
       "dropped and regrown per update", low=0.0, high=1.0, low_open=True, high_open=True),
    _field("sparse_training.drop_fraction_decay", "str", AT_INIT, "SET / RigL: the drop fraction's decay",
       choices=_choices("cosine", "constant")),
    _field("sparse_training.initial_sparsity", "float", AT_INIT, "GMP: sparsity where the cubic starts (the "
       "criterion's masks at init when one is set)", low=0.0, high=1.0, high_open=True),
    _field("sparse_training.power", "int", AT_INIT, "GMP: the schedule polynomial's order (Zhu & Gupta: 3)", low=1),
    _field("sparse_training.scores", "str", AT_INIT, "GMP: what it ranks: magnitude |w| or snip |w g| (the step's "
       "batch gradient)", choices=_choices("magnitude", "snip")),
    _field("workdir_lock", "str", ALL, "where the filesystem has no working file locks (some NFS): refuse to run, "
       "or warn once and run unlocked", choices=_choices("refuse", "warn")),
    _field("irp.rounds", "int", ("irp",), "pruning rounds", low=1),
    _field("irp.final_density", "float", ("irp",), "density after the last round", low=0.0, low_open=True,
       high=1.0, high_open=True),
    _field("irp.schedule", "str", ("irp",), "densities of the rounds", choices=_choices("count", "geometric")),
    _field("irp.train_first", "bool", ("irp",), "train the dense network first (standard LTH)"),
    _field("irp.rewind_step", "int", ("irp",), "rewind to theta_0 (0) or to the weights at this step", low=0),
    _field("irp.prune_zero_scores", "bool", ("irp",), "also prune zero scores, as the original code"),
    _field("irp.checkpoint_every_steps", "int", ("irp",), "checkpoint inside rounds (0 = after rounds)", low=0),
    _field("irp.keep_checkpoints", "int", ("irp",), "checkpoints kept", low=1),
    _field("sweep.criteria", "strs", ("sweep",), "criteria (or keys of sweep.variants)"),
    _field("sweep.dense", "bool", ("sweep",), "add dense rows"),
    _field("sweep.max_networks_per_program", "int", ("sweep",), "networks per vmapped program (0 = all, -1 = auto: "
       "one for conv nets on CPU, all otherwise)", low=0, minus_one=True),
    _field("sweep.variants", "any", ("sweep",), "labelled criteria with their own fields"),
    _field("ccc.datasets", "strs", ("ccc",), "score datasets compared pairwise"),
    _field("ccc.field", "str", ("ccc",), "which field", choices=_choices("theta0", "g0", "survival", "score")),
    _field("stages", "strs", ("pipeline",), "the stages in order (each config.<stage> is a job config)"),
    _field("survival_figure_stage", "str", ("pipeline",), "an IRP stage to draw Figure 1 from ('' = none)"),
]


def option_schema_fields():
  """The criteria's options as schema fields, read from their records (criteria/options.py)."""
  from autosparse_jax import criteria
  from autosparse_jax.criteria.options import kind
  out = []
  for path, (record, field) in criteria.option_fields().items():
    checks = dict(field.metadata["checks"])
    if "choices" in checks:
      checks["choices"] = _choices(*checks["choices"])
    out.append(Field(path, kind(record, field), tuple(field.metadata.get("jobs") or PRUNING), field.metadata["doc"],
                     **checks))
  return out


FIELDS += option_schema_fields()
BY_NAME = {f.name: f for f in FIELDS}

# Fields renamed in this release: old dotted name -> new. The old names are refused (one release)
# with the new one named, from a config file, a pipeline stage or a --config flag; a workdir whose
# config.json uses them is read with the new names (upgrade_renamed).
RENAMED = {f"autos.{name}": f"scorer.{name}" for name in
           ("datasets", "backbone", "features", "width", "holdout_fraction")}
RENAMED["sweep.sparsities"] = "sparsities"
RENAME_REASONS = {  # new name's group -> why, for the message.
    "scorer": "the autos_train job's scorer settings; `autos` now holds the autos criterion's only",
    "sparsities": "one field for the sparsities of the prune and sweep jobs",
}


def renamed_message(name, prefix="config."):
  """The message for a field under its old name (`name` relative to `prefix`), or None."""
  new = RENAMED.get(name)
  if new is None:
    return None
  return (f"{prefix}{name} was renamed {prefix}{new} ({RENAME_REASONS[new.split('.')[0]]}): "
          f"set {prefix}{new} instead.")


def upgrade_renamed(saved):
  """A config dict written by an earlier release (a workdir's config.json) with its renamed fields
  under their new names, pipeline stages included: (upgraded dict, [old names found])."""
  saved = copy.deepcopy(saved)
  found = []
  if saved.get("job") == "pipeline":
    for stage in saved.get("stages") or ():
      if isinstance(saved.get(stage), dict):
        saved[stage], inner = upgrade_renamed(saved[stage])
        found += [f"{stage}.{name}" for name in inner]
    return saved, found
  for old, new in RENAMED.items():
    *old_path, old_leaf = old.split(".")
    group = saved
    for part in old_path:
      group = group.get(part) if isinstance(group, dict) else None
    if not isinstance(group, dict) or old_leaf not in group:
      continue
    value = group.pop(old_leaf)
    if old_path and not group:  # The old group held only renamed fields.
      parent = saved
      for part in old_path[:-1]:
        parent = parent[part]
      parent.pop(old_path[-1])
    *new_path, new_leaf = new.split(".")
    target = saved
    for part in new_path:
      target = target.setdefault(part, {})
    target.setdefault(new_leaf, value)
    found.append(old)
  return saved, found


def _type_ok(kind, value):
  number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  if kind == "int":
    return isinstance(value, int) and not isinstance(value, bool)
  if kind == "float":
    return number(value)
  if kind == "bool":
    return isinstance(value, bool)
  if kind in ("str", "regex"):
    return isinstance(value, str)
  if kind in ("ints", "floats", "strs"):
    item = {"ints": lambda v: isinstance(v, int) and not isinstance(v, bool), "floats": number,
            "strs": lambda v: isinstance(v, str)}[kind]
    return isinstance(value, (list, tuple)) and all(item(v) for v in value)
  return True


def range_text(field):
  """'be >= 1', 'be in (0, 1)', 'lie in [0, 1)', ... (what a number must satisfy)."""
  if field.low is not None and field.high is not None:
    text = (f"{field.verb} in {'(' if field.low_open else '['}{field.low:g}, "
            f"{field.high:g}{')' if field.high_open else ']'}")
  elif field.low is not None:
    text = f"be {'>' if field.low_open else '>='} {field.low:g}"
  else:
    text = f"be {'<' if field.high_open else '<='} {field.high:g}"
  return text + (" or -1" if field.minus_one else "")


def _in_range(field, v):
  if field.minus_one and v == -1:
    return True
  if field.low is not None and (v < field.low or (field.low_open and v == field.low)):
    return False
  if field.high is not None and (v > field.high or (field.high_open and v == field.high)):
    return False
  return True


def field_problems(field, value, where):
  """Problems of one field's value (empty when fine)."""
  if not _type_ok(field.kind, value):
    return [f"{where}={value!r} must be {field.allowed()} ({field.doc})."]
  values = list(value) if field.kind in ("ints", "floats", "strs") else [value]
  for v in values:  # A list's message names the element at fault.
    if field.choices is not None and v not in field.choices():
      guess = difflib.get_close_matches(str(v), [str(c) for c in field.choices()], n=1)
      hint = f" Did you mean {guess[0]!r}?" if guess else ""
      return [f"{where}={v!r} is not known. Allowed: {', '.join(map(str, field.choices()))}.{hint}"]
    if field.kind == "regex":
      try:
        re.compile(v)
      except re.error as e:
        return [f"{where}={v!r} is not a valid regular expression ({e})."]
    if isinstance(v, (int, float)) and not isinstance(v, bool) and not _in_range(field, v):
      return [f"{where}={v} must {range_text(field)} ({field.doc})."]
  return []


def unknown_field(name, where_prefix=""):
  renamed = renamed_message(name, where_prefix)
  if renamed:
    return renamed
  guess = difflib.get_close_matches(name, list(BY_NAME), n=1)
  hint = f" Did you mean {where_prefix}{guess[0]}?" if guess else ""
  return f"{where_prefix}{name} is not a config field.{hint}"


def train_job_prunes(config, prefix="config.", command=None):
  """The message for a train job config that asks to prune (criterion or sparsity set), or None.

  The prune job is the one way to prune at init and train; the train job trains dense networks.
  `command`: the exact prune command to suggest (main.py builds it from the command line).
  """
  criterion, sparsity = config.get("criterion", "none"), config.get("sparsity", 0.0)
  if config.get("job") != "train" or (criterion == "none" and sparsity in (0, 0.0)):
    return None
  asked = f"{prefix}criterion={criterion!r}, {prefix}sparsity={sparsity!r}"
  if prefix != "config.":  # A pipeline stage.
    return (f"{asked}: the train job trains dense networks only; to prune at init and train, make this "
            f"stage a prune job ({prefix}job='prune', as configs/prune.py builds it).")
  if command is None:
    from autosparse_jax.lab.recipes import RECIPES
    recipe = next((name for name, r in RECIPES.items()
                   if (r["model"], r["dataset"]) == (config.get("model"), config.get("dataset"))), "RECIPE")
    command = (f"autosparse --config=prune:{recipe} --workdir=DIR "
               f"--config.criterion={criterion}" + (f" --config.sparsity={sparsity}" if sparsity else ""))
  return (f"{asked}: the train job trains dense networks only; prune at init and train with the prune "
          f"job (same fields, same networks): {command}")


def problems(config, prefix="config."):
  """Every problem of `config` (a job config; pipelines: each stage too), as messages."""
  flat = flatten(config_to_dict(config))
  job = flat.get("job")
  out = []
  prunes = train_job_prunes(config, prefix)
  if prunes:
    out.append(prunes)
    flat = {k: v for k, v in flat.items() if k not in ("criterion", "sparsity")}  # Said once, above.
  for name, value in flat.items():
    if name.startswith("sweep.variants.") and job == "sweep":
      continue  # Free-form; the sweep checks each variant's fields against the schema.
    if job == "pipeline" and name.split(".")[0] in (flat.get("stages") or ()):
      continue  # A stage: checked as a job config of its own below.
    field = BY_NAME.get(name)
    if field is None:
      out.append(unknown_field(name, prefix))
      continue
    out += field_problems(field, value, prefix + name)
  if job == "pipeline":
    for stage in flat.get("stages") or ():
      if stage in config:
        out += problems(config[stage], f"{prefix}{stage}.")
  elif not out:  # Rules over several fields assume each field is valid on its own.
    out += cross_problems(config, prefix)
  return out


def cross_problems(config, prefix="config."):
  """Rules over several fields of one job config."""
  out = []
  drops = list(config.get("train", {}).get("lr_drop_epochs", ()) or ())
  if any(b <= a for a, b in zip(drops, drops[1:])):
    out.append(f"{prefix}train.lr_drop_epochs={tuple(drops)} must be strictly increasing.")
  prune = config.get("prune") or {}
  try:
    prune_spec.check_min_per_layer(int(prune.get("min_per_layer", 0) or 0), prune.get("distribution", "global"),
                                   f"{prefix}prune.min_per_layer", f"{prefix}prune.distribution")
  except ValueError as e:
    out.append(str(e))
  if config.get("job") in TRAINING and not out:
    out += _shape_problems(config, prefix)
  return out


def _shape_problems(config, prefix):
  """Checks that need the network's shapes (computed abstractly: no compute, no data)."""
  import jax
  import jax.numpy as jnp

  from autosparse_jax.data.specs import SPECS
  from autosparse_jax.models import MODELS, get_model
  if config.model not in MODELS or config.dataset not in SPECS and config.dataset not in ("synthetic", "digits"):
    return []
  if config.dataset == "synthetic":
    shape, classes = tuple(config.data.synthetic.image_shape), int(config.data.synthetic.num_classes)
  elif config.dataset == "digits":
    shape, classes = (8, 8, 1), 10  # scikit-learn's embedded digits (data/embedded.py).
  else:
    shape, classes = SPECS[config.dataset].image_shape, SPECS[config.dataset].num_classes
  narrowest = {"lenet_300_100": 100}.get(config.model, 64)
  if int(narrowest * float(config.width)) < 1:
    return [f"{prefix}width={config.width} leaves layers with no units ({config.model}'s narrowest layer has "
            f"{narrowest} at width 1): use width >= {1 / narrowest:g}."]
  try:
    model = get_model(config.model, classes, width=float(config.width))
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + tuple(shape)),
                                               train=False))["params"]
    masks = masks_lib.init_masks(params, config.prune.prunable)
  except ValueError as e:
    return [str(e).replace("config.", prefix, 1)]
  layers = [m for _, m in masks_lib.prunable_items(masks, masks)]
  total = sum(int(m.size) for m in layers)
  out = []
  sparsities = []
  if config.job == "prune" and config.get("criterion", "none") != "none":
    sparsities = list(config.get("sparsities", ()) or ()) or [config.sparsity]
  if config.job == "sweep":
    sparsities = list(config.get("sparsities", ()) or ())
  if config.job == "irp":
    sparsities = [1.0 - float(config.irp.final_density)]
  structure_field = f"{prefix}prune.structure"
  try:
    structure = structure_lib.parse(config.prune.get("structure", "unstructured"), structure_field).with_layouts(
        structure_lib.parse_kernel_layout(config.prune.get("kernel_layout", structure_lib.DEFAULT_KERNEL_LAYOUT),
                                          f"{prefix}prune.kernel_layout"))
    # Every prunable layer divides into the structure's groups (or is left dense by the fallback).
    structure.check_layers(masks, config.prune.get("structure_fallback", structure_lib.DEFAULT_STRUCTURE_FALLBACK))
    for s in sparsities:
      structure.check_density(1.0 - float(s), structure_field,
                              f"{prefix}irp.final_density" if config.job == "irp" else
                              f"{prefix}sparsity/sparsities ({s:g})")
  except ValueError as e:
    out.append(str(e) if str(e).startswith(structure_field) else
               f"{structure_field}={config.prune.get('structure', 'unstructured')!r}: {e}")
  minimum = int(config.prune.min_per_layer)
  for s in sparsities:
    try:
      prune_spec.check_min_per_layer_fits(minimum, masks, 1.0 - float(s) if 0 <= float(s) <= 1 else 1.0,
                                          f"{prefix}prune.min_per_layer", f" at sparsity {s:g}")
    except ValueError as e:
      out.append(str(e))
      break
  if config.job == "irp" and 0 < float(config.irp.final_density) < 1 and int(config.irp.rounds) >= 1:
    try:
      densities = prune_spec.schedule(float(config.irp.final_density), int(config.irp.rounds),
                                      config.irp.schedule, f"{prefix}irp.schedule", prune_spec.IRP_SCHEDULES)
    except ValueError:
      return out
    counts = [total] + [masks_lib.num_to_keep(d, total) for d in densities]
    if any(b >= a for a, b in zip(counts, counts[1:])):
      out.append(f"{prefix}irp.rounds={config.irp.rounds} to density {config.irp.final_density} prunes fewer "
                 f"than one of the {total} weights in some round: use fewer rounds or a lower density.")
  mesh = config.get("mesh")
  if mesh is not None and int(mesh.data) > 0 and int(config.train.batch_size) % int(mesh.data):
    out.append(f"{prefix}train.batch_size={config.train.batch_size} must divide by "
               f"{prefix}mesh.data={mesh.data} (each data-parallel device takes an equal share).")
  return out


def check(config):
  """Raises one ConfigError listing every problem of `config` (nothing when it is fine)."""
  found = problems(config)
  if found:
    if len(found) == 1:
      raise ConfigError(found[0])
    raise ConfigError(f"{len(found)} problems in the config:\n  - " + "\n  - ".join(found))


# A field that a job does not read but that names what the job reads instead: (job, field) -> that field.
READ_INSTEAD = {("sweep", "sparsity"): "sparsities", ("irp", "sparsity"): "irp.final_density",
                ("irp", "sparsities"): "irp.final_density"}


def unread_fields(config, defaults, prefix="config."):
  """Fields set away from the config file's defaults that the job does not read (a pipeline: each stage's)."""
  job = config.get("job")
  if job == "pipeline":
    return [problem for stage in (config.get("stages") or ()) if stage in config
            for problem in unread_fields(config[stage], (defaults or {}).get(stage) or {}, f"{prefix}{stage}.")]
  flat, base = flatten(config_to_dict(config)), flatten(config_to_dict(defaults))
  out = []
  for name, value in flat.items():
    field = BY_NAME.get(name)
    if field is not None and job not in field.jobs and base.get(name) != value:
      instead = READ_INSTEAD.get((job, name))
      if instead:
        out.append(f"{prefix}{name}={value!r} is not read by the {job} job: it reads {prefix}{instead} "
                   f"(now {flat.get(instead)!r}) instead; set that (e.g. --{prefix}{instead}=...).")
        continue
      out.append(f"{prefix}{name}={value!r} is not read by the {job} job (it is read by: "
                 f"{', '.join(field.jobs)}): remove it, or run a job that reads it.")
  return out


def describe(config):
  """The schema of `config`'s job as text: every field it reads, its value, what is allowed, what it means."""
  job = config.get("job")
  flat = flatten(config_to_dict(config))
  lines = [f"config fields read by the {job} job (name = value: allowed; meaning):"]
  for field in FIELDS:
    if job in field.jobs and field.name in flat:
      lines.append(f"  {field.name} = {flat[field.name]!r}: {field.allowed()}; {field.doc}")
  return "\n".join(lines)

