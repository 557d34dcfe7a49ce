"""The `irp` job: iterative rewind pruning as levels (LTH with `magnitude`, SNIP-iter with `snip`).

Levels, in the manner of open_lth's lottery runner: the run loop is

    for level in run.pending():   # what the newest checkpoint has not finished
      run.prune(level)            # PruneLevel r: score the current weights, keep spec.plan's
                                  # counts of round r (exact top-k among the survivors: nested
                                  # masks), count the survivors, rewind them to theta_0 (or to
                                  # the weights at step irp.rewind_step of the first training:
                                  # "late rewinding"); DenseLevel (irp.train_first): nothing
      run.train(level)            # the recipe's epochs, checkpointing inside the level
      run.record(level)           # the level's record and log line
      run.end_of_level(level)     # checkpoint; stop here when preempted

The levels are planned by the same PruneSpec as pruning at init (prune_spec.irp_spec:
irp.rounds rounds on irp.schedule to irp.final_density). Round 0 prunes at initialisation
(as the original code does), so its scores are |theta_0 g_0| for SNIP.

State between levels is one pytree (IrpState, vmapped over seeds) plus a Progress
record, checkpointed with Orbax every irp.checkpoint_every_steps training steps and
after each level; the newest readable checkpoint resumes the run bit-identically. Each
level is idempotent: one restored inside its training is not pruned again. Randomness: keys.py
(round r prunes with keys.prune_key(k, r), g_0 is keys.g0_key(k), round r
trains with keys.irp_round_key(k, r)).
"""
import dataclasses
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import criteria, keys, masks as masks_lib, programs, prune_spec, pruning, training
from autosparse_jax.console import log, plain_output
from autosparse_jax.criteria.base import PruneData, initial_gradient
from autosparse_jax.errors import ConfigError
from autosparse_jax.lab import engine, preemption, runs
from autosparse_jax.lab.checkpoints import Checkpoints
from autosparse_jax.lab.distributed import is_writer, to_host
from autosparse_jax.lab.workdir import Workdir
from autosparse_jax.score_dataset import export_score_dataset, load_score_dataset


@flax.struct.dataclass
class IrpState:
  train: training.TrainState
  rewind_params: Any       # Weights every round rewinds to (theta_0, or theta_k when late).
  rewind_batch_stats: Any
  init_params: Any         # theta_0 (the dataset's feature).
  g0: Any                  # Initial gradient on the pruning data (the dataset's feature).
  survived: Any            # int32 per prunable weight: rounds survived so far.
  seed_key: jax.Array


@dataclasses.dataclass(frozen=True)
class DenseLevel:
  """The dense training irp.train_first adds before the first pruning round (standard LTH)."""
  index: int
  round = None
  density = None
  tag = "dense"


@dataclasses.dataclass(frozen=True)
class PruneLevel:
  """Pruning round `round`: prune to `density` (keep `counts`, from spec.plan), rewind, train."""
  index: int
  round: int
  density: float
  counts: Any

  @property
  def tag(self):
    return f"round {self.round}"


@dataclasses.dataclass(frozen=True)
class Progress:
  """Where a run is: JSON beside each checkpoint. Whether the current level is pruned and whether the
  late-rewinding weights are stored follow from it and the state's step (IrpRun.restore)."""
  level: int = 0               # The level being run (== len(levels) when all are done).
  history: tuple = ()          # One record per finished level.
  level_seconds: float = 0.0   # Training time of this level in earlier attempts.
  prune_seconds: float = 0.0
  epoch_sums: tuple = ()       # Metrics of the epoch's chunks so far.

  @classmethod
  def from_json(cls, meta):
    """Progress of a checkpoint's JSON (those of earlier versions carry two flags it now derives)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta.items() if k in names})

  def to_json(self):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def levels(spec, masks_one_seed, train_first):
  """The run's levels in order (the dense one first when train_first); counts from spec.plan."""
  first = [DenseLevel(0)] if train_first else []
  return first + [PruneLevel(len(first) + r, r, float(d), c)
                  for r, (d, c) in enumerate(zip(spec.densities(), spec.plan(masks_one_seed)))]


def validate(config):
  engine.validate(config, needs_sparsity=False)
  irp = config.irp
  if config.criterion == engine.NO_PRUNING or not criteria.get(config.criterion).jittable:
    raise ConfigError(f"config.criterion={config.criterion!r} cannot drive IRP: use magnitude (LTH), "
                      "snip (SNIP-iter) or another of " + ", ".join(criteria.jittable_names()) + ".")
  if int(irp.rounds) < 1:
    raise ConfigError(f"config.irp.rounds={irp.rounds} must be >= 1.")
  if not 0.0 < float(irp.final_density) < 1.0:
    raise ConfigError(f"config.irp.final_density={irp.final_density} must be in (0, 1) "
                      "(0.01 keeps 1% of the prunable weights).")
  spec = prune_spec.irp_spec(config)
  if spec.ablation != "none":
    raise ConfigError(f"config.prune.ablation={spec.ablation!r} is a check of pruning at init; "
                      "IRP does not take it: set it to 'none' (use the prune or sweep job).")
  if spec.sparse_training.method != "static":
    raise ConfigError(f"config.sparse_training.method={spec.sparse_training.method!r} changes masks while "
                      "training; IRP changes them between its levels: set config.sparse_training.method='static' "
                      "(IRP's rounds are its schedule), or run the prune or sweep job.")
  if int(irp.rewind_step) < 0:
    raise ConfigError(f"config.irp.rewind_step={irp.rewind_step} must be >= 0 (0 rewinds to theta_0).")
  if int(irp.checkpoint_every_steps) < 0 or int(irp.keep_checkpoints) < 1:
    raise ConfigError(f"config.irp.checkpoint_every_steps={irp.checkpoint_every_steps} must be >= 0 "
                      f"and config.irp.keep_checkpoints={irp.keep_checkpoints} >= 1.")


def initial_state(data_options, task, state):
  """IrpState of one seed from its freshly initialised TrainState (computes g_0 on data_options' data)."""
  trainer = task.trainer
  data = PruneData(task.train_images, task.train_labels)
  model_state = pruning.model_state(trainer, state.batch_stats)
  g0 = initial_gradient(model_state, state.params, state.masks, data, keys.g0_key(state.key), data_options)
  survived = jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.int32), state.masks)
  return IrpState(train=state, rewind_params=state.params, rewind_batch_stats=state.batch_stats,
                  init_params=state.params, g0=g0, survived=survived, seed_key=state.key)


def prune_and_rewind(spec, task, irp, counts, round_index, start_step=0, drop_zero_scores=False):
  """One seed: prune to `counts` (nested), count survivors, rewind: (IrpState, [per prunable layer: the
  round's scores are finite]). Pure; jit/vmap it.

  The rewound network restarts at `start_step` (irp.rewind_step once the late rewinding point has been
  recorded, else 0). drop_zero_scores: irp.prune_zero_scores (the original code's over-pruning).
  """
  trainer = task.trainer
  st = irp.train
  masks, scores = pruning.prune_round(
      spec, st.params, st.masks, pruning.model_state(trainer, st.batch_stats),
      PruneData(task.train_images, task.train_labels), keys.prune_key(irp.seed_key, round_index), counts,
      drop_zero_scores=drop_zero_scores)
  survived = jax.tree.map(lambda v, m: v + m.astype(jnp.int32) if m.ndim else v, irp.survived, masks)
  rewound = trainer.create_state(keys.irp_round_key(irp.seed_key, round_index), irp.rewind_params,
                                 irp.rewind_batch_stats, masks)
  rewound = rewound.replace(step=jnp.asarray(start_step, jnp.int32))
  return irp.replace(train=rewound, survived=survived), pruning.finite_layers(scores, st.masks)


def first_step(irp):
  """The training step of seed 0 (all seeds are at the same step)."""
  return int(to_host(irp.train.step)[0])


def copy_tree(tree):
  """Fresh buffers: the training steps donate their input, which must alias nothing we keep."""
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


class IrpRun:
  """One IRP run's state between levels and the bookkeeping around them (checkpoints, records, logs).

  Each level is idempotent given what the checkpoint holds: a level restored mid-training is not
  pruned again, and a finished one is not run again.
  """

  def __init__(self, config, workdir, task, spec):
    self.config, self.workdir, self.task, self.spec = config, workdir, task, spec
    self.seeds = engine.seed_list(config)
    self.rewind_step = int(config.irp.rewind_step)
    self.total_steps = task.trainer.steps_per_epoch * int(config.train.epochs)
    self.started = time.time()
    directory = os.path.join(workdir.path, "checkpoints")
    resuming = os.path.isdir(directory) and any(os.scandir(directory))
    workdir.start(resuming=resuming)
    self.checkpoints = Checkpoints(directory, int(config.irp.keep_checkpoints))
    data = prune_spec.data_options_from_config(config)
    initial = task.program(programs.program_key("irp_initial", data=data),
                           lambda: jax.jit(jax.vmap(lambda st: initial_state(data, task, st))))
    fresh = initial(engine.init_states(config, task))
    restored = self.checkpoints.restore_latest(fresh) if resuming else None
    self.irp, self.progress = (fresh, Progress()) if restored is None else (restored[0],
                                                                            Progress.from_json(restored[1]))
    if restored is not None:
      log(f"resuming from checkpoint: level {self.progress.level}, step {first_step(self.irp)}")
      workdir.log_metrics({"event": "resumed", "level": self.progress.level, "step": first_step(self.irp)})
    self.levels = levels(spec, jax.tree.map(lambda m: m[0], self.irp.train.masks), bool(config.irp.train_first))
    self.bar = engine.StageBar(f"irp {config.criterion}", len(self.levels) * self.total_steps)  # All levels.

  def pending(self):
    return self.levels[self.progress.level:]

  def rewind_captured(self, level):
    """Whether the late-rewinding weights (at step irp.rewind_step of the first level) are stored."""
    return self.rewind_step == 0 or level.index > 0 or first_step(self.irp) >= self.rewind_step

  def prune(self, level):
    """Prunes and rewinds every seed for `level` (nothing for the dense level or a level restored mid-way)."""
    if isinstance(level, DenseLevel) or self.trained_part(level):
      return
    t = time.time()
    restart = self.rewind_step if self.rewind_captured(level) else 0
    drop_zero = bool(self.config.irp.prune_zero_scores)
    key = programs.program_key("irp_prune", spec=self.spec, criterion=self.spec.record, prune_zero_scores=drop_zero)
    program = self.task.program(key, lambda: jax.jit(jax.vmap(
        lambda s, c, r, k: prune_and_rewind(self.spec, self.task, s, c, r, k, drop_zero),
        in_axes=(0, None, None, None))))
    with criteria.precision_scope(self.spec.criterion):
      pruned, finite = jax.block_until_ready(program(self.irp, jnp.asarray(level.counts), level.round, restart))
    pruning.check_finite(self.spec.criterion, to_host(finite), jax.tree.map(lambda m: m[0], self.irp.train.masks),
                         f"({level.tag}; the checkpoints before it are kept)")
    # Not checkpointed: a resumed run redoes this pruning from the level before (same bits),
    # which costs less than saving the whole state once more per round.
    self.irp = pruned
    self.progress = dataclasses.replace(self.progress, prune_seconds=time.time() - t, level_seconds=0.0)
    reports = engine.density_reports(self.irp.train)
    if not plain_output() and not self.bar.on:  # Sparse output or a bar: the level's one line says it.
      log(f"{level.tag}: density {np.mean([x['density'] for x in reports]):.5f} (target {level.density:.5f})")

  def trained_part(self, level):
    """Whether an earlier attempt already pruned `level` and trained part of it: restored from a checkpoint
    inside its training (0 < step < the round's steps; level ends are saved at the last step, and a pruned
    level restarts at step 0 or irp.rewind_step, below the first checkpoint inside it)."""
    return 0 < first_step(self.irp) < self.total_steps

  def train(self, level):
    """Trains `level` from where the state stands; checkpoints every irp.checkpoint_every_steps."""
    engine.warn_empty_layers(engine.density_reports(self.irp.train), [f"seed {s}" for s in self.seeds], level.tag)
    every = int(self.config.irp.checkpoint_every_steps)
    spe = self.task.trainer.steps_per_epoch
    captured = self.rewind_captured(level)
    loop = engine.TrainingLoop(self.config, self.task, self.workdir, tag=level.tag,
                               align=0 if captured else self.rewind_step % spe,
                               networks=[f"seed_{s}" for s in self.seeds], quiet=True,
                               step_offset=level.index * self.total_steps,
                               stage_bar=self.bar.at(level.index * self.total_steps))
    started, saved_at = time.time(), first_step(self.irp)
    for states, step in loop.chunks(copy_tree(self.irp.train), start_step=first_step(self.irp),
                                    epoch_sums=list(self.progress.epoch_sums)):
      self.irp = self.irp.replace(train=states)
      if not captured and step == self.rewind_step:  # Late rewinding: later rounds restart from here.
        self.irp = self.irp.replace(rewind_params=copy_tree(states.params),
                                    rewind_batch_stats=copy_tree(states.batch_stats))
        captured = True
      if step < self.total_steps and (loop.stopping or every and step - saved_at >= every
                                      and self.checkpoints.due(self.config)):
        sums = tuple(loop.epoch_sums_json()) if step % spe else ()
        self.save(dataclasses.replace(self.progress, level_seconds=self.progress.level_seconds
                                      + time.time() - started, epoch_sums=sums))
        saved_at = step
    self.last = loop.last
    self.progress = dataclasses.replace(self.progress, level_seconds=self.progress.level_seconds
                                        + time.time() - started)

  def record(self, level):
    """The finished level's record (results' history, metrics.jsonl) and its log line."""
    reports = engine.density_reports(self.irp.train)
    last, progress = self.last, self.progress
    seconds = progress.level_seconds + progress.prune_seconds
    costs = runs.mask_cost(self.task, self.irp.train, int(self.config.train.batch_size), self.spec.structure)
    record = {"round": level.round, "level": level.index,
              "density": [x["density"] for x in reports], "kept": [x["kept"] for x in reports],
              "target_density": level.density, "train_accuracy": last.get("train_accuracy"),
              "test_accuracy": last.get("test_accuracy"), "test_loss": last.get("test_loss"),
              "prune_seconds": progress.prune_seconds, "seconds": seconds,
              **runs.cost_summary(costs)}  # What this round's masks cost.
    self.workdir.log_metrics(dict(record, event="round_done", networks=[f"seed_{s}" for s in self.seeds]))
    log(f"{level.tag} done: test {100 * np.mean(last['test_accuracy']):.2f}% at density "
        f"{record['density'][0]:.5f}, {seconds:.1f} s (level {level.index + 1}/{len(self.levels)}, "
        f"{time.time() - self.started:.0f} s so far in this run)")
    self.progress = Progress(level=level.index + 1, history=progress.history + (record,))

  def end_of_level(self, level):
    """Saves after the level when it is the last, the job is stopping or a checkpoint is due; stops then."""
    stopping = preemption.requested()
    if level.index + 1 == len(self.levels) or stopping or self.checkpoints.due(self.config):
      self.save(self.progress)
    if stopping and level.index + 1 < len(self.levels):
      if not preemption.interrupted():  # Ctrl-C: the CLI says it in one line.
        log(f"preempted: stopped after {level.tag} with its checkpoint; run the same command again to resume.")
      raise preemption.Preempted(first_step(self.irp), f"the end of {level.tag}")

  def save(self, progress):
    self.checkpoints.save(self.irp, progress.to_json())


def run(config, workdir_path):
  """The IRP job: levels with Orbax resume, then the score datasets and results.json."""
  workdir = Workdir(workdir_path, config)
  if (done := workdir.finished_results()) is not None:
    return done
  spec = prune_spec.irp_spec(config)
  task = engine.build_task(config)
  check_rewind_step(config, task)
  with criteria.precision_scope(spec.criterion):
    irp_run = IrpRun(config, workdir, task, spec)
    log_plan(config, irp_run)
    for level in irp_run.pending():
      irp_run.prune(level)
      irp_run.train(level)
      irp_run.record(level)
      irp_run.end_of_level(level)
  irp_run.bar.done()
  results = finish(config, workdir, irp_run.irp, irp_run.progress,
                   [level for level in irp_run.levels if isinstance(level, PruneLevel)], irp_run.seeds,
                   time.time() - irp_run.started)
  irp_run.checkpoints.close()
  return results


def check_rewind_step(config, task):
  spe, epochs = task.trainer.steps_per_epoch, int(config.train.epochs)
  if int(config.irp.rewind_step) >= spe * epochs:
    raise ConfigError(f"config.irp.rewind_step={config.irp.rewind_step} must be below the steps of one round "
                      f"({spe * epochs} = {epochs} epochs x {spe} steps).")


def log_plan(config, irp_run):
  rounds = [level for level in irp_run.levels if level.round is not None]
  log(f"irp: {config.criterion} on {config.model}/{config.dataset}, {len(rounds)} rounds to density "
      f"{config.irp.final_density} ({config.irp.schedule}), seeds {irp_run.seeds}, {config.train.epochs} epochs "
      f"of {irp_run.task.trainer.steps_per_epoch} steps per round"
      + (" after a dense training" if config.irp.train_first else ""))


def finish(config, workdir, irp, progress, rounds, seeds, seconds):
  """Exports one score dataset per seed and writes results.json (process 0 writes)."""
  irp = to_host(irp)  # Several processes: every process gets every seed's arrays.
  masks0 = jax.tree.map(lambda m: np.asarray(m[0]), irp.train.masks)  # Without the seed axis.
  names = [name for name, _ in masks_lib.prunable_items(masks0, masks0)]
  data = prune_spec.data_options_from_config(config)
  metadata = {"model": config.model, "dataset": config.dataset, "width": float(config.width),
              "criterion": config.criterion, "rounds": int(config.irp.rounds),
              "schedule": config.irp.schedule, "final_density": float(config.irp.final_density),
              "train_first": bool(config.irp.train_first), "rewind_step": int(config.irp.rewind_step),
              "epochs_per_round": int(config.train.epochs),
              "g0_reduction": data.grad_reduction, "g0_batches": int(data.num_batches),
              "g0_batch_size": int(data.batch_size)}
  dirs, histograms, start = [], [], time.time()
  for i, seed in enumerate(seeds):
    pick = lambda tree, i=i: [x for _, x in masks_lib.prunable_items(
        jax.tree.map(lambda v: np.asarray(v[i]), tree), masks0)]
    survived = pick(irp.survived)
    data_dir = os.path.join(workdir.path, "scores", f"seed_{seed}")
    target = os.path.join(data_dir, "autosparse_scores", "1.0.0")
    if not is_writer():
      dirs.append(target)
    elif os.path.exists(target):  # Exported by an earlier, interrupted attempt of this run?
      arrays, _ = load_score_dataset(target)
      if not all(np.array_equal(a["survival"], s) for a, s in zip(arrays["by_layer"], survived)):
        raise ConfigError(f"{target} holds a different score dataset; not overwriting it.")
      dirs.append(target)
    else:
      dirs.append(export_score_dataset(data_dir, names, pick(irp.init_params), pick(irp.g0), survived,
                                       dict(metadata, seed=seed)))
    flat = np.concatenate([s.reshape(-1) for s in survived])
    histograms.append(np.bincount(flat, minlength=int(config.irp.rounds) + 1).tolist())
  export_seconds = time.time() - start
  history = progress.history
  last = history[-1]
  results = {
      "job": "irp", "model": config.model, "dataset": config.dataset, "criterion": config.criterion,
      "seeds": seeds, "rounds": list(history), "target_densities": [level.density for level in rounds],
      "final_density": float(np.mean(last["density"])),
      "test_accuracy": float(np.mean(last["test_accuracy"])),
      "test_accuracy_seeds": engine.summarize(last["test_accuracy"]),
      "survival_histogram": histograms if len(seeds) > 1 else histograms[0],
      "score_dataset_dir": dirs if len(seeds) > 1 else dirs[0],
      "num_weights": int(sum(m.size for _, m in masks_lib.prunable_items(masks0, masks0))),
      "export_seconds": export_seconds, "wall_seconds_this_run": seconds,
      "g0_reduction": data.grad_reduction,
  }
  workdir.write_results(results)
  log(f"irp done: final density {results['final_density']:.5f}, test accuracy "
      f"{100 * results['test_accuracy']:.2f}%; score dataset(s): {results['score_dataset_dir']}")
  return results
