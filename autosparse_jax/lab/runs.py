"""Pruning a task's networks and measuring their masks: the sequence the prune job and the sweep share.

  prune_states(spec, task, states)       every seed of stacked TrainStates pruned at init by spec,
                                         one jit(vmap) program per task and spec (host criteria:
                                         one seed at a time)
  pruned_networks(spec, task, states)    prune_states, then what every result row reports of the
                                         masks: density, NPB's path metrics, FLOPs and bytes
  start(config, workdir)                 the workdir checked, the task built: (workdir, task)
"""
import os
import time

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np

from autosparse_jax import compact_export, criteria, dynamic_sparsity, masks as masks_lib, programs, prune_spec, pruning, sparse_cost
from autosparse_jax.console import log
from autosparse_jax.criteria.base import PruneData
from autosparse_jax.criteria.paths import path_metrics
from autosparse_jax.lab import engine
from autosparse_jax.lab.distributed import to_host
from autosparse_jax.lab.workdir import Workdir


def start(config, workdir_path, resuming=False):
  """Checks the workdir, loads the data: (workdir, task); call after the job's validate.

  task is None when the workdir already holds this config's results.
  resuming=True: the job continues earlier partial output (see Workdir.start).
  """
  workdir = Workdir(workdir_path, config)
  if workdir.finished_results() is not None:
    return workdir, None
  task = engine.build_task(config)
  workdir.start(resuming=resuming)
  return workdir, task



def prune_states(spec, task, states, score_cache=None):
  """Every seed's network of stacked `states` pruned at init by `spec`: (states with the new masks, scores).

  Criteria see the network in eval mode and the whole training set as pruning data
  (spec.options says how much of it they use). Jittable criteria run as one jit(vmap)
  program per task and spec (keep counts are an argument: every density shares it);
  host criteria run one seed at a time. score_cache (a dict) keeps the scores of
  density-free host criteria for the next density of the same states.
  """
  one_seed = jax.tree.map(lambda m: m[0], states.masks)
  plan = spec.plan(one_seed)
  trainer = task.trainer
  if not spec.record.jittable:
    return _host_prune_states(spec, task, states, plan, score_cache)

  def prune_one(state, images, labels, plan):
    masks, scores, finite = pruning.prune_network(spec, state.params, state.masks,
                                                  pruning.model_state(trainer, state.batch_stats),
                                                  PruneData(images, labels), state.key, plan)
    return pruning.ablated_state(trainer, state, masks, spec), scores, finite

  key = programs.program_key("prune_states", spec=spec, criterion=spec.record)
  program = task.program(key, lambda: jax.jit(jax.vmap(prune_one, in_axes=(0, None, None, None))))
  with criteria.precision_scope(spec.criterion):
    pruned, scores, finite = program(states, task.train_images, task.train_labels, plan)
  pruning.check_finite(spec.criterion, to_host(finite), one_seed)
  return pruned, scores


def _host_prune_states(spec, task, states, plan, score_cache):
  trainer = task.trainer
  data = PruneData(task.train_images, task.train_labels)
  cacheable = score_cache is not None and spec.record.density_free
  if trainer.layout is not None:  # Per-seed host work: every process needs every seed.
    states = jax.device_put(states, trainer.layout.replicated)
  pruned, all_scores = [], []
  for i in range(jax.tree.leaves(states.params)[0].shape[0]):
    state = jax.tree.map(lambda x, i=i: x[i], states)
    cached = score_cache.get(i) if cacheable else None
    masks, scores = pruning.host_prune(spec, state.params, state.masks,
                                       pruning.model_state(trainer, state.batch_stats), data, state.key,
                                       plan[-1], scores=cached)
    pruning.check_finite(spec.criterion, pruning.finite_layers(scores, state.masks), state.masks,
                         f"(seed index {i})")
    if cacheable:
      score_cache[i] = scores
    pruned.append(pruning.ablated_state(trainer, state, masks, spec))
    all_scores.append(scores)
  stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
  return stack(pruned), stack(all_scores)


PATH_METRICS = ("effective_paths", "log10_paths", "effective_nodes", "effective_params")  # criteria/paths.py


def mask_metrics(task, states):
  """NPB's effective paths / nodes / params of every network's masks (float64)."""
  trainer = task.trainer

  def one(state):
    return path_metrics(state.params, state.masks, pruning.model_state(trainer, state.batch_stats))

  with jax.enable_x64(True):
    out = task.program(programs.program_key("path_metrics"), lambda: jax.jit(jax.vmap(one)))(states)
    return {k: np.asarray(v).tolist() for k, v in out.items()}


def mask_cost(task, states, train_batch, structure):
  """asj.cost of every network's masks, per example (FLOPs of one input): a list over the seed axis.

  The dense FLOPs (XLA's cost analysis) are computed once per task; the masked layers'
  multiply-adds are read from each network's jaxpr with its masks (sparse_cost.py).
  """
  trainer = task.trainer
  shape = (1,) + tuple(trainer.spec.image_shape)
  states = to_host(states)  # Several processes: every process gets every network.
  out = []
  for i in range(jax.tree.leaves(states.params)[0].shape[0]):
    state = jax.tree.map(lambda x, i=i: np.asarray(x[i]), states)
    model_state = pruning.model_state(trainer, state.batch_stats)
    apply_fn = lambda p, x, ms=model_state: ms.logits(p, x)
    def dense_flops(state=state, apply_fn=apply_fn):  # Once per task: the masks do not change it.
      return sparse_cost.cost(state.params, state.masks, apply_fn, shape)["inference_flops_dense"]
    dense = task.program(programs.program_key("dense_flops"), dense_flops)
    out.append(sparse_cost.cost(state.params, state.masks, apply_fn, shape, nm=structure if structure.nm() else None,
                                dense_flops=dense, train_batch=train_batch))
  return out


def cost_summary(costs):
  """The cost fields of a result row: FLOPs per example (mean over seeds) and bytes (seed 0's)."""
  mean = lambda k: float(np.mean([c[k] for c in costs]))
  return {"inference_flops": mean("inference_flops"), "inference_flops_dense": costs[0]["inference_flops_dense"],
          "training_flops": mean("training_flops"), "training_flops_dense": costs[0]["training_flops_dense"],
          "kept_macs": mean("kept_macs"), "bytes": costs[0]["bytes"]}


def measure(task, states, train_batch, structure, scoring_seconds=0.0, dense_layers=()):
  """What every result row reports of stacked networks' masks: one info dict per network (the density
  report as "report", NPB's path metrics, the masks' cost, the structure, the layers a structure's
  fallback left dense, the scoring time)."""
  reports, paths = engine.density_reports(states), mask_metrics(task, states)
  costs = mask_cost(task, states, train_batch, structure)
  return [{"report": reports[i], "scoring_seconds": scoring_seconds, "structure": str(structure),
           "dense_layers": list(dense_layers), **cost_summary([costs[i]]), **{k: v[i] for k, v in paths.items()}}
          for i in range(len(reports))]


def pruned_networks(spec, task, states, train_batch, score_cache=None):
  """Prunes stacked `states` by `spec` and measures their masks: (pruned states, one info dict per network).

  spec None: the dense networks as they are (the sweep's dense row, GMP from dense).
  """
  t = time.time()
  if spec is not None:
    states, _ = jax.block_until_ready(prune_states(spec, task, states, score_cache))
  structure = spec.structure if spec is not None else prune_spec.PruneSpec("random").structure
  # Layers structure_fallback='dense' left dense (the same for every seed: they depend on shapes only).
  dense = spec.dense_layers(jax.tree.map(lambda m: m[0], states.masks)) if spec is not None else []
  return states, measure(task, states, train_batch, structure, time.time() - t, dense)


def init_spec(spec):
  """The spec a network is pruned by at init: GMP's criterion prunes to its initial_sparsity; the other
  methods start at the spec's density."""
  record = spec.sparse_training
  if record.method == "gmp":
    return spec.with_density(1.0 - record.initial_sparsity)
  return spec


def training_flops(record, task, start_states, start_info, total_steps, train_batch):
  """Training FLOPs of each network's whole run (RigL's accounting, Evci et al. 2020 Appendix H: forward f,
  backward 2f): [{"training_flops_total", "training_flops_total_dense"}] over the stacked networks.

  static and SET 3 f_S per example and step; RigL (3 f_S dT + 2 f_S + f_D) / (dT + 1) on average (a dense
  gradient on its update steps); GMP the integral of f over its schedule (start_states: the masks it
  starts from). f_S, f_D: the sparse and dense inference FLOPs per example (start_info, runs.measure).
  """
  out = []
  for i, info in enumerate(start_info):
    f_sparse, f_dense = info["inference_flops"], info["inference_flops_dense"]
    dense_total = 3.0 * f_dense * train_batch * total_steps
    if record.method == "gmp":
      masks = jax.tree.map(lambda m, i=i: np.asarray(m[i]), to_host(start_states.masks))
      forward = dynamic_sparsity.gmp_forward_flops(record, masks, f_dense, layer_macs(task, start_states),
                                                    total_steps)
      total = dynamic_sparsity.training_flops_total(record, total_steps, forward_flops=forward, batch=train_batch)
    elif record.method == "rigl":
      total = dynamic_sparsity.training_flops_total(record, total_steps, f_sparse, f_dense, batch=train_batch)
    else:
      total = 3.0 * f_sparse * train_batch * total_steps
    out.append({"training_flops_total": float(total), "training_flops_total_dense": float(dense_total)})
  return out


def layer_macs(task, states):
  """Each prunable layer's dense multiply-adds per example, in tree order (sparse_cost.masked_macs)."""
  state = jax.tree.map(lambda x: np.asarray(x[0]), to_host(states))
  model_state = pruning.model_state(task.trainer, state.batch_stats)
  ones = jax.tree.map(lambda m: np.ones(np.shape(m), bool), state.masks)
  x = jnp.zeros((1,) + tuple(task.trainer.spec.image_shape), jnp.float32)
  table = sparse_cost.masked_macs(lambda p, x: model_state.logits(p, x), state.params, ones, x)["layers"]
  return [table.get(name, {"macs": 0.0})["macs"] for name, _ in masks_lib.prunable_items(state.masks, state.masks)]


def export_networks(fmt, structure, workdir, states, seeds, tag):
  """config.export (bitmask | nm | bcoo): each seed's trained weights under its masks, one file each,
  in WORKDIR/export/ (compact_export.py); returns their paths ([] when fmt is '')."""
  if not fmt or not workdir.is_writer:
    return []
  directory = os.path.join(workdir.path, "export")
  os.makedirs(directory, exist_ok=True)
  states = to_host(states)
  paths = []
  for i, seed in enumerate(seeds):
    path = os.path.join(directory, f"{tag.replace(':', '_')}_seed_{seed}.{fmt}.npz")
    compact_export.export(jax.tree.map(lambda x: np.asarray(x[i]), states.params),
                          jax.tree.map(lambda x: np.asarray(x[i]), states.masks), path, format=fmt,
                          structure=structure if fmt == "nm" else None)
    paths.append(path)
  return paths


def log_pruned(tag, info):
  seconds = info[0]["scoring_seconds"]
  log(f"{tag}: scored in {seconds:.1f} s (compilation included), density "
      f"{np.mean([i['report']['density'] for i in info]):.5f}, log10 paths "
      f"{np.mean([i['log10_paths'] for i in info]):.2f}"
      + (f"; left dense (structure_fallback='dense'): {', '.join(info[0]['dense_layers'])}"
         if info[0].get("dense_layers") else ""))


def initial_scores(config, seed, criteria_names=("snip", "grasp")):
  """(theta_0, {criterion: scores}) of `seed`'s initial network of a job's config, flat over prunable layers
  (paper Figure 1 compares them with the surviving score: figures.survival_figure)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.seed, config.num_seeds = int(seed), 1
  task = engine.build_task(config)
  states = engine.init_states(config, task)
  masks = jax.tree.map(lambda m: np.asarray(m[0]), states.masks)  # Without the seed axis.
  flat = lambda tree: np.concatenate([x.reshape(-1) for _, x in masks_lib.prunable_items(
      jax.tree.map(lambda v: np.asarray(v[0]), tree), masks)])
  scores = {name: flat(prune_states(prune_spec.from_config(config, name, density=0.5), task, states)[1])
            for name in criteria_names}
  return flat(states.params), scores
