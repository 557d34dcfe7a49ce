"""config.dtype=bfloat16: bf16 compute, float32 state, exact masks."""
import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax import training
from autosparse_jax.lab import engine
from autosparse_jax.lab.jobs import prune as prune_job
from autosparse_jax.lab import runs
from autosparse_jax import prune_spec
from tests.conftest import small_config


def _pruned_and_trained(dtype, steps=6):
  config = small_config(dtype=dtype)
  task = engine.build_task(config)
  states, _ = runs.prune_states(prune_spec.from_config(config, "snip", density=1.0 - 0.9), task, engine.init_states(config, task))
  masks = jax.tree.map(np.asarray, states.masks)
  states, _ = training.jit_epoch(task.trainer, steps)(states, task.train_images, task.train_labels)
  return task, masks, states


def test_bf16_training_keeps_float32_state_and_the_float32_masks():
  task32, masks32, s32 = _pruned_and_trained("float32")
  task16, masks16, s16 = _pruned_and_trained("bfloat16")
  assert task16.trainer.model.dtype == jnp.bfloat16
  # Pruning scores are computed in float32 whatever the compute dtype: the same masks, bit for bit.
  for a, b in zip(jax.tree.leaves(masks32), jax.tree.leaves(masks16)):
    np.testing.assert_array_equal(a, b)
  for leaf in jax.tree.leaves((s16.params, s16.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32, leaf.dtype
  params16, params32 = jax.tree.map(np.asarray, s16.params), jax.tree.map(np.asarray, s32.params)
  moved = 0.0
  for m, w16, w32 in zip(jax.tree.leaves(s16.masks), jax.tree.leaves(params16), jax.tree.leaves(params32)):
    m, w16, w32 = np.asarray(m)[0], w16[0], w32[0]
    if m.shape == w16.shape:  # A prunable leaf's mask (unprunable leaves have scalar masks).
      assert np.all(w16[~m] == 0.0)  # Pruned weights stay exactly zero.
    moved = max(moved, float(np.max(np.abs(w16 - w32))))
  # bf16 really is the compute dtype (the run differs from f32), and stays close to it.
  assert 0.0 < moved < 0.05


def test_bf16_conv_net_keeps_batchnorm_statistics_and_loss_in_float32():
  config = small_config(dtype="bfloat16", model="resnet18", width=1 / 16, **{
      "data.synthetic.image_shape": (8, 8, 3), "train.batch_size": 4})
  task = engine.build_task(config)
  trainer = task.trainer
  state = jax.eval_shape(lambda: jax.tree.map(lambda x: x[0], engine.init_states(config, task)))
  perm = jax.ShapeDtypeStruct((task.train_labels.shape[0],), jnp.int32)
  new_state, metrics = jax.eval_shape(trainer.train_step, state, task.train_images, task.train_labels, perm)
  floats = [x for x in jax.tree.leaves((new_state.params, new_state.opt_state, new_state.batch_stats))
            if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and all(x.dtype == jnp.float32 for x in floats)
  assert metrics["loss"].dtype == jnp.float32
  # The forward pass itself runs in bf16 (what the compute dtype means).
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  jaxpr = jax.make_jaxpr(lambda v, x: trainer.model.apply(v, x, train=False))(
      variables, jnp.zeros((2, 8, 8, 3), jnp.float32))
  conv_dtypes = {e.outvars[0].aval.dtype for e in jaxpr.jaxpr.eqns if e.primitive.name in
                 ("conv_general_dilated", "dot_general")}
  assert conv_dtypes == {jnp.dtype(jnp.bfloat16)}, conv_dtypes


def test_bf16_prune_job_prunes_to_the_exact_density(tmp_path):
  config = small_config(dtype="bfloat16", criterion="snip", sparsity=0.9)
  results = prune_job.run(config, str(tmp_path / "wd"))
  kept, total = results["density_per_seed"][0]["kept"], results["density_per_seed"][0]["total"]
  assert kept == round(0.1 * total) and np.isfinite(results["test_loss"])
