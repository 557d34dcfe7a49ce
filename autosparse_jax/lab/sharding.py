"""Where a job's arrays live on a ("seeds", "data") device mesh (config.mesh).

Every job's state carries a leading seed axis: it is sharded over "seeds" and
replicated over "data". Each training step gathers its batch from the training
set (replicated on every device) and constrains it to be split over "data", so
XLA's SPMD partitioner splits the per-example work and all-reduces the
gradients (BatchNorm statistics too: a mean over a sharded batch is a global
mean). Results equal single-device training up to the order of float sums.

With one device in the mesh there is no Layout (None): jobs run exactly the
unsharded programs of a single-device run.
"""
import dataclasses

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from autosparse_jax.errors import ConfigError

AXES = ("seeds", "data")


@dataclasses.dataclass(frozen=True)
class Layout:
  mesh: jax.sharding.Mesh

  @property
  def data_size(self):
    return self.mesh.shape["data"]

  @property
  def states(self):
    """The leading seed axis over "seeds", everything else replicated."""
    return NamedSharding(self.mesh, P("seeds"))

  @property
  def replicated(self):
    return NamedSharding(self.mesh, P())

  def constrain_batch(self, x):
    """Splits a per-seed batch [b, ...] over "data" (call inside vmap(spmd_axis_name="seeds"))."""
    if x.shape[0] % self.data_size:  # E.g. an eval batch of odd size: computed replicated.
      return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, P("data")))

  def put_replicated(self, tree):
    """Host arrays (the same on every process) -> global arrays replicated over the mesh."""
    return jax.device_put(tree, self.replicated)

  def put_states(self, tree):
    return jax.device_put(tree, self.states)

  def put_rows_sharded(self, x):
    """Host array (the same on every process) -> its rows split over all devices of the mesh.

    Each device (and process) stores only its block of rows; rows are padded with
    zeros to a multiple of the device count (never drawn: batches index the
    labelled rows only). Gathering a batch from it is a local masked gather and
    an all-reduce of the batch (XLA's SPMD gather), not a copy of the set.
    """
    n, d = x.shape[0], self.mesh.size
    shape = (-(-n // d) * d,) + x.shape[1:]

    def rows(index):
      start, stop, _ = index[0].indices(shape[0])
      out = np.zeros((stop - start,) + x.shape[1:], x.dtype)
      out[:max(0, min(stop, n) - start)] = x[start:min(stop, n)]
      return out
    return jax.make_array_from_callback(shape, NamedSharding(self.mesh, P(AXES)), rows)


def mesh_shape(config, device_count):
  """(seeds, data) of config.mesh for `device_count` devices, validated."""
  seeds, data = int(config.mesh.seeds), int(config.mesh.data)
  if seeds < 1:
    raise ConfigError(f"config.mesh.seeds={seeds} must be >= 1 (devices the seeds are spread over).")
  if data == -1:
    if device_count % seeds:
      raise ConfigError(f"config.mesh.seeds={seeds} must divide the {device_count} devices "
                        "(config.mesh.data=-1 takes the rest for data parallelism).")
    data = device_count // seeds
  if data < 1:
    raise ConfigError(f"config.mesh.data={data} must be >= 1 or -1 (all devices / config.mesh.seeds).")
  if seeds * data > device_count:
    raise ConfigError(f"config.mesh.seeds x config.mesh.data = {seeds} x {data} needs {seeds * data} "
                      f"devices; this run has {device_count}.")
  if jax.process_count() > 1 and seeds * data != device_count:
    raise ConfigError(f"config.mesh.seeds x config.mesh.data = {seeds} x {data} must use all "
                      f"{device_count} devices of the {jax.process_count()} processes "
                      "(set config.mesh.data=-1).")
  num_seeds, batch = int(config.num_seeds), int(config.train.batch_size)
  if num_seeds % seeds:
    raise ConfigError(f"config.num_seeds={num_seeds} must be a multiple of config.mesh.seeds={seeds} "
                      "(each seed group trains on its own devices).")
  if batch % data:
    raise ConfigError(f"config.train.batch_size={batch} must be divisible by the {data} devices of the "
                      f"data axis (config.mesh.data={config.mesh.data}, {device_count} devices): choose "
                      f"a batch size that is a multiple of {data} or set config.mesh.data.")
  return seeds, data


def layout_from_config(config):
  """The Layout of config.mesh over jax.devices() (all processes), or None for one device."""
  return layout_of(*mesh_shape(config, jax.device_count()))


def layout_of(seeds, data):
  """The Layout of a (seeds, data) mesh over jax.devices() (all processes), or None for one device."""
  if seeds * data == 1:
    return None
  # jax.devices() lists process 0's devices first: "data" (inner) stays within a host
  # when config.mesh.seeds spreads seed groups over hosts.
  devices = np.asarray(jax.devices()[:seeds * data]).reshape(seeds, data)
  return Layout(jax.sharding.Mesh(devices, AXES, axis_types=(AxisType.Auto,) * 2))


def single_device_layout():
  """The sharded code path on one device (benchmarks: what the sharding machinery costs)."""
  devices = np.asarray(jax.devices()[:1]).reshape(1, 1)
  return Layout(jax.sharding.Mesh(devices, AXES, axis_types=(AxisType.Auto,) * 2))
