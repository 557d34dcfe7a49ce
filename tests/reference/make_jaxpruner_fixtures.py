"""Writes tests/reference/jaxpruner__*.npz from google-research/jaxpruner's own updaters (run by hand).

jaxpruner's source is used unmodified, at commit f133ee50f31a03d0152b8b272edb534065152f5d
(github.com/google-research/jaxpruner, 2024-04-04). It needs chex and ml_collections, which the
project does not, and the JAX of its time (it calls jax.tree_map, removed in JAX 0.6, and maps trees whose masks
hold None against arrays, which newer JAX refuses), so it runs in a separate environment:

    python3 -m venv /work/venv-jaxpruner
    /work/venv-jaxpruner/bin/pip install jax==0.4.26 jaxlib==0.4.26 flax==0.8.2 optax==0.2.2 chex==0.1.86 \
        ml-collections "numpy<2"
    mkdir /tmp/jaxpruner-src && git -C <jaxpruner checkout> archive f133ee50f31a03d0152b8b272edb534065152f5d \
        jaxpruner | tar -x -C /tmp/jaxpruner-src
    PYTHONPATH=/tmp/jaxpruner-src /work/venv-jaxpruner/bin/python tests/reference/make_jaxpruner_fixtures.py

jax_threefry_partitionable is turned on (the default since JAX 0.5, the project's setting), so a PRNG
key draws the same numbers here as in the project's JAX; SET's draws are stored too.

Each fixture is a training run of a 2-layer dict MLP (w1 20x12, b1, w2 12x6, b2) with jaxpruner's
`updater.wrap_optax(optax.adam(0.01))` on fixed per-step gradients (random normal, stored), the
params masked before the first step and after every step by `updater.post_gradient_update`, as
jaxpruner's examples train. Stored: the inputs (params0, grads[t], the initial masks), the masks and
params after every step, and the schedule's values at every step (sparsity, drop fraction, whether
the step updates masks).
"""
import functools
import json
import os
import sys

import jax

jax.config.update("jax_threefry_partitionable", True)  # The default of the project's JAX (>= 0.5).

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import jaxpruner  # noqa: E402
from jaxpruner import sparsity_distributions, sparsity_schedules  # noqa: E402
from jaxpruner.algorithms import global_pruners, pruners, sparse_trainers  # noqa: E402

COMMIT = "f133ee50f31a03d0152b8b272edb534065152f5d"
HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = {"w1": (20, 12), "b1": (12,), "w2": (12, 6), "b2": (6,)}
STEPS = 14
LR = 0.01
SPARSITY = 0.8


def inputs():
  rng = np.random.default_rng(29)
  params = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
  grads = {k: rng.standard_normal((STEPS,) + s).astype(np.float32) for k, s in SHAPES.items()}
  return params, grads


def run(updater, params0, grads):
  """jaxpruner's wrap_optax(adam) for STEPS steps: masks and params after each step."""
  tx = updater.wrap_optax(optax.adam(LR))
  state = tx.init(params0)
  masks0 = state.masks
  params = updater.post_gradient_update(params0, state)  # Pruned weights 0 from the start.
  start = params
  step = jax.jit(tx.update)
  masks, after = [], []
  for t in range(STEPS):
    g = {k: jnp.asarray(v[t]) for k, v in grads.items()}
    updates, state = step(g, state, params)
    params = optax.apply_updates(params, updates)
    params = updater.post_gradient_update(params, state)
    masks.append({k: np.asarray(m) for k, m in state.masks.items() if m is not None})
    after.append({k: np.asarray(v) for k, v in params.items()})
  assert int(state.count) == STEPS
  return start, masks0, masks, after


def save(name, meta, start, masks0, masks, after, grads, extra):
  out = {"meta": np.array(json.dumps(meta))}
  for k in SHAPES:
    out[f"params0/{k}"] = np.asarray(start[k])
    out[f"grads/{k}"] = grads[k]
    out[f"params/{k}"] = np.stack([a[k] for a in after])
    if masks0.get(k) is not None:
      out[f"masks0/{k}"] = np.asarray(masks0[k]).astype(np.uint8)
      out[f"masks/{k}"] = np.stack([m[k] for m in masks]).astype(np.uint8)
  out.update(extra)
  path = os.path.join(HERE, f"jaxpruner__{name}.npz")
  np.savez_compressed(path, **out)
  print(path, os.path.getsize(path), "bytes")


def main():
  params0, grads = inputs()
  params0 = {k: jnp.asarray(v) for k, v in params0.items()}
  uniform = functools.partial(sparsity_distributions.uniform, sparsity=SPARSITY)
  steps = np.arange(STEPS + 2)
  base = {"jaxpruner_commit": COMMIT, "jax": jax.__version__, "optax": optax.__version__,
          "steps": STEPS, "lr": LR, "optimizer": "adam", "sparsity": SPARSITY}

  # GMP: magnitude pruning on jaxpruner's PolynomialSchedule (per layer: uniform; and global).
  gmp = dict(update_freq=2, update_start_step=2, update_end_step=10)
  scheduler = sparsity_schedules.PolynomialSchedule(**gmp)
  extra = {"sparsity_at_step": np.array([float(scheduler.get_sparsity_at_step(SPARSITY, int(t))) for t in steps],
                                        np.float32),
           "is_update_step": np.array([bool(scheduler.is_mask_update_iter(int(t))) for t in steps])}
  for name, updater in (
      ("gmp_layerwise", pruners.MagnitudePruning(scheduler=scheduler, sparsity_distribution_fn=uniform)),
      ("gmp_global", global_pruners.GlobalMagnitudePruning(scheduler=scheduler, sparsity=SPARSITY,
                                                           use_normalization=False))):
    start, masks0, masks, after = run(updater, params0, grads)
    distribution = "layerwise" if name.endswith("layerwise") else "global"
    meta = dict(base, updater=type(updater).__name__, schedule=dict(gmp, power=3), distribution=distribution)
    save(name, meta, start, masks0, masks, after, grads, extra)

  # SET and RigL: PeriodicSchedule, drop fraction 0.3 cosine-decayed to update_end_step (jaxpruner's api).
  dst = dict(update_freq=4, update_start_step=0, update_end_step=12)
  drop_fraction_fn = optax.cosine_decay_schedule(0.3, dst["update_end_step"])
  scheduler = sparsity_schedules.PeriodicSchedule(**dst)
  key = jax.random.PRNGKey(8)
  for name, cls in (("set", sparse_trainers.SET), ("rigl", sparse_trainers.RigL)):
    updater = cls(scheduler=scheduler, sparsity_distribution_fn=uniform, drop_fraction_fn=drop_fraction_fn,
                  rng_seed=key)
    start, masks0, masks, after = run(updater, params0, grads)
    is_update = np.array([bool(scheduler.is_mask_update_iter(int(t))) for t in steps])
    extra = {"drop_fraction_at_step": np.array([float(drop_fraction_fn(int(t))) for t in steps], np.float32),
             "is_update_step": is_update}
    if name == "set":  # The random growth scores SET drew at each update step (jaxpruner's own function).
      for t in np.flatnonzero(is_update[:STEPS]):
        draws = pruners.generate_random_scores(start, jax.random.fold_in(key, int(t)))
        for k in ("w1", "w2"):
          extra[f"draws/{t}/{k}"] = np.asarray(draws[k])
    meta = dict(base, updater=cls.__name__, schedule=dst, drop_fraction=0.3, drop_fraction_decay="cosine",
                rng_seed=[int(x) for x in np.asarray(key)], initial_masks="jaxpruner's random masks, uniform 0.8")
    save(name, meta, start, masks0, masks, after, grads, extra)


if __name__ == "__main__":
  sys.exit(main())
