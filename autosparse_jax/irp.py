"""Iterative rewind pruning (IRP): LTH with `magnitude`, SNIP-iter with `snip`.

Round r = 0..N-1: score the current weights with config.criterion, prune to
the round's density (exact top-k among the survivors: masks are nested),
count the survivors, rewind them to theta_0 (or to the weights at step
irp.rewind_step of the first training, "late rewinding"), train with the
recipe. Round 0 prunes at initialisation (as the original code does);
irp.train_first=True trains the dense network first (standard LTH).

State between rounds is one pytree (IrpState, vmapped over seeds). The host
loop below checkpoints it with Orbax after every round and every
irp.checkpoint_every_steps steps, and resumes from the latest complete
checkpoint; `scanned_irp` runs a whole IRP as one lax.scan over rounds (the
same pure prune/rewind and train steps) when no checkpoints are needed inside.

Randomness per seed: theta_0 from the seed key; round r prunes with
fold_in(fold_in(key, KEY_PRUNE), r) (g_0 uses r = 0: SNIP-iter's first scores
are |theta_0 g_0|) and trains with data order / augmentation from
round_key(key, r), so rounds see different data orders.
"""
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import criteria, masks as masks_lib, train
from autosparse_jax.checkpoints import Checkpoints
from autosparse_jax.criteria.base import ModelState, PruneData, initial_gradient
from autosparse_jax.distributed import is_writer, to_host
from autosparse_jax.errors import ConfigError, unknown_name_message
from autosparse_jax.score_dataset import export_score_dataset, load_score_dataset
from autosparse_jax.train_job import (build_task, density_reports, init_states, log, run_training,
                                      seed_list, summarize, validate)
from autosparse_jax.workdir import Workdir

SCHEDULES = ("count", "geometric")
DENSE = -1  # Round index of the dense training that irp.train_first adds.


def irp_densities(final_density, rounds, schedule):
  """Density after each round: equal count per round, or geometric (never the original's 'pct' bug)."""
  i = np.arange(1, rounds + 1)
  if schedule == "count":
    return 1.0 - (1.0 - final_density) * i / rounds
  if schedule == "geometric":
    return final_density ** (i / rounds)
  raise ConfigError(unknown_name_message("config.irp.schedule", schedule, SCHEDULES))


@flax.struct.dataclass
class IrpState:
  train: train.TrainState
  rewind_params: Any       # Weights every round rewinds to (theta_0, or theta_k when late).
  rewind_batch_stats: Any
  init_params: Any         # theta_0 (the dataset's feature).
  g0: Any                  # Initial gradient on the pruning data (the dataset's feature).
  survived: Any            # int32 per prunable weight: rounds survived so far.
  seed_key: jax.Array


def round_key(seed_key, round_index):
  return jax.random.fold_in(seed_key, 1000 + round_index)


def prune_key(seed_key, round_index):
  return jax.random.fold_in(jax.random.fold_in(seed_key, train.KEY_PRUNE), round_index)


def initial_state(config, task, state):
  """IrpState of one seed from its freshly initialised TrainState (computes g_0)."""
  trainer = task.trainer
  data = PruneData(task.train_images, task.train_labels)
  model_state = ModelState(state.batch_stats, trainer.model, trainer.spec)
  g0 = initial_gradient(model_state, state.params, state.masks, data, prune_key(state.key, 0),
                        config.prune)
  survived = jax.tree.map(lambda m: jnp.zeros(m.shape, jnp.int32), state.masks)
  return IrpState(train=state, rewind_params=state.params, rewind_batch_stats=state.batch_stats,
                  init_params=state.params, g0=g0, survived=survived, seed_key=state.key)


def prune_and_rewind(config, task, irp, counts, round_index, start_step=0):
  """One seed: score, prune to `counts` (nested), count survivors, rewind. Pure; jit/vmap it.

  The rewound network restarts at `start_step` (irp.rewind_step once the late
  rewinding point has been recorded, else 0).
  """
  trainer = task.trainer
  st = irp.train
  model_state = ModelState(st.batch_stats, trainer.model, trainer.spec)
  data = PruneData(task.train_images, task.train_labels)
  score_fn = criteria.get_criterion(config.criterion)
  scores = score_fn(st.params, st.masks, model_state, data, prune_key(irp.seed_key, round_index),
                    config.prune)
  masks = masks_lib.masks_from_counts(scores, st.masks, counts, int(config.prune.min_per_layer))
  if config.irp.prune_zero_scores:  # The original's behaviour: zero scores go too (REFERENCE.md).
    masks = jax.tree.map(lambda m, s: m & (s != 0) if m.ndim else m, masks, scores)
  survived = jax.tree.map(lambda v, m: v + m.astype(jnp.int32) if m.ndim else v, irp.survived, masks)
  rewound = trainer.create_state(round_key(irp.seed_key, round_index), irp.rewind_params,
                                 irp.rewind_batch_stats, masks)
  rewound = rewound.replace(step=jnp.asarray(start_step, jnp.int32))
  return irp.replace(train=rewound, survived=survived)


def round_plan(config, masks_one_seed):
  """[(round index, density, keep counts)] for every pruning round."""
  densities = irp_densities(float(config.irp.final_density), int(config.irp.rounds), config.irp.schedule)
  dist = config.prune.distribution
  return [(r, float(d), np.asarray(masks_lib.keep_counts(masks_one_seed, float(d), dist)))
          for r, d in enumerate(densities)]


def scanned_irp(config, task):
  """jit(vmap(whole IRP as one lax.scan over rounds)) of initial IrpStates -> final IrpStates.

  Needs irp.rewind_step = 0 and train_first = False; the host loop (`run_irp`)
  is the same computation with checkpoints and logging.
  """
  trainer = task.trainer
  spe, epochs = trainer.steps_per_epoch, int(config.train.epochs)
  if int(config.irp.rewind_step) or config.irp.train_first:
    raise ConfigError("scanned_irp runs rewind_step=0, train_first=False IRPs; use run_irp.")

  def one_seed(irp, counts, rounds):
    def body(irp, xs):
      c, r = xs
      irp = prune_and_rewind(config, task, irp, c, r)

      def epoch(st, _):
        return trainer.train_steps(st, task.train_images, task.train_labels, spe)[0], None
      st, _ = jax.lax.scan(epoch, irp.train, None, length=epochs)
      return irp.replace(train=st), None
    return jax.lax.scan(body, irp, (counts, rounds))[0]

  return jax.jit(jax.vmap(one_seed, in_axes=(0, None, None)))


def validate_irp(config):
  validate(config)
  irp = config.irp
  if config.criterion == criteria.NO_PRUNING or config.criterion in criteria.HOST_CRITERIA:
    raise ConfigError(f"config.criterion={config.criterion!r} cannot drive IRP: use magnitude (LTH), "
                      "snip (SNIP-iter) or another of " + ", ".join(criteria.CRITERIA) + ".")
  if int(irp.rounds) < 1:
    raise ConfigError(f"config.irp.rounds={irp.rounds} must be >= 1.")
  if not 0.0 < float(irp.final_density) < 1.0:
    raise ConfigError(f"config.irp.final_density={irp.final_density} must be in (0, 1) "
                      "(0.01 keeps 1% of the prunable weights).")
  irp_densities(float(irp.final_density), int(irp.rounds), irp.schedule)
  if int(irp.rewind_step) < 0:
    raise ConfigError(f"config.irp.rewind_step={irp.rewind_step} must be >= 0 (0 rewinds to theta_0).")
  if int(irp.checkpoint_every_steps) < 0 or int(irp.keep_checkpoints) < 1:
    raise ConfigError(f"config.irp.checkpoint_every_steps={irp.checkpoint_every_steps} must be >= 0 "
                      f"and config.irp.keep_checkpoints={irp.keep_checkpoints} >= 1.")


def first_step(irp):
  """The training step of seed 0 (all seeds are at the same step)."""
  return int(to_host(irp.train.step)[0])


def copy_tree(tree):
  """Fresh buffers: the training steps donate their input, which must alias nothing we keep."""
  return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def run_irp(config, workdir_path):
  """The IRP job: rounds with Orbax resume, then the score datasets and results.json."""
  validate_irp(config)
  workdir = Workdir(workdir_path, config)
  if (done := workdir.finished_results()) is not None:
    return done
  start = time.time()
  task = build_task(config)
  trainer = task.trainer
  spe, epochs = trainer.steps_per_epoch, int(config.train.epochs)
  total_steps = spe * epochs
  rewind_step = int(config.irp.rewind_step)
  if rewind_step >= total_steps:
    raise ConfigError(f"config.irp.rewind_step={rewind_step} must be below the steps of one round "
                      f"({total_steps} = {epochs} epochs x {spe} steps).")
  ckpt_dir = os.path.join(workdir.path, "checkpoints")
  resuming = os.path.isdir(ckpt_dir) and any(os.scandir(ckpt_dir))
  workdir.start(resuming=resuming)
  checkpoints = Checkpoints(ckpt_dir, int(config.irp.keep_checkpoints))
  with criteria.precision_scope(config.criterion):
    fresh = jax.jit(jax.vmap(lambda st: initial_state(config, task, st)))(init_states(config, trainer))
    restored = checkpoints.restore_latest(fresh) if resuming else None
    if restored is None:
      irp, meta = fresh, {"stage": 0, "pruned": False, "history": [],
                          "rewind_captured": rewind_step == 0}
    else:
      irp, meta = restored
      log(f"resuming from checkpoint: stage {meta['stage']}, step {first_step(irp)}")
      workdir.log_metrics({"event": "resumed", "stage": meta["stage"],
                           "step": first_step(irp)})
    del fresh
    plan = round_plan(config, jax.tree.map(lambda m: m[0], irp.train.masks))
    stages = ([DENSE] if config.irp.train_first else []) + [r for r, _, _ in plan]
    prune_fn = jax.jit(jax.vmap(lambda s, c, r, k: prune_and_rewind(config, task, s, c, r, k),
                                in_axes=(0, None, None, None)))
    ckpt_id = lambda stage, step=None: stage * (total_steps + 2) + (0 if step is None else 1 + step)
    every = int(config.irp.checkpoint_every_steps)
    seeds = seed_list(config)
    log(f"irp: {config.criterion} on {config.model}/{config.dataset}, {len(plan)} rounds to density "
        f"{config.irp.final_density} ({config.irp.schedule}), seeds {seeds}, {epochs} epochs of {spe} steps "
        "per round" + (" after a dense training" if config.irp.train_first else ""))

    for stage in range(int(meta["stage"]), len(stages)):
      r = stages[stage]
      tag = "dense" if r == DENSE else f"round {r}"
      if not meta["pruned"]:
        prune_seconds = 0.0
        if r != DENSE:
          t = time.time()
          restart = rewind_step if meta["rewind_captured"] else 0
          irp = jax.block_until_ready(prune_fn(irp, jnp.asarray(plan[r][2]), r, restart))
          prune_seconds = time.time() - t
        meta = dict(meta, stage=stage, pruned=True, prune_seconds=prune_seconds, stage_seconds=0.0)
        checkpoints.save(ckpt_id(stage, first_step(irp)), irp, meta)
      reports = density_reports(irp.train)
      log(f"{tag}: density {np.mean([x['density'] for x in reports]):.5f}"
          + (f" (target {plan[r][1]:.5f})" if r != DENSE else ""))
      for seed, report in zip(seed_list(config), reports):
        if report["empty_layers"]:
          log(f"warning: {tag}, seed {seed}: layers pruned to zero weights: "
              f"{', '.join(report['empty_layers'])} (config.prune.min_per_layer keeps some)")
      holder = {"irp": irp, "meta": meta, "saved_at": first_step(irp),
                "elapsed": float(meta.get("stage_seconds", 0.0)), "t0": time.time()}

      def after_chunk(states, step, holder=holder, stage=stage):
        h = holder
        h["irp"] = h["irp"].replace(train=states)
        if not h["meta"]["rewind_captured"] and step == rewind_step:
          # Late rewinding: later rounds restart from these weights at this step.
          h["irp"] = h["irp"].replace(rewind_params=copy_tree(states.params),
                                      rewind_batch_stats=copy_tree(states.batch_stats))
          h["meta"] = dict(h["meta"], rewind_captured=True)
        if every and step - h["saved_at"] >= every and step < total_steps:
          h["meta"] = dict(h["meta"], stage_seconds=h["elapsed"] + time.time() - h["t0"])
          checkpoints.save(ckpt_id(stage, step), h["irp"], h["meta"])
          h["saved_at"] = step
        return states

      divides = rewind_step % spe if not meta["rewind_captured"] else 0
      states, last = run_training(config, task, copy_tree(irp.train), workdir, tag=tag,
                                  start_step=first_step(irp),
                                  after_chunk=after_chunk, chunk_divides=divides)
      irp, meta = holder["irp"].replace(train=states), holder["meta"]
      seconds = holder["elapsed"] + time.time() - holder["t0"] + float(meta.get("prune_seconds", 0.0))
      record = {"round": r, "stage": stage, "density": [x["density"] for x in reports],
                "kept": [x["kept"] for x in reports], "target_density": None if r == DENSE else plan[r][1],
                "train_accuracy": last.get("train_accuracy"), "test_accuracy": last.get("test_accuracy"),
                "test_loss": last.get("test_loss"), "prune_seconds": float(meta.get("prune_seconds", 0.0)),
                "seconds": seconds}
      workdir.log_metrics(dict(record, event="round_done"))
      log(f"{tag} done: test {100 * np.mean(last['test_accuracy']):.2f}% at density "
          f"{record['density'][0]:.5f}, {seconds:.1f} s (stage {stage + 1}/{len(stages)}, "
          f"{time.time() - start:.0f} s so far in this run)")
      meta = dict(meta, stage=stage + 1, pruned=False, history=meta["history"] + [record],
                  stage_seconds=0.0, prune_seconds=0.0)
      checkpoints.save(ckpt_id(stage + 1), irp, meta)

  results = finish(config, workdir, irp, meta, plan, seeds, time.time() - start)
  checkpoints.close()
  return results


def finish(config, workdir, irp, meta, plan, seeds, seconds):
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
  history = meta["history"]
  last = history[-1]
  results = {
      "job": "irp", "model": config.model, "dataset": config.dataset, "criterion": config.criterion,
      "seeds": seeds, "rounds": history, "target_densities": [d for _, d, _ in plan],
      "final_density": float(np.mean(last["density"])),
      "test_accuracy": float(np.mean(last["test_accuracy"])),
      "test_accuracy_seeds": summarize(last["test_accuracy"]),
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
