"""Orbax checkpoints of a job's state: one pytree plus JSON progress, newest readable first."""
import orbax.checkpoint as ocp


def log(message):
  print(message, flush=True)


class Checkpoints:
  """Orbax CheckpointManager over workdir/checkpoints: IrpState + JSON progress."""

  def __init__(self, directory, keep):
    self.manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                        enable_async_checkpointing=False))

  def save(self, step, state, meta):
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  def restore_latest(self, target):
    """(state, meta) of the newest checkpoint that reads back, or None. Unreadable ones are reported."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        return restored.state, restored.meta
      except Exception as e:  # noqa: BLE001  (any read failure: fall back to an older one)
        log(f"warning: checkpoint {step} cannot be read ({type(e).__name__}: {e}); trying an older one.")
    return None

  def close(self):
    self.manager.close()
