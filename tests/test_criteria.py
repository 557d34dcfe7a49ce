"""Criteria against independent computations: finite differences, explicit Hessians,
SynFlow's conservation law and its float32 underflow."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from autosparse_jax import criteria, masks as masks_lib, prune_spec, pruning
from autosparse_jax.criteria import paths, saliency, synflow
from autosparse_jax.criteria.base import ModelState, PruneData
from autosparse_jax.data import embedded
from autosparse_jax.data.specs import DatasetSpec
from autosparse_jax.models import get_model


def prune_cfg(**kw):
  """Every criterion's options (their records' defaults) with small pruning data, as one namespace."""
  base = {path.split(".", 1)[1]: field.default for path, (_, field) in criteria.option_fields().items()}
  base.update(batch_size=16, num_batches=2, grasp_samples_per_class=3, rounds=0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def prune_to(name, params, masks, state, data, cfg, density):
  """(masks, scores) of one network pruned at init to `density` through the pruning module."""
  spec = prune_spec.PruneSpec(name, density, rounds=int(cfg.rounds),
                              options=prune_spec.options_from_config({"prune": cfg}, name))
  masks_, scores, _ = pruning.prune_network(spec, params, masks, state, data, jax.random.PRNGKey(0), spec.plan(masks))
  return masks_, scores


def tiny_lenet(seed=0):
  spec, splits = embedded.synthetic(image_shape=(4, 4, 1), num_classes=10, num_train=64, num_test=8)
  model = get_model("lenet_300_100", 10, width=0.02)  # 16 -> 6 -> 2 -> 10
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 4, 4, 1)))["params"]
  data = PruneData(jnp.asarray(splits["train"][0]), jnp.asarray(splits["train"][1], jnp.int32))
  return model, spec, params, data


def numpy_lenet_loss(flat_params, shapes, x, y, temperature=1.0):
  """LeNet forward + mean cross-entropy written out in float64 numpy."""
  ws, i = [], 0
  for s in shapes:
    ws.append(flat_params[i:i + np.prod(s)].reshape(s))
    i += np.prod(s)
  (b0, k0, b1, k1, b2, k2) = ws  # Flax orders bias before kernel.
  h = np.maximum(x @ k0 + b0, 0)
  h = np.maximum(h @ k1 + b1, 0)
  z = (h @ k2 + b2) / temperature
  z = z - z.max(axis=1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
  return -logp[np.arange(len(y)), y].mean()


def test_snip_equals_finite_difference_saliency():
  model, spec, params, data = tiny_lenet()
  masks = masks_lib.init_masks(params)
  state = ModelState({}, model, spec)
  cfg = prune_cfg()
  key = jax.random.PRNGKey(7)
  scores = saliency.snip_scores(params, masks, state, data, key, cfg)
  batches = np.asarray(criteria.base.batch_indices(data, key, cfg))
  leaves = [np.asarray(l, np.float64) for l in jax.tree.leaves(params)]
  shapes = [l.shape for l in leaves]
  flat = np.concatenate([l.ravel() for l in leaves])
  images = (np.asarray(data.images, np.float64) / 255.0 - spec.mean[0]) / spec.std[0]

  def total_loss(f):
    return sum(numpy_lenet_loss(f, shapes, images[b].reshape(len(b), -1), np.asarray(data.labels)[b])
               for b in batches)

  offsets = np.cumsum([0] + [np.prod(s) for s in shapes])
  score_leaves = [np.asarray(l) for l in jax.tree.leaves(scores)]
  rng = np.random.default_rng(0)
  for leaf in (1, 3, 5):  # The three kernels.
    for j in rng.choice(np.prod(shapes[leaf]), 8, replace=False):
      i = offsets[leaf] + j
      h = 1e-6
      up, down = flat.copy(), flat.copy()
      up[i] += h
      down[i] -= h
      fd = (total_loss(up) - total_loss(down)) / (2 * h)
      np.testing.assert_allclose(score_leaves[leaf].ravel()[j], abs(flat[i] * fd), rtol=2e-3, atol=1e-7)


def test_grasp_hessian_gradient_product_equals_explicit_hessian():
  model, spec, params, data = tiny_lenet(1)
  masks = masks_lib.init_masks(params)
  masks = masks_lib.scores_to_masks(jax.tree.map(jnp.abs, params), masks, 0.7)
  state = ModelState({}, model, spec)
  batches = saliency.grasp_batches(data, jax.random.PRNGKey(3), prune_cfg(), 10)
  g, hg = saliency.hessian_gradient_product(state, params, masks, data, batches, 200.0)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  loss = lambda f: sum(criteria.base.loss_on(state, masks_lib.apply_masks(unravel(f), masks), data, b, 200.0)
                       for b in batches) / batches.shape[0]
  hessian = jax.hessian(loss)(flat)
  g_flat = jax.flatten_util.ravel_pytree(g)[0]
  # GraSP differentiates w.r.t. the prunable weights only (biases held fixed): H_ww g_w.
  prunable = jax.flatten_util.ravel_pytree(jax.tree.map(
      lambda p, m: jnp.full(p.shape, m.ndim > 0, p.dtype), params, masks))[0]
  np.testing.assert_allclose(prunable * jax.grad(loss)(flat), g_flat, rtol=1e-5, atol=1e-9)
  want = prunable * (hessian @ g_flat)
  got = jax.flatten_util.ravel_pytree(hg)[0]
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6 * float(jnp.max(jnp.abs(want))))
  # Scores: theta * Hg at masked theta; the pruned weights score 0.
  scores = saliency.grasp_scores(params, masks, state, data, jax.random.PRNGKey(3), prune_cfg())
  k = np.asarray(masks["Dense_0"]["kernel"])
  assert np.all(np.asarray(scores["Dense_0"]["kernel"])[~k] == 0)


def test_grasp_samples_are_class_balanced():
  labels = np.random.default_rng(0).permutation(np.arange(70) % 10).astype(np.int32)
  data = PruneData(jnp.zeros((70, 2, 2, 1), jnp.uint8), jnp.asarray(labels))
  batches = np.asarray(saliency.grasp_batches(data, jax.random.PRNGKey(0), prune_cfg(), 10))
  assert batches.shape == (2, 15) and len(set(batches.ravel().tolist())) == 30  # batch_size 16.
  assert np.bincount(labels[batches.ravel()], minlength=10).tolist() == [3] * 10


class LinearChain(nn.Module):
  """Dense layers without bias, ReLU between (inactive on SynFlow's positive inputs)."""
  widths: tuple = (5, 4, 3)
  scale: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train=False):
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    init = nn.initializers.variance_scaling(self.scale, "fan_in", "uniform")
    for i, w in enumerate(self.widths):
      x = nn.Dense(w, use_bias=False, kernel_init=init, dtype=self.dtype)(x)
      if i < len(self.widths) - 1:
        x = nn.relu(x)
    return x


def chain_state(model, shape=(2, 3, 1)):
  spec = DatasetSpec("chain", shape, model.widths[-1], (0.0,), (1.0,))
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape))["params"]
  return params, ModelState({}, model, spec)


def test_synflow_conserves_synaptic_saliency_layer_by_layer():
  params, state = chain_state(LinearChain())
  masks = masks_lib.init_masks(params)
  with jax.enable_x64(True):
    scores = synflow.synflow_scores(params, masks, state, None, None, None)
    sums = [float(jnp.sum(s)) for _, s in masks_lib.prunable_items(scores, masks)]
    total = float(jnp.sum(state.logits(jax.tree.map(lambda p: jnp.abs(p).astype(jnp.float64), params),
                                       jnp.ones((1, 2, 3, 1), jnp.float64), dtype=jnp.float64)))
  np.testing.assert_allclose(sums, [total] * 3, rtol=1e-12)


def test_synflow_float64_survives_where_float32_underflows():
  # 24 layers of width 4 with weights ~0.003: R ~ (4 * 0.003)^24 ~ 1e-46 underflows float32.
  model = LinearChain(widths=(4,) * 24, scale=3e-5)
  params, state = chain_state(model, (2, 2, 1))
  masks = masks_lib.init_masks(params)
  f32 = synflow.synflow_scores(params, masks, state, None, None, None, dtype=jnp.float32)
  assert all(float(jnp.max(s)) == 0.0 for _, s in masks_lib.prunable_items(f32, masks))
  with jax.enable_x64(True):
    f64 = synflow.synflow_scores(params, masks, state, None, None, None)
    assert all(float(jnp.min(s)) > 0.0 for _, s in masks_lib.prunable_items(f64, masks))
    new, _ = prune_to("synflow", params, masks, state, None, prune_cfg(), 0.3)
    report = masks_lib.density_report(new)
    assert report["kept"] == int(np.floor(0.3 * report["total"] + 0.5))
    metrics = paths.path_metrics(params, new, state)
  assert float(metrics["effective_paths"]) > 0  # Still connected end to end.
  assert report["empty_layers"] == []


def test_iterative_rounds_are_nested_and_end_at_the_target():
  model, spec, params, data = tiny_lenet()
  masks = masks_lib.init_masks(params)
  state = ModelState({}, model, spec)
  cfg = prune_cfg(rounds=5)
  new, scores = prune_to("snip", params, masks, state, data, cfg, 0.1)
  report = masks_lib.density_report(new)
  assert report["kept"] == int(np.floor(0.1 * report["total"] + 0.5))
  # The composite scores rank the final survivors first: top-k of them gives the same masks.
  again = masks_lib.scores_to_masks(scores, masks, 0.1)
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(prune_spec.schedule(0.1, 5, "exponential")[[0, -1]], [0.1 ** 0.2, 0.1])


def test_path_metrics_count_paths_of_a_known_mask():
  params, state = chain_state(LinearChain(widths=(3, 2)), (2, 1, 1))  # 2 -> 3 -> 2
  masks = masks_lib.init_masks(params)
  masks["Dense_0"]["kernel"] = jnp.asarray([[1, 0, 0], [1, 1, 0]], bool)  # in 0,1 -> hidden 0,1
  masks["Dense_1"]["kernel"] = jnp.asarray([[1, 0], [0, 0], [1, 1]], bool)  # hidden 2 is dead
  with jax.enable_x64(True):
    m = paths.path_metrics(params, masks, state)
  # Paths: in0->h0->o0, in1->h0->o0 (h1 has no output, h2 no input): 2 paths.
  assert float(m["effective_paths"]) == 2.0
  assert int(m["effective_params"]) == 3  # (0,0), (1,0) in layer 0; (0,0) in layer 1.
  assert int(m["effective_nodes"]) == 2  # h0 and o0.


@pytest.mark.slow
@pytest.mark.parametrize("name,classes", [("resnet18", 10), ("vgg19", 100)])
def test_synflow_full_size_at_999_keeps_exactly_k_with_no_underflow(name, classes):
  """Synaptic-Flow issue #12 setting: 100 rounds to 99.9% on full-size nets (minutes on CPU)."""
  model = get_model(name, classes)
  spec = DatasetSpec("cifar", (32, 32, 3), classes, (0.5,) * 3, (0.25,) * 3)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  params, stats = variables["params"], variables["batch_stats"]
  masks = masks_lib.init_masks(params)
  state = ModelState(stats, model, spec)
  with jax.enable_x64(True):
    new, _ = jax.jit(lambda p, m, s: prune_to("synflow", p, m, s, None, prune_cfg(), 0.001))(params, masks, state)
    last = synflow.synflow_scores(params, new, state, None, None, None)
    metrics = paths.path_metrics(params, new, state)
    positive = sum(int(jnp.sum(m & (s > 0))) for (_, s), (_, m) in
                   zip(masks_lib.prunable_items(last, new), masks_lib.prunable_items(new, new)))
  report = masks_lib.density_report(new)
  assert report["kept"] == int(np.floor(0.001 * report["total"] + 0.5))
  # A kept weight scores 0 in float64 only when it is on no input-output path (counted on the
  # all-ones network, which cannot underflow): none lost its score to underflow.
  assert positive == int(metrics["effective_params"]) > 0.5 * report["kept"]
  # Still connected end to end. Layers may collapse: on ResNet-18 at 99.9% SynFlow empties
  # three 1x1 shortcut convs (the identity path carries the flow); they are reported.
  assert float(metrics["effective_paths"]) > 0

