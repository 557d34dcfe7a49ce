"""The `irp` job: iterative rewind pruning as levels (LTH with `magnitude`, SNIP-iter with `snip`).

Levels, in the manner of open_lth's lottery runner. Level k is either the
dense training that irp.train_first adds (standard LTH) or pruning round r:
  prune_level  score the current weights with config.criterion, prune to round r's
               density (exact top-k among the survivors: masks are nested), count the
               survivors, rewind them to theta_0 (or to the weights at step
               irp.rewind_step of the first training: "late rewinding");
  train_level  train with the recipe's epochs.
Round 0 prunes at initialisation (as the original code does), so its scores
are |theta_0 g_0| for SNIP.

State between levels is one pytree (IrpState, vmapped over seeds) plus a
Progress record. Both are checkpointed with Orbax after each prune, every
irp.checkpoint_every_steps training steps and after each level; the newest
readable checkpoint resumes the run bit-identically. Randomness: keys.py
(round r prunes with keys.prune_key(k, r), g_0 is keys.g0_key(k), round r
trains with keys.irp_round_key(k, r)).
"""
import dataclasses
import os
import time
from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import (criteria, engine, keys, masks as masks_lib, preemption, programs, prune_spec, pruning,
                            structure, training)
from autosparse_jax.checkpoints import Checkpoints
from autosparse_jax.jobs.prune import cost_summary, mask_cost
from autosparse_jax.console import log, plain_output
from autosparse_jax.criteria.base import PruneData, initial_gradient
from autosparse_jax.distributed import is_writer, to_host
from autosparse_jax.errors import ConfigError
from autosparse_jax.score_dataset import export_score_dataset, load_score_dataset
from autosparse_jax.workdir import Workdir


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
class Level:
  index: int
  round: Optional[int]  # Pruning round; None: the dense training of irp.train_first.
  density: Optional[float] = None
  counts: Any = None    # Keep counts of the round (pruning.keep_plan).

  @property
  def tag(self):
    return "dense" if self.round is None else f"round {self.round}"


@dataclasses.dataclass
class Progress:
  """Where a run is: JSON beside each checkpoint."""
  level: int = 0               # The level being run (== len(levels) when all are done).
  pruned: bool = False         # This level's pruning is done (it is training).
  rewind_captured: bool = True  # Late rewinding: the weights at irp.rewind_step are stored.
  history: list = dataclasses.field(default_factory=list)  # One record per finished level.
  level_seconds: float = 0.0   # Training time of this level in earlier attempts.
  prune_seconds: float = 0.0
  epoch_sums: list = dataclasses.field(default_factory=list)  # Metrics of the epoch's chunks so far.


def levels(config, masks_one_seed):
  """The run's levels in order (the dense one first when irp.train_first)."""
  densities = pruning.schedule(float(config.irp.final_density), int(config.irp.rounds), config.irp.schedule,
                               "config.irp.schedule", pruning.IRP_SCHEDULES)
  counts = structure.keep_plan(structure.parse(config.prune.get("structure", structure.UNSTRUCTURED),
                                               "config.prune.structure"),
                               masks_one_seed, densities, config.prune.distribution)
  out = [Level(0, None)] if config.irp.train_first else []
  return out + [Level(len(out) + r, r, float(d), c) for r, (d, c) in enumerate(zip(densities, counts))]


def validate(config):
  engine.validate(config, needs_sparsity=False)
  irp = config.irp
  if config.criterion == pruning.NO_PRUNING or not criteria.get(config.criterion).jittable:
    raise ConfigError(f"config.criterion={config.criterion!r} cannot drive IRP: use magnitude (LTH), "
                      "snip (SNIP-iter) or another of " + ", ".join(criteria.jittable_names()) + ".")
  if config.prune.get("ablation", "none") != "none":
    raise ConfigError(f"config.prune.ablation={config.prune.ablation!r} is a check of pruning at init; "
                      "IRP does not take it: set it to 'none' (use the prune or sweep job).")
  if int(irp.rounds) < 1:
    raise ConfigError(f"config.irp.rounds={irp.rounds} must be >= 1.")
  if not 0.0 < float(irp.final_density) < 1.0:
    raise ConfigError(f"config.irp.final_density={irp.final_density} must be in (0, 1) "
                      "(0.01 keeps 1% of the prunable weights).")
  pruning.schedule(float(irp.final_density), int(irp.rounds), irp.schedule, "config.irp.schedule",
                   pruning.IRP_SCHEDULES)
  if int(irp.rewind_step) < 0:
    raise ConfigError(f"config.irp.rewind_step={irp.rewind_step} must be >= 0 (0 rewinds to theta_0).")
  if int(irp.checkpoint_every_steps) < 0 or int(irp.keep_checkpoints) < 1:
    raise ConfigError(f"config.irp.checkpoint_every_steps={irp.checkpoint_every_steps} must be >= 0 "
                      f"and config.irp.keep_checkpoints={irp.keep_checkpoints} >= 1.")


def initial_state(config, task, state):
  """IrpState of one seed from its freshly initialised TrainState (computes g_0)."""
  trainer = task.trainer
  data = PruneData(task.train_images, task.train_labels)
  model_state = pruning.model_state(trainer, state.batch_stats)
  g0 = initial_gradient(model_state, state.params, state.masks, data, keys.g0_key(state.key),
                        prune_spec.data_options_from_config(config))
  survived = jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.int32), state.masks)
  return IrpState(train=state, rewind_params=state.params, rewind_batch_stats=state.batch_stats,
                  init_params=state.params, g0=g0, survived=survived, seed_key=state.key)


def prune_and_rewind(config, task, irp, counts, round_index, start_step=0, with_finite=False):
  """One seed: prune to `counts` (nested), count survivors, rewind. Pure; jit/vmap it.

  The rewound network restarts at `start_step` (irp.rewind_step once the late
  rewinding point has been recorded, else 0). with_finite=True also returns
  [per prunable layer: the round's scores are finite].
  """
  trainer = task.trainer
  st = irp.train
  masks, scores = pruning.prune_round(
      prune_spec.from_config(config, sparsity=0.0), st.params, st.masks,
      pruning.model_state(trainer, st.batch_stats), PruneData(task.train_images, task.train_labels),
      keys.prune_key(irp.seed_key, round_index), counts, drop_zero_scores=bool(config.irp.prune_zero_scores))
  survived = jax.tree.map(lambda v, m: v + m.astype(jnp.int32) if m.ndim else v, irp.survived, masks)
  rewound = trainer.create_state(keys.irp_round_key(irp.seed_key, round_index), irp.rewind_params,
                                 irp.rewind_batch_stats, masks)
  rewound = rewound.replace(step=jnp.asarray(start_step, jnp.int32))
  out = irp.replace(train=rewound, survived=survived)
  return (out, pruning.finite_layers(scores, st.masks)) if with_finite else out


def irp_program_key(config):
  """What the IRP prune program reads of config beyond the task (tasks are shared: engine.build_task)."""
  return programs.program_key("irp_prune", spec=prune_spec.from_config(config, sparsity=0.0),
                              criterion=criteria.get(config.criterion),
                              prune_zero_scores=bool(config.irp.prune_zero_scores))


def first_step(irp):
  """The training step of seed 0 (all seeds are at the same step)."""
  return int(to_host(irp.train.step)[0])


def copy_tree(tree):
  """Fresh buffers: the training steps donate their input, which must alias nothing we keep."""
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def save(checkpoints, irp, progress):
  checkpoints.save(irp, dataclasses.asdict(progress))


def prune_level(config, task, irp, level, progress, checkpoints):
  """Prunes and rewinds every seed for `level` (nothing for the dense level); checkpoints."""
  seconds = 0.0
  if level.round is not None:
    t = time.time()
    restart = int(config.irp.rewind_step) if progress.rewind_captured else 0
    program = task.program(irp_program_key(config), lambda: jax.jit(jax.vmap(
        lambda s, c, r, k: prune_and_rewind(config, task, s, c, r, k, with_finite=True),
        in_axes=(0, None, None, None))))
    pruned, finite = jax.block_until_ready(program(irp, jnp.asarray(level.counts), level.round, restart))
    pruning.check_finite(config.criterion, to_host(finite), jax.tree.map(lambda m: m[0], irp.train.masks),
                         f"({level.tag}; the checkpoints before it are kept)")
    irp = pruned
    seconds = time.time() - t
  # Not checkpointed: a resumed run redoes this pruning from the level before (same bits),
  # which costs less than saving the whole state once more per round.
  progress = dataclasses.replace(progress, level=level.index, pruned=True, prune_seconds=seconds,
                                 level_seconds=0.0)
  return irp, progress


def train_level(config, task, workdir, irp, level, progress, checkpoints):
  """Trains `level` from where irp stands; checkpoints every irp.checkpoint_every_steps."""
  rewind_step = int(config.irp.rewind_step)
  every = int(config.irp.checkpoint_every_steps)
  spe = task.trainer.steps_per_epoch
  total = spe * int(config.train.epochs)
  loop = engine.TrainingLoop(config, task, workdir, tag=level.tag,
                             align=0 if progress.rewind_captured else rewind_step % spe,
                             networks=[f"seed_{s}" for s in engine.seed_list(config)], quiet=True)
  started, saved_at = time.time(), first_step(irp)
  for states, step in loop.chunks(copy_tree(irp.train), start_step=first_step(irp),
                                  epoch_sums=progress.epoch_sums):
    irp = irp.replace(train=states)
    if not progress.rewind_captured and step == rewind_step:
      # Late rewinding: later rounds restart from these weights at this step.
      irp = irp.replace(rewind_params=copy_tree(states.params),
                        rewind_batch_stats=copy_tree(states.batch_stats))
      progress = dataclasses.replace(progress, rewind_captured=True)
    if (loop.stopping or every and step - saved_at >= every and checkpoints.due(config)) and step < total:
      seconds = progress.level_seconds + time.time() - started
      sums = loop.epoch_sums_json() if step % spe else []
      save(checkpoints, irp, dataclasses.replace(progress, level_seconds=seconds, epoch_sums=sums))
      saved_at = step
  seconds = progress.level_seconds + time.time() - started + progress.prune_seconds
  return irp, progress, loop.last, seconds


def run(config, workdir_path):
  """The IRP job: levels with Orbax resume, then the score datasets and results.json."""
  workdir = Workdir(workdir_path, config)
  if (done := workdir.finished_results()) is not None:
    return done
  start = time.time()
  task = engine.build_task(config)
  spe, epochs = task.trainer.steps_per_epoch, int(config.train.epochs)
  rewind_step = int(config.irp.rewind_step)
  if rewind_step >= spe * epochs:
    raise ConfigError(f"config.irp.rewind_step={rewind_step} must be below the steps of one round "
                      f"({spe * epochs} = {epochs} epochs x {spe} steps).")
  ckpt_dir = os.path.join(workdir.path, "checkpoints")
  resuming = os.path.isdir(ckpt_dir) and any(os.scandir(ckpt_dir))
  workdir.start(resuming=resuming)
  checkpoints = Checkpoints(ckpt_dir, int(config.irp.keep_checkpoints))
  seeds = engine.seed_list(config)
  with criteria.precision_scope(config.criterion):
    g0_key = programs.program_key("irp_initial", data=prune_spec.data_options_from_config(config))
    initial = task.program(g0_key,
                           lambda: jax.jit(jax.vmap(lambda st: initial_state(config, task, st))))
    fresh = initial(engine.init_states(config, task))
    restored = checkpoints.restore_latest(fresh) if resuming else None
    if restored is None:
      irp, progress = fresh, Progress(rewind_captured=rewind_step == 0)
    else:
      irp, progress = restored[0], Progress(**restored[1])
      log(f"resuming from checkpoint: level {progress.level}, step {first_step(irp)}")
      workdir.log_metrics({"event": "resumed", "level": progress.level, "step": first_step(irp)})
    del fresh
    plan = levels(config, jax.tree.map(lambda m: m[0], irp.train.masks))
    rounds = [level for level in plan if level.round is not None]
    log(f"irp: {config.criterion} on {config.model}/{config.dataset}, {len(rounds)} rounds to density "
        f"{config.irp.final_density} ({config.irp.schedule}), seeds {seeds}, {epochs} epochs of {spe} steps "
        "per round" + (" after a dense training" if config.irp.train_first else ""))
    for level in plan[progress.level:]:
      if not progress.pruned:
        irp, progress = prune_level(config, task, irp, level, progress, checkpoints)
      reports = engine.density_reports(irp.train)
      if not plain_output():  # Sparse output: the round's one line below says it.
        log(f"{level.tag}: density {np.mean([x['density'] for x in reports]):.5f}"
            + (f" (target {level.density:.5f})" if level.round is not None else ""))
      engine.warn_empty_layers(reports, [f"seed {s}" for s in seeds], level.tag)
      irp, progress, last, seconds = train_level(config, task, workdir, irp, level, progress, checkpoints)
      record = {"round": level.round, "level": level.index,
                "density": [x["density"] for x in reports], "kept": [x["kept"] for x in reports],
                "target_density": level.density, "train_accuracy": last.get("train_accuracy"),
                "test_accuracy": last.get("test_accuracy"), "test_loss": last.get("test_loss"),
                "prune_seconds": progress.prune_seconds, "seconds": seconds,
                **cost_summary(mask_cost(task, irp.train, config))}  # What this round's masks cost.
      workdir.log_metrics(dict(record, event="round_done"))
      log(f"{level.tag} done: test {100 * np.mean(last['test_accuracy']):.2f}% at density "
          f"{record['density'][0]:.5f}, {seconds:.1f} s (level {level.index + 1}/{len(plan)}, "
          f"{time.time() - start:.0f} s so far in this run)")
      progress = dataclasses.replace(progress, level=level.index + 1, pruned=False,
                                     history=progress.history + [record], level_seconds=0.0,
                                     prune_seconds=0.0, epoch_sums=[])
      stopping = preemption.requested()
      if level.index + 1 == len(plan) or stopping or checkpoints.due(config):
        save(checkpoints, irp, progress)
      if stopping and level.index + 1 < len(plan):
        log(f"preempted: stopped after {level.tag} with its checkpoint; run the same command again to resume.")
        raise preemption.Preempted(first_step(irp))

  results = finish(config, workdir, irp, progress, rounds, seeds, time.time() - start)
  checkpoints.close()
  return results


def finish(config, workdir, irp, progress, rounds, seeds, seconds):
  """Exports one score dataset per seed and writes results.json (process 0 writes)."""
  irp = to_host(irp)  # Several processes: every process gets every seed's arrays.
  masks0 = jax.tree.map(lambda m: np.asarray(m[0]), irp.train.masks)  # Without the seed axis.
  names = [name for name, _ in masks_lib.prunable_items(masks0, masks0)]
  metadata = {"model": config.model, "dataset": config.dataset, "width": float(config.width),
              "criterion": config.criterion, "rounds": int(config.irp.rounds),
              "schedule": config.irp.schedule, "final_density": float(config.irp.final_density),
              "train_first": bool(config.irp.train_first), "rewind_step": int(config.irp.rewind_step),
              "epochs_per_round": int(config.train.epochs),
              "g0_reduction": config.prune.grad_reduction, "g0_batches": int(config.prune.num_batches),
              "g0_batch_size": int(config.prune.batch_size)}
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
      "seeds": seeds, "rounds": history, "target_densities": [level.density for level in rounds],
      "final_density": float(np.mean(last["density"])),
      "test_accuracy": float(np.mean(last["test_accuracy"])),
      "test_accuracy_seeds": engine.summarize(last["test_accuracy"]),
      "survival_histogram": histograms if len(seeds) > 1 else histograms[0],
      "score_dataset_dir": dirs if len(seeds) > 1 else dirs[0],
      "num_weights": int(sum(m.size for _, m in masks_lib.prunable_items(masks0, masks0))),
      "export_seconds": export_seconds, "wall_seconds_this_run": seconds,
      "g0_reduction": config.prune.grad_reduction,
  }
  workdir.write_results(results)
  log(f"irp done: final density {results['final_density']:.5f}, test accuracy "
      f"{100 * results['test_accuracy']:.2f}%; score dataset(s): {results['score_dataset_dir']}")
  return results
