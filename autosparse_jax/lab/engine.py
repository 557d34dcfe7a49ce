"""The engine every job runs on: task, initial states, the training loop, result summaries.

  validate(config)          the checks every training job shares, in-process, before compute
  build_task(config)        data on the devices and the trainer (a Task), cached by its TaskDefinition
  init_states(config, task) theta_0 of every seed, stacked on the vmapped seed axis
  TrainingLoop              trains stacked states chunk by chunk; yields after each chunk
                            (jobs checkpoint there); logs and records each epoch
  run_training(...)         the loop to the end
  density_reports / density_summary / accuracy_summary / warn_empty_layers
                            the results fields every job reports the same way

Pruning is pruning.py's (lab/runs.py runs it on a task's networks); the jobs (jobs/)
are: validate -> runs.start -> run on the engine -> write results.
"""
import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import keys, masks as masks_lib, programs as programs_lib, prune_spec, training
from autosparse_jax.lab import preemption, sharding
from autosparse_jax.lab.checkpoints import RunCheckpoints
from autosparse_jax import console
from autosparse_jax.console import fmt_time, log, plain_output
from autosparse_jax.data import batching, load_dataset
from autosparse_jax.lab.distributed import to_host
from autosparse_jax.errors import ConfigError, NumericalError, unknown_name_message
from autosparse_jax.models import DTYPES, MODELS, get_model


NO_PRUNING = "none"  # config.criterion of a dense run (tables label those rows report.DENSE).


@dataclasses.dataclass(frozen=True)
class Task:
  """Everything a job needs on device: trainer, data arrays, eval batches."""
  trainer: training.Trainer
  dataset: object
  train_images: jax.Array
  train_labels: jax.Array
  eval_arrays: tuple
  # Compiled programs reused by every training run and pruning call on this task (IRP rounds,
  # sweep grids), keyed by programs.program_key; bounded: a process that runs many criteria or
  # options keeps the recent ones (a dropped one comes back from the compilation cache).
  programs: programs_lib.BoundedCache = dataclasses.field(
      default_factory=lambda: programs_lib.BoundedCache(128, "task programs"), compare=False, repr=False)

  def program(self, key, make):
    """The jitted function of `key` (a programs.program_key), made once by make()."""
    return self.programs.get(key, make)


def validate(config, needs_sparsity=True):
  """Checks every job that builds a task shares, before any compute.

  needs_sparsity=False: the job prunes by its own fields (IRP, sweep), so
  config.sparsity may be 0 with a criterion set.
  """
  try:
    prune_spec.check_sparsity(config.sparsity, "config.sparsity", allow_zero=True)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if int(config.get("train_seed", -1)) < -1:
    raise ConfigError(f"config.train_seed={config.train_seed} must be -1 (the seed itself) or >= 0.")
  if int(config.num_seeds) < 1:
    raise ConfigError(f"config.num_seeds={config.num_seeds} must be >= 1.")
  if int(config.train.epochs) < 1:
    raise ConfigError(f"config.train.epochs={config.train.epochs} must be >= 1.")
  if int(config.train.batch_size) < 1:
    raise ConfigError(f"config.train.batch_size={config.train.batch_size} must be >= 1.")
  if config.model not in MODELS:
    raise ConfigError(unknown_name_message("config.model", config.model, MODELS))
  if config.get("dtype", "float32") not in DTYPES:
    raise ConfigError(unknown_name_message("config.dtype", config.dtype, tuple(DTYPES)))
  if config.train.get("loop", "auto") not in training.LOOPS:
    raise ConfigError(unknown_name_message("config.train.loop", config.train.loop, training.LOOPS))
  prune_spec.settings_from_config(config)
  if config.criterion != NO_PRUNING:
    prune_spec.check_config_criterion(config, config.criterion)  # An unknown name first, with "did you mean".
    if needs_sparsity and float(config.sparsity) == 0.0:
      raise ConfigError(f"config.criterion={config.criterion!r} needs config.sparsity > 0 "
                        "(or set config.criterion='none' for a dense run).")
  task_definition(config)  # The mesh against num_seeds and the batch: on every job, cached task or not.


@dataclasses.dataclass(frozen=True)
class TaskDefinition:
  """Everything a Task is built from (and nothing else): the key of the task cache.

  Derived from the config by task_definition; _build_task reads only this record, so a
  field it does not hold cannot change a task, and one it holds always does.
  """
  dataset: str
  data_dir: str
  synthetic: tuple       # Sorted (name, value) pairs of config.data.synthetic ((): none).
  eval_batch_size: int
  model: str
  width: float
  dtype: str
  conv: str
  train: tuple           # Sorted (name, value) pairs of what the optimizer and batches read.
  mesh: tuple            # (seeds, data) devices, resolved and checked.
  shard_train_set: bool


_TRAINER_FIELDS = ("batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "lr_drop_epochs",
                   "lr_drop_factor")


def _frozen(value):
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
  if isinstance(value, (list, tuple)):
    return tuple(_frozen(v) for v in value)
  return value


def task_definition(config):
  """The TaskDefinition of a job's config; checks the mesh (against num_seeds and the batch) every call."""
  mesh = config.get("mesh")
  seeds_data = sharding.mesh_shape(config, jax.device_count()) if mesh is not None else (1, 1)
  return TaskDefinition(
      dataset=config.dataset, data_dir=config.data.data_dir, synthetic=_frozen(config.data.get("synthetic") or {}),
      eval_batch_size=int(config.data.eval_batch_size), model=config.model, width=float(config.width),
      dtype=config.get("dtype", "float32"), conv=config.get("conv", "xla"),
      train=tuple((name, _frozen(config.train[name])) for name in _TRAINER_FIELDS),
      mesh=tuple(seeds_data), shard_train_set=bool(mesh is not None and mesh.get("shard_train_set", False)))


# The last task built in this process: the stages of a pipeline (IRP-SNIP, IRP-LTH, the sweep)
# share its data on device and its compiled programs instead of building each program once per
# stage. One slot: another definition replaces it (programs.reset() empties it).
_LAST_TASK = programs_lib.BoundedCache(1, "task")


def build_task(config):
  """The Task of `config`: the same Task (data and compiled programs) as the last call when the config
  defines the same task (TaskDefinition), else a new one."""
  definition = task_definition(config)
  if definition not in _LAST_TASK:
    _LAST_TASK.clear()  # Free the old task's device memory before loading the new one.
  return _LAST_TASK.get(definition, lambda: _build_task(definition))


def _build_task(definition):
  """Loads the data onto the devices of the definition's mesh (every process reads the whole set).

  With a mesh, the test set and the labels are replicated on every device, and the
  training images too unless mesh.shard_train_set splits their rows over the devices.
  Either way a step's batch is drawn from the whole set by the (seed, epoch) permutation,
  so every process and device count sees the same batches as a one-device run.
  """
  layout = sharding.layout_of(*definition.mesh)
  synthetic = dict(definition.synthetic) or None
  if synthetic is not None:
    synthetic = {k: (tuple(v) if isinstance(v, tuple) else v) for k, v in synthetic.items()}
  dataset = load_dataset(definition.dataset, definition.data_dir, synthetic)
  model = get_model(definition.model, dataset.spec.num_classes, width=definition.width,
                    dtype=DTYPES[definition.dtype], conv=definition.conv)
  train = dict(definition.train)
  try:
    trainer = training.make_trainer(train, dataset.spec, len(dataset.train_images), model, layout)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  arrays = (dataset.train_images, dataset.train_labels) + batching.eval_batches(
      dataset.test_images, dataset.test_labels, definition.eval_batch_size)
  if layout is None:
    arrays = tuple(jnp.asarray(a) for a in arrays)
  elif definition.shard_train_set:
    arrays = (layout.put_rows_sharded(arrays[0]),) + layout.put_replicated(arrays[1:])
  else:
    arrays = layout.put_replicated(arrays)
  return Task(trainer, dataset, arrays[0], arrays[1], arrays[2:])


def init_states(config, task):
  """Dense TrainStates with a leading seed axis (theta_0 drawn per seed), one program per task."""
  trainer = task.trainer
  prunable = prune_spec.prunable_from_config(config)

  def create(init_key, run_key):
    params, batch_stats = trainer.init_variables(init_key)
    return trainer.create_state(run_key, params, batch_stats, masks_lib.init_masks(params, prunable))

  layout = trainer.layout
  out = {} if layout is None else {"out_shardings": layout.states}
  program = task.program(programs_lib.program_key("init", prunable=prunable), lambda: jax.jit(jax.vmap(create),
                                                                                             **out))
  return program(keys.seed_keys(config), keys.run_keys(config))


def total_steps(config, task):
  """The optimizer steps of one training run (config.train.epochs of the task's epochs)."""
  return int(config.train.epochs) * task.trainer.steps_per_epoch


def seed_list(config):
  return [int(config.seed) + i for i in range(int(config.num_seeds))]


class TrainingLoop:
  """Trains stacked states to config.train.epochs in chunks; logs and records every epoch.

  Chunk boundaries sit at fixed positions inside each epoch (multiples of the
  chunk length), so a run resumed at a chunk boundary runs exactly the programs
  an uninterrupted run would (bit-identical resume). align > 0 makes that step
  of the epoch a chunk boundary too (IRP's late-rewinding point).
  `chunks(states, start_step)` yields (states, step) after every chunk; the
  yielded states are donated to the next chunk, so copy what you keep.
  `stopping` is True at a yield when the job is being preempted: save there;
  the loop then raises preemption.Preempted (after the last chunk it finishes
  instead: the job keeps the complete run). `last` holds the last epoch's record.
  networks: a name per stacked network (TensorBoard runs: workdir.tensorboard_layout); quiet: no
  epoch lines when the output is not a terminal (IRP rounds report per round); step_offset: the
  records' global_step is step_offset + step (IRP's levels on one axis).
  """

  def __init__(self, config, task, workdir, tag=None, align=0, networks=None, quiet=False, step_offset=None,
               stage_bar=None, sparse_training=None):
    self.config, self.task, self.workdir, self.tag = config, task, workdir, tag
    self.stage_bar = stage_bar  # A StageBar of the job (one bar over all its loops), else a bar of its own.
    self.step_offset = step_offset  # Records carry global_step = offset + step (IRP: one axis over levels).
    # A resolved dynamic_sparsity record whose masks change while training (None or Static: fixed masks).
    self.sparse_training = None if sparse_training is None or sparse_training.method == "static" else sparse_training
    self.networks, self.quiet, self.stopping = networks, quiet, False
    trainer = task.trainer
    self.spe = trainer.steps_per_epoch
    self.epochs = int(config.train.epochs)
    self.total = self.epochs * self.spe
    self.loop = training.resolve_loop(config.train.get("loop", "auto"), trainer, jax.default_backend())
    self.log_every = min(int(config.train.get("log_every_steps", 0)) or self.spe, self.spe)
    chunk = 1 if self.loop == "python" else self.log_every
    self.chunk = math.gcd(chunk, int(align)) if align else chunk
    self.last = {}

  def _step_program(self, n, step):
    """The compiled chunk of n steps starting at `step`, as a function of the stacked states."""
    unroll, record = self.loop == "python", self.sparse_training
    key = programs_lib.program_key("train_steps", steps=n, unroll=unroll,
                                   **({"sparse_training": record} if record is not None else {}))
    program = self.task.program(key, lambda: training.jit_epoch(self.task.trainer, n, unroll=unroll, record=record))
    if record is None:
      return program
    return lambda states, images, labels: program(states, images, labels, jnp.asarray(step, jnp.int32))

  def _check_finite(self, metrics, epoch, before, step):
    loss = np.asarray(metrics["loss"])
    if not np.all(np.isfinite(loss)):  # Before any checkpoint of this state.
      where = f"{self.tag}, " if self.tag else ""
      raise NumericalError(
          f"non-finite training loss {loss.tolist()} (per seed) in {where}epoch {epoch}, steps "
          f"{before + 1}-{step} of the round (step {step % self.spe or self.spe} of {self.spe} in the "
          "epoch). The job stopped; nothing from this state was saved, and checkpoints already in the "
          "workdir are kept. Lower config.train.lr or check the data.")

  def epoch_sums_json(self):
    """This epoch's chunk metrics so far (exact float32 values): a checkpoint keeps them so a run
    resumed mid-epoch reports the same epoch averages as an uninterrupted one."""
    return [{k: np.asarray(v).tolist() for k, v in m.items()} for m in self._sums]

  def chunks(self, states, start_step=0, epoch_sums=None):
    task, spe, prefix = self.task, self.spe, f"{self.tag} " if self.tag else ""
    evaluate = task.program(programs_lib.program_key("evaluate"), lambda: training.jit_evaluate(task.trainer))
    if task.trainer.layout is not None:
      states = task.trainer.layout.put_states(states)
    start, step = time.time(), int(start_step)
    carried = [{k: np.asarray(v, np.float32) for k, v in m.items()} for m in (epoch_sums or [])]
    stage = self.stage_bar or StageBar(self.tag or "training", self.total)
    stage.start_loop(self.tag, step)
    try:
      yield from self._chunks(states, step, start, carried, evaluate, stage, prefix)
    finally:
      if self.stage_bar is None:
        stage.done()

  def _chunks(self, states, step, start, carried, evaluate, stage, prefix):
    task, spe, start_step = self.task, self.spe, step
    while step < self.total:
      epoch = step // spe + 1
      epoch_start, first, sums = time.time(), step, []
      if carried:  # Resumed mid-epoch with the chunks' metrics of the steps before.
        first, sums, carried = (epoch - 1) * spe, carried, []
      self._sums = sums
      while step < epoch * spe:
        pos = step % spe
        n = min(self.chunk - pos % self.chunk, spe - pos)
        states, metrics = self._step_program(n, step)(states, task.train_images, task.train_labels)
        sums.append(jax.tree.map(lambda m, n=n: m * n, metrics))
        before, step = step, step + n
        self._check_finite(metrics, epoch, before, step)
        stage.advance(step)
        self.stopping = preemption.requested()
        yield states, step
        if self.stopping and step < self.total:  # At the end the run is complete: the job saves it.
          if not preemption.interrupted():  # Ctrl-C: the CLI says it in one line.
            log(f"preempted: {prefix}stopped at step {step} (epoch {epoch}, step {step % spe or spe} of {spe}) "
                "after its checkpoint; run the same command again to resume.")
          raise preemption.Preempted(step, f"epoch {epoch} of {self.tag}" if self.tag else
                                     f"epoch {epoch} of {self.epochs}")
        if plain_output() or stage.on:
          continue  # Epoch lines only (a bar shows the steps).
        if step < epoch * spe and (step % spe) // self.log_every > (before % spe) // self.log_every:
          rate = (time.time() - epoch_start) / max(step - int(start_step), 1)
          log(f"  {prefix}epoch {epoch} step {step % spe}/{spe}  loss {float(np.mean(metrics['loss'])):.4f}"
              f"  epoch left {fmt_time(rate * (epoch * spe - step))}")
      done = step - first
      totals = jax.tree.map(lambda *xs: np.sum([np.asarray(x) for x in xs], axis=0) / done, *sums)
      ev = jax.tree.map(np.asarray, evaluate(states, *task.eval_arrays))
      record = {"epoch": epoch, "step": step, "train_loss": totals["loss"].tolist(),
                "train_accuracy": totals["accuracy"].tolist(), "test_loss": ev["loss"].tolist(),
                "test_accuracy": ev["accuracy"].tolist(), "epoch_seconds": time.time() - epoch_start,
                "learning_rate": learning_rate(self.config, epoch - 1)}
      if self.networks:
        record["networks"] = list(self.networks)
      if self.step_offset is not None:
        record["global_step"] = self.step_offset + step
      if done < spe:
        record["steps_in_this_run"] = done  # Resumed mid-epoch: train metrics cover these steps.
      if self.tag:
        record["tag"] = self.tag
      self.workdir.log_metrics(record)
      self.last = record
      left = (time.time() - start) / (step - start_step) * (self.total - step)
      if stage.on or plain_output() and (self.quiet or not sparse_epoch(epoch, self.epochs)):
        continue  # A terminal's bar shows the progress; metrics.jsonl has every epoch.
      log(f"{prefix}epoch {epoch}/{self.epochs}  loss {np.mean(totals['loss']):.4f}  "
          f"train {100 * np.mean(totals['accuracy']):.2f}%  test {100 * np.mean(ev['accuracy']):.2f}%  "
          f"{record['epoch_seconds']:.1f} s/epoch  left {fmt_time(left)}")


class StageBar:
  """One live bar for a stage of a job (all of IRP's levels, a sweep's programs, a prune job's
  sparsities): `total` steps over every training loop it holds, so its rate and time left are those
  of the whole stage. A job places each loop on the bar (at(offset): the loop's step 0 is the
  stage's step `offset`). Off (a no-op) when the output is not a terminal."""

  def __init__(self, description, total):
    self.description, self.total = description, int(total)
    self.on = console.bars_on()
    self.task, self.offset, self.started, self.first = None, 0, None, 0

  def at(self, offset):
    self.offset = int(offset)
    return self

  def start_loop(self, tag, step):
    label = f"{self.description}: {tag}" if tag and tag != self.description else self.description
    if self.task is None:  # Created where this process starts (a resumed run): its rate is this process's.
      self.task = console.bar(label, self.total, self.offset + step)
      self.started, self.first = time.time(), self.offset + step
    console.advance(self.task, self.offset + step, description=label)

  def advance(self, step):
    done = self.offset + step
    rate = (done - self.first) / max(time.time() - self.started, 1e-9)
    console.advance(self.task, done, f"{rate:.1f} steps/s")

  def done(self):
    console.done(self.task)


def learning_rate(config, epoch):
  """The learning rate during (0-based) `epoch`: config.train.lr after the drops before it."""
  drops = sum(1 for e in config.train.lr_drop_epochs if int(e) <= epoch)
  return float(config.train.lr) * float(config.train.lr_drop_factor) ** drops


def sparse_epoch(epoch, epochs):
  """Epochs that get a line when the output is not a terminal: the first, the last, and 3 between."""
  every = max(1, -(-epochs // 4))
  return epoch == 1 or epoch == epochs or epoch % every == 0


def run_training(config, task, states, workdir, tag=None, start_step=0, checkpoint_dir=None, networks=None,
                 stage_bar=None, sparse_training=None):
  """Trains `states` from `start_step` to config.train.epochs: (states, last epoch's record).

  checkpoint_dir: mid-run checkpoints there (RunCheckpoints); the newest resumes the run.
  stage_bar: the job's StageBar, placed where this run starts (else the run gets a bar of its own).
  sparse_training: a resolved dynamic_sparsity record (masks that change while training).
  """
  loop = TrainingLoop(config, task, workdir, tag, networks=networks, stage_bar=stage_bar,
                      sparse_training=sparse_training)
  ckpt = RunCheckpoints(checkpoint_dir, config) if checkpoint_dir else None
  epoch_sums = None
  if ckpt is not None:
    restored = ckpt.restore(states)
    if restored is not None:
      states, start_step, meta = restored
      epoch_sums = meta.get("epoch_sums")
      log(f"{tag + ': ' if tag else ''}resuming from its checkpoint at step {start_step}")
      workdir.log_metrics({"event": "resumed", "step": start_step, **({"tag": tag} if tag else {})})
  try:
    for states, step in loop.chunks(states, start_step, epoch_sums):
      if ckpt is not None and step < loop.total and (loop.stopping or ckpt.due(step, loop.spe)):
        ckpt.save(states, step, {"epoch_sums": loop.epoch_sums_json() if step % loop.spe else []})
  finally:
    if ckpt is not None:
      ckpt.close()
  return states, loop.last


# Result summaries: one definition of each field every job reports.

def summarize(values):
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "std": float(values.std()), "per_seed": values.tolist()}


def density_reports(states):
  """One density report per network of stacked states (host numbers)."""
  masks = to_host(states.masks)
  count = jax.tree.leaves(masks)[0].shape[0]
  return [masks_lib.density_report(jax.tree.map(lambda m: m[i], masks)) for i in range(count)]


def density_summary(reports):
  """Achieved density over seeds, per seed and per layer."""
  return {
      "density": float(np.mean([r["density"] for r in reports])),
      "density_per_seed": [{k: r[k] for k in ("kept", "total", "density", "empty_layers")} for r in reports],
      "kept_per_seed": [r["kept"] for r in reports], "total": reports[0]["total"],
      "empty_layers": sorted({n for r in reports for n in r["empty_layers"]}),
      "layer_density": {n: float(np.mean([r["layers"][n]["density"] for r in reports]))
                        for n in reports[0]["layers"]},
  }


def accuracy_summary(record):
  """Final accuracy and losses of an epoch record, mean over seeds (and per seed)."""
  return {"test_accuracy": float(np.mean(record["test_accuracy"])),
          "test_accuracy_seeds": summarize(record["test_accuracy"]),
          "test_loss": float(np.mean(record["test_loss"])),
          "train_loss": float(np.mean(record["train_loss"])),
          "train_accuracy": float(np.mean(record["train_accuracy"]))}


def warn_empty_layers(reports, labels, tag=""):
  """One warning per network with layers pruned to zero weights (layer collapse)."""
  for label, report in zip(labels, reports):
    if report["empty_layers"]:
      log(f"warning: {tag + ' ' if tag else ''}{label}: layers pruned to zero weights: "
          f"{', '.join(report['empty_layers'])} (config.prune.min_per_layer keeps some)")
