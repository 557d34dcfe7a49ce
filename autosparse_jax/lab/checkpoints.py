"""Orbax checkpoints of a job's state: one pytree plus JSON progress, newest readable first.

Checkpoints are numbered in the order they are saved (the newest is the
highest); where a job stands (IRP level and step, scorer epoch) is in the JSON.

With several processes every process calls save/restore (Orbax writes each
array's shards from the process that holds them and the JSON from process 0).
"""
import os
import time

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from autosparse_jax.console import log


class Checkpoints:
  """Orbax CheckpointManager over a job's checkpoint directory: a state pytree + JSON progress."""

  def __init__(self, directory, keep):
    self.directory = directory
    self.saved_at = time.time()  # The last save (or the start): see due().
    self.manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                        enable_async_checkpointing=False))

  def save(self, state, meta):
    """Saves (state, meta) as the newest checkpoint; returns its number."""
    step = (self.manager.latest_step() or 0) + 1
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()
    self.saved_at = time.time()
    return step

  def due(self, config):
    """Whether a checkpoint at a regular point is worth its cost: config.checkpoint_min_seconds
    since the last one (a resumed run redoes the steps after it, bit for bit). Saves at
    preemption and at a job's end do not ask."""
    return time.time() - self.saved_at >= float(config.get("checkpoint_min_seconds", 0.0))

  def restore_latest(self, target):
    """(state, meta) of the newest checkpoint that reads back, or None.

    An unreadable (corrupted, truncated) checkpoint is reported and moved aside
    to <directory>.unreadable/ (kept, never deleted), and the next older one is
    tried. Interrupted saves never show up here: Orbax ignores unfinished
    temporary directories.
    """
    moved = False
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        if moved:
          self.manager.reload()
        return restored.state, restored.meta
      except Exception as e:  # noqa: BLE001  (any read failure: fall back to an older one)
        aside = os.path.join(self.directory + ".unreadable", f"{step}.{time.strftime('%Y%m%d-%H%M%S')}")
        if jax.process_index() == 0:  # Several processes share the directory: one moves it.
          os.makedirs(os.path.dirname(aside), exist_ok=True)
          os.replace(os.path.join(self.directory, str(step)), aside)
        if jax.process_count() > 1:
          multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
        moved = True
        log(f"warning: checkpoint {step} in {self.directory} cannot be read ({type(e).__name__}: "
            f"{str(e)[:300]}); moved it to {aside} and trying an older one.")
    if moved:
      self.manager.reload()
    return None

  def keep_latest_only(self):
    """Deletes every checkpoint but the newest (a finished job keeps its last one, not its history)."""
    for step in sorted(self.manager.all_steps())[:-1]:
      self.manager.delete(step)

  def close(self):
    self.manager.close()


class RunCheckpoints:
  """Mid-run checkpoints of one training run (a job's stacked networks): states + the step.

  Saved at epoch ends and every config.checkpoint_every_steps steps, but not more often than
  config.checkpoint_min_seconds apart (saves of tiny networks would cost more than redoing
  their steps), and always when the job is being preempted. Chunk boundaries sit at fixed
  positions, so a run resumed from any of them is bit-identical to an uninterrupted one.
  """

  def __init__(self, directory, config, keep=2):
    self.directory = directory
    self.every = int(config.get("checkpoint_every_steps", 0))
    self.min_seconds = float(config.get("checkpoint_min_seconds", 0.0))
    self.store = Checkpoints(directory, keep)
    self.last_step, self.last_time = None, time.time()

  def restore(self, target):
    """(states, step, meta) of the newest readable checkpoint, or None."""
    restored = self.store.restore_latest(target)
    if restored is None:
      return None
    states, meta = restored
    self.last_step = int(meta["step"])
    return states, int(meta["step"]), meta

  def due(self, step, steps_per_epoch):
    if time.time() - self.last_time < self.min_seconds:
      return False
    if step % steps_per_epoch == 0:
      return True
    return bool(self.every) and step - (self.last_step or 0) >= self.every

  def save(self, states, step, meta=None):
    self.store.save(states, dict(meta or {}, step=int(step)))
    self.last_step, self.last_time = int(step), time.time()

  def close(self):
    self.store.close()
