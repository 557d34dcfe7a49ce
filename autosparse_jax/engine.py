"""The engine every job runs on: task, initial states, the training loop, result summaries.

  validate(config)          the checks every training job shares, in-process, before compute
  start(config, workdir)    workdir check -> data on the devices (a Task); None when finished
  init_states(config, task) theta_0 of every seed, stacked on the vmapped seed axis
  TrainingLoop              trains stacked states chunk by chunk; yields after each chunk
                            (jobs checkpoint there); logs and records each epoch
  run_training(...)         the loop to the end
  density_reports / density_summary / accuracy_summary / warn_empty_layers
                            the results fields every job reports the same way

Pruning is pruning.py's; the jobs (jobs/) are: validate -> run on the engine ->
write results.
"""
import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import keys, masks as masks_lib, preemption, programs as programs_lib, pruning, sharding, training
from autosparse_jax.checkpoints import RunCheckpoints
from autosparse_jax.config_tools import canonical_json, config_to_dict
from autosparse_jax import console
from autosparse_jax.console import fmt_time, log, plain_output
from autosparse_jax.data import batching, load_dataset
from autosparse_jax.distributed import to_host
from autosparse_jax.errors import ConfigError, NumericalError, unknown_name_message
from autosparse_jax.models import DTYPES, MODELS, get_model
from autosparse_jax.workdir import Workdir


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
  pruning.check_sparsity(config.sparsity, "config.sparsity", allow_zero=True)
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
  if config.prune.distribution not in masks_lib.DISTRIBUTIONS:
    raise ConfigError(unknown_name_message("config.prune.distribution", config.prune.distribution,
                                           masks_lib.DISTRIBUTIONS))
  if config.criterion != pruning.NO_PRUNING:
    pruning.validate_criterion(config, config.criterion)  # An unknown name first, with "did you mean".
    if needs_sparsity and float(config.sparsity) == 0.0:
      raise ConfigError(f"config.criterion={config.criterion!r} needs config.sparsity > 0 "
                        "(or set config.criterion='none' for a dense run).")


# The last task built in this process, keyed by the fields that define it: the stages of a
# pipeline (IRP-SNIP, IRP-LTH, the sweep) share its data on device and its compiled programs
# instead of building each program once per stage. One slot: another task replaces it.
_TASK_FIELDS = ("dataset", "data", "model", "width", "dtype", "conv", "train", "mesh")
_TASK_UNUSED = ("train.epochs", "train.log_every_steps")  # Read by the jobs, not by the task.
_last_task = [None, None]


def task_key(config):
  fields = {name: config_to_dict(config[name]) if hasattr(config[name], "to_dict") else config[name]
            for name in _TASK_FIELDS if name in config}
  for dotted in _TASK_UNUSED:
    group, name = dotted.split(".")
    fields.get(group, {}).pop(name, None)
  return canonical_json(fields)


def build_task(config):
  """The task of `config`: the same Task (data and compiled programs) as the last call when the
  config defines the same task (task_key), else a new one (see _build_task)."""
  key = task_key(config)
  if _last_task[0] != key:
    _last_task[:] = [None, None]  # Free the old task's device memory before loading the new one.
    _last_task[:] = [key, _build_task(config)]
  return _last_task[1]


def _build_task(config):
  """Loads the data onto the devices of config.mesh (every process reads the whole set).

  With a mesh, the test set and the labels are replicated on every device, and the
  training images too unless config.mesh.shard_train_set splits their rows over
  the devices. Either way a step's batch is drawn from the whole set by the
  (seed, epoch) permutation, so every process and device count sees the same
  batches as a one-device run.
  """
  layout = sharding.layout_from_config(config)
  dataset = load_dataset(config.dataset, config.data.data_dir, config.data.get("synthetic"))
  model = get_model(config.model, dataset.spec.num_classes, width=float(config.width),
                    dtype=DTYPES[config.get("dtype", "float32")], conv=config.get("conv", "xla"))
  try:
    trainer = training.make_trainer(config, dataset.spec, len(dataset.train_images), model, layout)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  arrays = (dataset.train_images, dataset.train_labels) + batching.eval_batches(
      dataset.test_images, dataset.test_labels, int(config.data.eval_batch_size))
  if layout is None:
    arrays = tuple(jnp.asarray(a) for a in arrays)
  elif config.mesh.get("shard_train_set", False):
    arrays = (layout.put_rows_sharded(arrays[0]),) + layout.put_replicated(arrays[1:])
  else:
    arrays = layout.put_replicated(arrays)
  return Task(trainer, dataset, arrays[0], arrays[1], arrays[2:])


def start(config, workdir_path, resuming=False):
  """Checks the workdir, loads the data: (workdir, task); call after the job's validate.

  task is None when the workdir already holds this config's results.
  resuming=True: the job continues earlier partial output (see Workdir.start).
  """
  workdir = Workdir(workdir_path, config)
  if workdir.finished_results() is not None:
    return workdir, None
  task = build_task(config)
  workdir.start(resuming=resuming)
  return workdir, task


def init_states(config, task):
  """Dense TrainStates with a leading seed axis (theta_0 drawn per seed), one program per task."""
  trainer = task.trainer
  prunable = config.prune.prunable

  def create(init_key, run_key):
    params, batch_stats = trainer.init_variables(init_key)
    return trainer.create_state(run_key, params, batch_stats, masks_lib.init_masks(params, prunable))

  layout = trainer.layout
  out = {} if layout is None else {"out_shardings": layout.states}
  program = task.program(programs_lib.program_key("init", prunable=prunable), lambda: jax.jit(jax.vmap(create),
                                                                                             **out))
  return program(keys.seed_keys(config), keys.run_keys(config))


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
  networks: a name per stacked network (TensorBoard curves); quiet: no epoch
  lines when the output is not a terminal (IRP rounds report per round).
  """

  def __init__(self, config, task, workdir, tag=None, align=0, networks=None, quiet=False):
    self.config, self.task, self.workdir, self.tag = config, task, workdir, tag
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

  def _step_program(self, n):
    unroll = self.loop == "python"
    return self.task.program(programs_lib.program_key("train_steps", steps=n, unroll=unroll),
                             lambda: training.jit_epoch(self.task.trainer, n, unroll=unroll))

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
    progress_bar = console.bar(self.tag or "training", self.total, step)
    try:
      yield from self._chunks(states, step, start, carried, evaluate, progress_bar, prefix)
    finally:
      console.done(progress_bar)

  def _chunks(self, states, step, start, carried, evaluate, progress_bar, prefix):
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
        states, metrics = self._step_program(n)(states, task.train_images, task.train_labels)
        sums.append(jax.tree.map(lambda m, n=n: m * n, metrics))
        before, step = step, step + n
        self._check_finite(metrics, epoch, before, step)
        console.advance(progress_bar, step, f"{(step - start_step) / max(time.time() - start, 1e-9):.1f} steps/s")
        self.stopping = preemption.requested()
        yield states, step
        if self.stopping and step < self.total:  # At the end the run is complete: the job saves it.
          log(f"preempted: {prefix}stopped at step {step} (epoch {epoch}, step {step % spe or spe} of {spe}) "
              "after its checkpoint; run the same command again to resume.")
          raise preemption.Preempted(step)
        if plain_output() or progress_bar is not None:
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
      if done < spe:
        record["steps_in_this_run"] = done  # Resumed mid-epoch: train metrics cover these steps.
      if self.tag:
        record["tag"] = self.tag
      self.workdir.log_metrics(record)
      self.last = record
      left = (time.time() - start) / (step - start_step) * (self.total - step)
      if plain_output() and (self.quiet or not sparse_epoch(epoch, self.epochs)):
        continue
      log(f"{prefix}epoch {epoch}/{self.epochs}  loss {np.mean(totals['loss']):.4f}  "
          f"train {100 * np.mean(totals['accuracy']):.2f}%  test {100 * np.mean(ev['accuracy']):.2f}%  "
          f"{record['epoch_seconds']:.1f} s/epoch  left {fmt_time(left)}")


def learning_rate(config, epoch):
  """The learning rate during (0-based) `epoch`: config.train.lr after the drops before it."""
  drops = sum(1 for e in config.train.lr_drop_epochs if int(e) <= epoch)
  return float(config.train.lr) * float(config.train.lr_drop_factor) ** drops


def sparse_epoch(epoch, epochs):
  """Epochs that get a line when the output is not a terminal: the first, the last, and 3 between."""
  every = max(1, -(-epochs // 4))
  return epoch == 1 or epoch == epochs or epoch % every == 0


def run_training(config, task, states, workdir, tag=None, start_step=0, checkpoint_dir=None, networks=None):
  """Trains `states` from `start_step` to config.train.epochs: (states, last epoch's record).

  checkpoint_dir: mid-run checkpoints there (RunCheckpoints); the newest resumes the run.
  """
  loop = TrainingLoop(config, task, workdir, tag, networks=networks)
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
