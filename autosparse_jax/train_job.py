"""The `train` job: train one network (dense, or pruned at init), vmapped over seeds.

train_and_evaluate(config, workdir) -> results dict (also written to results.json).
The pieces (build_task, init_states, prune_states, run_training) are what the
other jobs reuse.
"""
import dataclasses
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import criteria, masks as masks_lib, sharding, train
from autosparse_jax.distributed import is_writer, to_host
from autosparse_jax.data import load_dataset, pipeline
from autosparse_jax.errors import ConfigError, NumericalError, unknown_name_message
from autosparse_jax.models import MODELS, get_model
from autosparse_jax.workdir import Workdir


def log(msg):
  if is_writer():  # One log for several processes (they compute the same).
    print(msg, flush=True)


@dataclasses.dataclass(frozen=True)
class Task:
  """Everything a job needs on device: trainer, data arrays, eval batches."""
  trainer: train.Trainer
  dataset: object
  train_images: jax.Array
  train_labels: jax.Array
  eval_arrays: tuple
  # Compiled programs reused by every training run and pruning call on this task
  # (IRP rounds, sweep grids): key -> jitted function.
  programs: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

  def program(self, key, make):
    if key not in self.programs:
      self.programs[key] = make()
    return self.programs[key]


def validate(config):
  """Checks shared by every job, before any compute."""
  if not 0.0 <= float(config.sparsity) < 1.0:
    raise ConfigError(f"config.sparsity={config.sparsity} must lie in [0, 1) "
                      "(the fraction of prunable weights removed; 0.9 keeps 10%).")
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
  if config.train.get("loop", "auto") not in train.LOOPS:
    raise ConfigError(unknown_name_message("config.train.loop", config.train.loop, train.LOOPS))
  if config.prune.distribution not in masks_lib.DISTRIBUTIONS:
    raise ConfigError(unknown_name_message("config.prune.distribution", config.prune.distribution,
                                           masks_lib.DISTRIBUTIONS))
  if config.criterion != criteria.NO_PRUNING:
    validate_criterion(config, config.criterion)  # An unknown name first, with "did you mean".
    if float(config.sparsity) == 0.0 and config.job not in ("irp", "sweep"):  # Their own fields.
      raise ConfigError(f"config.criterion={config.criterion!r} needs config.sparsity > 0 "
                        "(or set config.criterion='none' for a dense run).")


def validate_criterion(config, criterion, where="config.criterion"):
  """Criterion-specific inputs (scorer, IRP datasets), before any compute."""
  criteria.get_criterion(criterion, where)
  if criterion == "autos":  # Clear errors now, not after loading the data.
    from autosparse_jax.autos.apply import load_scorer
    from autosparse_jax.criteria.autos import check_features
    check_features(load_scorer(config.autos.scorer_dir), config)
  if criterion == "survival":
    from autosparse_jax.score_dataset import check_score_dataset
    if not config.survival.score_datasets:
      raise ConfigError(f"{where}='survival' needs config.survival.score_datasets: the "
                        "score_dataset_dir(s) of an IRP job on the same model and seeds.")
    for directory in config.survival.score_datasets:
      check_score_dataset(directory, "config.survival.score_datasets")
  if criterion in criteria.HOST_CRITERIA and int(config.prune.rounds) > 1:
    raise ConfigError(f"config.prune.rounds={config.prune.rounds} is not supported by "
                      f"{where}={criterion!r} (one-shot only): set it to 0.")


def build_task(config):
  """Loads the data onto the devices of config.mesh (every process reads the whole set).

  With a mesh, the test set and the labels are replicated on every device, and the
  training images too unless config.mesh.shard_train_set splits their rows over
  the devices. Either way a step's batch is drawn from the whole set by the
  (seed, epoch) permutation, so every process and device count sees the same
  batches as a one-device run.
  """
  layout = sharding.layout_from_config(config)
  dataset = load_dataset(config.dataset, config.data.data_dir, config.data.get("synthetic"))
  model = get_model(config.model, dataset.spec.num_classes, width=float(config.width))
  try:
    trainer = train.make_trainer(config, dataset.spec, len(dataset.train_images), model, layout)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  arrays = (dataset.train_images, dataset.train_labels) + pipeline.eval_batches(
      dataset.test_images, dataset.test_labels, int(config.data.eval_batch_size))
  if layout is None:
    arrays = tuple(jnp.asarray(a) for a in arrays)
  elif config.mesh.get("shard_train_set", False):
    arrays = (layout.put_rows_sharded(arrays[0]),) + layout.put_replicated(arrays[1:])
  else:
    arrays = layout.put_replicated(arrays)
  return Task(trainer, dataset, arrays[0], arrays[1], arrays[2:])


def consecutive_keys(first, count):
  return jnp.stack([train.seed_key(first + i) for i in range(count)])


def seed_keys(config):
  return consecutive_keys(int(config.seed), int(config.num_seeds))


def run_keys(config):
  """The keys of everything after theta_0 (data order, augmentation, pruning, IRP rounds).

  config.train_seed = -1 (default): the seed's own key. T >= 0: seed k's network
  is initialised from seed k but trained with the key of T + k (the same theta_0,
  another run: paper Table 9's same-init pairs).
  """
  train_seed = int(config.get("train_seed", -1))
  return seed_keys(config) if train_seed < 0 else consecutive_keys(train_seed, int(config.num_seeds))


def init_states(config, trainer):
  """Dense TrainStates with a leading seed axis (theta_0 drawn per seed)."""
  def create(init_key, run_key):
    params, batch_stats = trainer.init_variables(init_key)
    return trainer.create_state(run_key, params, batch_stats,
                                masks_lib.init_masks(params, config.prune.prunable))
  layout = trainer.layout
  out = {} if layout is None else {"out_shardings": layout.states}
  return jax.jit(jax.vmap(create), **out)(seed_keys(config), run_keys(config))


def pruner(config, task, criterion):
  """jit(vmap(prune one seed))(states, images, labels, plan) -> (states with new masks, scores).

  Call it inside criteria.precision_scope(criterion). Criteria see the network
  in eval mode and the whole training set as pruning data (config.prune says
  how much of it they use). The data and the keep counts (criteria.prune_plan)
  are arguments, so one compiled program serves every sparsity of a task.
  """
  trainer = task.trainer

  def prune_one(state, images, labels, plan):
    model_state = criteria.ModelState(state.batch_stats, trainer.model, trainer.spec)
    key = jax.random.fold_in(state.key, train.KEY_PRUNE)
    masks, scores = criteria.prune(criterion, state.params, state.masks, model_state,
                                   criteria.PruneData(images, labels), key, config.prune, plan=plan)
    return trainer.create_state(state.key, state.params, state.batch_stats, masks), scores

  key = ("prune", criterion, json.dumps(config.prune.to_dict(), sort_keys=True, default=str))
  return task.program(key, lambda: jax.jit(jax.vmap(prune_one, in_axes=(0, None, None, None))))


def prune_states(config, task, states, criterion, sparsity, score_cache=None):
  """Scores every seed's network with `criterion` and masks it to `sparsity`, vmapped.

  Returns (states with the new masks, scores). score_cache: see prune_on_host.
  """
  if criterion in criteria.HOST_CRITERIA:
    return prune_on_host(config, task, states, criterion, sparsity, score_cache)
  one_seed = jax.tree.map(lambda m: m[0], states.masks)
  plan = criteria.prune_plan(criterion, one_seed, config.prune, 1.0 - sparsity)
  with criteria.precision_scope(criterion):
    return pruner(config, task, criterion)(states, task.train_images, task.train_labels, plan)


def prune_on_host(config, task, states, criterion, sparsity, score_cache=None):
  """Host criteria (NPB's integer programmes): one seed at a time, then the exact top-k.

  score_cache (a dict) keeps the scores of criteria whose scores do not depend on
  the density (criteria.DENSITY_FREE) for the next sparsity of the same states.
  """
  trainer = task.trainer
  score_fn = criteria.HOST_CRITERIA[criterion]
  density = 1.0 - sparsity
  data = criteria.PruneData(task.train_images, task.train_labels)
  cacheable = score_cache is not None and criterion in criteria.DENSITY_FREE
  if trainer.layout is not None:  # Per-seed host work: every process needs every seed.
    states = jax.device_put(states, trainer.layout.replicated)
  pruned, all_scores = [], []
  for i in range(jax.tree.leaves(states.params)[0].shape[0]):
    state = jax.tree.map(lambda x, i=i: x[i], states)
    model_state = criteria.ModelState(state.batch_stats, trainer.model, trainer.spec)
    key = jax.random.fold_in(state.key, train.KEY_PRUNE)
    if cacheable and i in score_cache:
      scores = score_cache[i]
    else:
      scores = score_fn(config, state.params, state.masks, model_state, data, key, density)
      if cacheable:
        score_cache[i] = scores
    masks = masks_lib.scores_to_masks(scores, state.masks, density, "global",
                                      int(config.prune.min_per_layer))
    pruned.append(trainer.create_state(state.key, state.params, state.batch_stats, masks))
    all_scores.append(scores)
  stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
  return stack(pruned), stack(all_scores)


def density_reports(states):
  """One density report per seed (host numbers)."""
  masks = to_host(states.masks)
  num_seeds = jax.tree.leaves(masks)[0].shape[0]
  return [masks_lib.density_report(jax.tree.map(lambda m: m[i], masks)) for i in range(num_seeds)]


def _fmt_time(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"


def run_training(config, task, states, workdir, tag=None, start_step=0, after_chunk=None,
                 chunk_divides=0):
  """Trains `states` from `start_step` to config.train.epochs; logs each epoch.

  Steps run in chunks whose boundaries sit at fixed positions inside each epoch
  (multiples of the chunk length), so a run resumed at a chunk boundary runs
  exactly the programs an uninterrupted run would (bit-identical resume).
  after_chunk(states, step), if given, is called after every chunk (checkpoints)
  and returns the states to go on with. chunk_divides > 0: the chunk length is
  made to divide it (so that step is a chunk boundary). Returns (states, last
  epoch's metrics).
  """
  trainer = task.trainer
  spe = trainer.steps_per_epoch
  loop = train.resolve_loop(config.train.get("loop", "auto"), trainer, jax.default_backend())
  log_every = min(int(config.train.get("log_every_steps", 0)) or spe, spe)
  chunk = 1 if loop == "python" else log_every
  if chunk_divides:
    chunk = math.gcd(chunk, int(chunk_divides))
  evaluate = task.program("evaluate", lambda: train.jit_evaluate(trainer))
  if trainer.layout is not None:
    states = trainer.layout.put_states(states)
  epochs = int(config.train.epochs)
  total = epochs * spe
  start = time.time()
  record = {}
  step = int(start_step)
  while step < total:
    epoch = step // spe + 1
    epoch_start, first = time.time(), step
    sums = []
    while step < epoch * spe:
      pos = step % spe
      n = min(chunk - pos % chunk, spe - pos)
      step_fn = task.program(("train_steps", n, loop == "python"),
                             lambda n=n: train.jit_epoch(trainer, n, unroll=loop == "python"))
      states, metrics = step_fn(states, task.train_images, task.train_labels)
      sums.append(jax.tree.map(lambda m, n=n: m * n, metrics))
      before, step = step, step + n
      loss = np.asarray(metrics["loss"])
      if not np.all(np.isfinite(loss)):  # Before any checkpoint of this state.
        where = f"{tag}, " if tag else ""
        raise NumericalError(
            f"non-finite training loss {loss.tolist()} (per seed) in {where}epoch {epoch}, steps "
            f"{before + 1}-{step} of the round (step {step % spe or spe} of {spe} in the epoch). "
            "The job stopped; nothing from this state was saved, and checkpoints already in the "
            "workdir are kept. Lower config.train.lr or check the data.")
      if after_chunk is not None:
        states = after_chunk(states, step)
      if step < epoch * spe and (step % spe) // log_every > (before % spe) // log_every:
        rate = (time.time() - epoch_start) / (step - first)
        log(f"  {tag + ' ' if tag else ''}epoch {epoch} step {step % spe}/{spe}  "
            f"loss {float(np.mean(metrics['loss'])):.4f}  epoch left {_fmt_time(rate * (epoch * spe - step))}")
    done = step - first
    totals = jax.tree.map(lambda *xs: np.sum([np.asarray(x) for x in xs], axis=0) / done, *sums)
    train_loss, train_acc = totals["loss"], totals["accuracy"]
    ev = jax.tree.map(np.asarray, evaluate(states, *task.eval_arrays))
    elapsed = time.time() - start
    record = {"epoch": epoch, "step": step, "train_loss": train_loss.tolist(),
              "train_accuracy": train_acc.tolist(), "test_loss": ev["loss"].tolist(),
              "test_accuracy": ev["accuracy"].tolist(), "epoch_seconds": time.time() - epoch_start}
    if done < spe:
      record["steps_in_this_run"] = done  # Resumed mid-epoch: train metrics cover these steps.
    if tag:
      record["tag"] = tag
    workdir.log_metrics(record)
    left = elapsed / (step - start_step) * (total - step)
    log(f"{tag + ' ' if tag else ''}epoch {epoch}/{epochs}  loss {np.mean(train_loss):.4f}  "
        f"train {100 * np.mean(train_acc):.2f}%  test {100 * np.mean(ev['accuracy']):.2f}%  "
        f"{record['epoch_seconds']:.1f} s/epoch  left {_fmt_time(left)}")
  return states, record


def summarize(values):
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "std": float(values.std()), "per_seed": values.tolist()}


def seed_list(config):
  return [int(config.seed) + i for i in range(int(config.num_seeds))]


def start_job(config, workdir_path, resuming=False):
  """Validates the config, checks the workdir, loads the data: (workdir, task).

  task is None when the workdir already holds this config's results.
  resuming=True: the job continues earlier partial output (see Workdir.start).
  """
  validate(config)
  workdir = Workdir(workdir_path, config)
  if workdir.finished_results() is not None:
    return workdir, None
  task = build_task(config)
  workdir.start(resuming=resuming)
  return workdir, task


def train_and_evaluate(config, workdir_path):
  start = time.time()
  workdir, task = start_job(config, workdir_path)
  if task is None:
    return workdir.results()
  seeds = seed_list(config)
  log(f"train: {config.model} on {config.dataset} ({len(task.dataset.train_images)} train / "
      f"{len(task.dataset.test_images)} test), seeds {seeds}, {config.train.epochs} epochs of "
      f"{task.trainer.steps_per_epoch} steps")
  states = init_states(config, task.trainer)
  scoring_seconds = 0.0
  if config.criterion != criteria.NO_PRUNING:
    t = time.time()
    states, _ = jax.block_until_ready(prune_states(config, task, states, config.criterion,
                                                   float(config.sparsity)))
    scoring_seconds = time.time() - t
  reports = density_reports(states)
  for seed, report in zip(seeds, reports):
    if report["empty_layers"]:
      log(f"warning: seed {seed}: layers pruned to zero weights: {', '.join(report['empty_layers'])}")
  states, last = run_training(config, task, states, workdir)
  results = {
      "job": "train", "model": config.model, "dataset": config.dataset, "seeds": seeds,
      "criterion": config.criterion, "sparsity": float(config.sparsity),
      "test_accuracy": float(np.mean(last["test_accuracy"])),
      "test_accuracy_seeds": summarize(last["test_accuracy"]),
      "test_loss": float(np.mean(last["test_loss"])),
      "train_loss": float(np.mean(last["train_loss"])),
      "train_accuracy": float(np.mean(last["train_accuracy"])),
      "density": float(np.mean([r["density"] for r in reports])),
      "density_per_seed": [{k: r[k] for k in ("kept", "total", "density", "empty_layers")}
                           for r in reports],
      "layer_density": {n: float(np.mean([r["layers"][n]["density"] for r in reports]))
                        for n in reports[0]["layers"]},
      "scoring_seconds": scoring_seconds,
      "epochs": int(config.train.epochs), "wall_seconds": time.time() - start,
  }
  workdir.write_results(results)
  log(f"test accuracy {100 * results['test_accuracy']:.2f}% "
      f"(+- {100 * results['test_accuracy_seeds']['std']:.2f} over {len(seeds)} seeds); "
      f"results in {workdir.path}/results.json")
  return results
