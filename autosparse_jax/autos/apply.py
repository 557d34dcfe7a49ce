"""Applying a trained AutoS scorer to a network: features -> flat -> device shards -> score pytree.

In eval mode the scorer is a fixed pointwise function of each weight's
features, so the flattened weights of all prunable layers are padded, split
into equal shards over the devices, scored batch by batch on each device
(lax.map keeps memory at one batch), and cut back to the layers' shapes.
Two equivalent paths: `jax.pmap` (as the project asked) and `jax.shard_map`
under `jit` over a 1-D device mesh (pmap's successor). Networks larger than
`chunk_weights` are scored in host-side chunks so device memory stays bounded.
With several processes (jax.distributed), shard_map spreads the weights over
the devices of all processes and every process gets all scores back.
"""
import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from autosparse_jax import artefacts
from autosparse_jax.autos.scorer import BACKBONES, make_scorer
from autosparse_jax.errors import ConfigError
from autosparse_jax.masks import path_name
from autosparse_jax.programs import BoundedCache

FEATURES = ("theta0", "g0")
SCORER_JSON = "scorer.json"
SHARDINGS = ("shard_map", "pmap")


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedScorer:
  module: Any
  variables: Any        # {"params", "batch_stats"}
  features: tuple       # Names of the input columns, e.g. ("theta0", "g0").
  mean: np.ndarray      # Feature standardisation (training-split statistics).
  std: np.ndarray
  info: dict            # scorer.json
  directory: str = ""   # Where it was loaded from (its scorer_dir).

  def apply(self, variables, x):
    """Scores [b, F] raw features -> [b] (eval mode)."""
    x = (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)
    return self.module.apply(variables, x, train=False)


def feature_columns(names, theta0, g0):
  """[N, F] float32 from per-layer theta_0 / g_0 lists, columns in `names` order."""
  sources = {"theta0": theta0, "g0": g0}
  unknown = [n for n in names if n not in sources]
  if unknown:
    raise ConfigError(f"scorer features {unknown} are not known; available: {', '.join(FEATURES)}.")
  return np.stack([np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in sources[n]])
                   for n in names], axis=1)


def _padded(x, devices, batch_size):
  n = x.shape[0]
  per_device = -(-n // (devices * batch_size)) * batch_size
  out = np.zeros((devices * per_device, x.shape[1]), x.dtype)
  out[:n] = x
  return out.reshape(devices, per_device // batch_size, batch_size, x.shape[1])


def _build_program(scorer, kind, devices=None):
  """The compiled scoring program of `scorer` (cached: host chunks reuse it)."""
  body = lambda v, b: jax.lax.map(lambda xb: scorer.apply(v, xb), b)
  if kind == "unsharded":
    return jax.jit(body)
  if kind == "pmap":
    return jax.pmap(body, in_axes=(None, 0))
  mesh = Mesh(np.asarray(devices), ("weights",))
  # Devices of other processes: gather the scores onto every device (replicated) so each
  # process can read them all; on one process, leave the shards where they are.
  local = all(d.process_index == jax.process_index() for d in devices)
  out = NamedSharding(mesh, P("weights") if local else P())
  return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P(), P("weights")), out_specs=P("weights")),
                 in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("weights"))),
                 out_shardings=out)


# Compiled scoring programs, keyed by the scorer itself: programs.forget(scorer) and reset() reach them.
_PROGRAMS = BoundedCache(32, "autos scoring programs")


def _program(scorer, kind, devices=None):
  """The compiled scoring program of `scorer` (cached: host chunks reuse it)."""
  return _PROGRAMS.get((scorer, kind, devices), lambda: _build_program(scorer, kind, devices))


def score_unsharded(scorer, x, batch_size=4096):
  """Reference path: one device, batch by batch."""
  xs = _padded(x, 1, batch_size)[0]
  return np.asarray(_program(scorer, "unsharded")(scorer.variables, xs)).reshape(-1)[:x.shape[0]]


def score_pmap(scorer, x, batch_size=4096):
  out = _program(scorer, "pmap")(scorer.variables, _padded(x, jax.local_device_count(), batch_size))
  return np.asarray(out).reshape(-1)[:x.shape[0]]


def score_shard_map(scorer, x, batch_size=4096, devices=None):
  devices = tuple(devices if devices is not None else jax.devices())
  xs = _padded(x, len(devices), batch_size)
  xs = xs.reshape((-1,) + xs.shape[2:])  # [devices * steps, batch, F], split along axis 0.
  program = _program(scorer, "shard_map", devices)
  variables = scorer.variables
  if jax.process_count() > 1:  # Global arrays: each process puts its devices' slices.
    mesh = Mesh(np.asarray(devices), ("weights",))
    xs = jax.make_array_from_callback(xs.shape, NamedSharding(mesh, P("weights")), lambda i: xs[i])
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
  return np.asarray(program(variables, xs)).reshape(-1)[:x.shape[0]]


def score_features(scorer, x, batch_size=4096, chunk_weights=1 << 22, sharding="shard_map"):
  """Scores [N, F] features in host chunks of `chunk_weights`, sharded over all devices."""
  if sharding not in SHARDINGS:
    raise ConfigError(f"config.autos.sharding={sharding!r} is not known; use one of {', '.join(SHARDINGS)}.")
  if sharding == "pmap" and jax.process_count() > 1:
    raise ConfigError("config.autos.sharding='pmap' scores on this process's devices only; with "
                      f"{jax.process_count()} processes use 'shard_map' (all devices of all processes).")
  fn = score_shard_map if sharding == "shard_map" else score_pmap
  chunk = max(int(chunk_weights), batch_size)
  return np.concatenate([fn(scorer, x[i:i + chunk], batch_size) for i in range(0, x.shape[0], chunk)])


def save_scorer(directory, module_info, variables, mean, std):
  """scorer_dir: scorer.json (architecture, features, standardisation) + Orbax variables."""
  os.makedirs(directory, exist_ok=True)
  info = dict(module_info, mean=np.asarray(mean).tolist(), std=np.asarray(std).tolist())
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(os.path.abspath(directory), "variables"), variables, force=True)
  checkpointer.wait_until_finished()
  if jax.process_index() != 0:  # Several processes: Orbax saved the variables; process 0 writes the rest.
    return
  artefacts.write_json(os.path.join(directory, SCORER_JSON), info)


# What scorer.json must hold (this version writes all of them).
SCORER_FIELDS = {"backbone": str, "features": list, "width": (int, float), "mean": list, "std": list}
RETRAIN_FIX = ("Point config.autos.scorer_dir at the scorer_dir an autos_train job wrote (its results.json names "
               "it), or run that job again.")


def _variable_shapes(tree):
  return {path_name(p): tuple(getattr(x, "shape", ())) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def check_scorer_files(directory, info, target):
  """scorer.json and the saved variables must describe the same network: DamagedFile naming both."""
  path = os.path.join(directory, SCORER_JSON)
  variables_dir = os.path.join(os.path.abspath(directory), "variables")
  if info["backbone"] not in BACKBONES:
    raise artefacts.DamagedFile(f"{path} names backbone {info['backbone']!r}, which this version does not know "
                                f"(known: {', '.join(BACKBONES)}). {RETRAIN_FIX}")
  unknown = [f for f in info["features"] if f not in FEATURES]
  count = len(info["features"])
  if unknown or not count or len(info["mean"]) != count or len(info["std"]) != count:
    raise artefacts.DamagedFile(f"{path} lists features {info['features']} with {len(info['mean'])} means and "
                                f"{len(info['std'])} stds: one per known feature ({', '.join(FEATURES)}) is "
                                f"needed. {RETRAIN_FIX}")
  try:
    saved = ocp.StandardCheckpointer().metadata(variables_dir)
  except Exception as e:  # noqa: BLE001  (Orbax raises many types for a missing or damaged checkpoint)
    raise artefacts.DamagedFile(f"{variables_dir} cannot be read as the scorer's variables "
                                f"({type(e).__name__}: {' '.join(str(e).split())[:200]}). {RETRAIN_FIX}") from None
  saved = _variable_shapes(getattr(saved, "item_metadata", saved))
  wanted = _variable_shapes(target)
  if saved != wanted:
    only_saved = sorted(set(saved) - set(wanted))[:2]
    only_wanted = sorted(set(wanted) - set(saved))[:2]
    shapes = [f"{k}: {saved[k]} saved, {wanted[k]} expected" for k in sorted(set(saved) & set(wanted))
              if saved[k] != wanted[k]][:2]
    detail = "; ".join(filter(None, [f"only in variables/: {only_saved}" if only_saved else "",
                                     f"missing from variables/: {only_wanted}" if only_wanted else "",
                                     *shapes]))
    raise artefacts.DamagedFile(
        f"{path} (backbone {info['backbone']!r}, width {info['width']}, {len(info['features'])} features) and "
        f"{variables_dir} describe different networks ({detail}): the two files come from different "
        f"scorers. {RETRAIN_FIX}")


def load_scorer(directory, dtype=None):
  """The TrainedScorer saved in `directory` (config.autos.scorer_dir), checked before any compute."""
  path = os.path.join(directory or "", SCORER_JSON)
  if not directory or not os.path.exists(path):
    raise ConfigError(f"config.autos.scorer_dir={directory!r} holds no trained scorer ({SCORER_JSON} "
                      "missing): pass the scorer_dir from an autos_train job's results.json.")
  info = artefacts.read_json(path, RETRAIN_FIX, required=SCORER_FIELDS)
  module = make_scorer(info["backbone"] if info["backbone"] in BACKBONES else BACKBONES[0], len(info["features"]),
                       info["width"], dtype or jnp.dtype(info.get("dtype", "float32")))
  target = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                              jnp.zeros((2, len(info["features"]))), train=False))
  check_scorer_files(directory, info, target)
  variables = ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(directory), "variables"),
                                                 target)
  return TrainedScorer(module=module, variables=variables, features=tuple(info["features"]),
                       mean=np.asarray(info["mean"], np.float32), std=np.asarray(info["std"], np.float32),
                       info=info, directory=os.path.abspath(directory))
