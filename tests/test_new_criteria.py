"""New criteria (criteria/pathkernel, ntk_sap, prospr, force, fisher) and the GraSP fix,
each against an independent computation on a tiny network."""
import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np

from autosparse_jax import criteria, masks as masks_lib
from autosparse_jax.criteria import fisher, force, ntk_sap, pathkernel, prospr, saliency
from autosparse_jax.criteria.base import ModelState, PruneData, batch_indices, loss_on
from autosparse_jax.data import batching, embedded
from autosparse_jax.data.specs import DatasetSpec


def prune_cfg(**kw):
  """Every criterion's options (their records' defaults) with small pruning data, as one namespace."""
  base = {path.split(".", 1)[1]: field.default for path, (_, field) in criteria.option_fields().items()}
  base.update(batch_size=16, num_batches=2, grasp_samples_per_class=3, rounds=0)
  base.update(kw)
  return ml_collections.ConfigDict(base)


class MLP(nn.Module):
  """Dense layers with biases and ReLU; the last one is named 'head'."""
  widths: tuple = (6, 10)
  use_bias: bool = True
  act: bool = True
  dtype: jnp.dtype = None

  @nn.compact
  def __call__(self, x, train=False):
    x = x.reshape((x.shape[0], -1))
    for i, w in enumerate(self.widths[:-1]):
      x = nn.Dense(w, use_bias=self.use_bias, dtype=self.dtype, name=f"hidden{i}")(x)
      if self.act:
        x = nn.relu(x)
    return nn.Dense(self.widths[-1], use_bias=self.use_bias, dtype=self.dtype, name="head")(x)


class ConvBN(nn.Module):
  """Conv 3x3 -> BatchNorm -> ReLU -> Dense head."""
  classes: int = 10

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(3, (3, 3), name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x)
    x = nn.relu(x)
    return nn.Dense(self.classes, name="head")(x.reshape((x.shape[0], -1)))


def setup(model, classes=10, shape=(4, 4, 1), num_train=64, seed=0, dtype=jnp.float32):
  spec, splits = embedded.synthetic(image_shape=shape, num_classes=classes, num_train=num_train,
                                    num_test=4)
  variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1,) + shape))
  params = jax.tree.map(lambda p: p.astype(dtype), variables["params"])
  data = PruneData(jnp.asarray(splits["train"][0]), jnp.asarray(splits["train"][1], jnp.int32))
  return params, ModelState(variables.get("batch_stats", {}), model, spec), data


def random_mask(params, density, seed):
  masks = masks_lib.init_masks(params)
  scores = jax.tree.map(lambda p: jax.random.uniform(jax.random.PRNGKey(seed), p.shape), params)
  return masks_lib.scores_to_masks(scores, masks, density)


def prunable_flat(tree, masks):
  return jnp.concatenate([x.reshape(-1) for _, x in masks_lib.prunable_items(tree, masks)])


# ---------------------------------------------------------------- GraSP (item 1)

def _grasp_against_explicit_hessian(params, state, data, masks, score_fn):
  """score_fn's scores against theta * (H_ww g_w) from jax.hessian on the flat prunable weights."""
  cfg = prune_cfg()
  key = jax.random.PRNGKey(3)
  scores = jax.jit(lambda p: score_fn(p, masks, state, data, key, cfg))(params)
  batches = saliency.grasp_batches(data, key, cfg, 10)
  leaves, tree = jax.tree.flatten(params)
  mask_leaves = jax.tree.leaves(masks)
  sizes = [p.size for p, m in zip(leaves, mask_leaves) if m.ndim > 0]

  def merge(w):  # Prunable weights from the flat vector w, the rest (biases, BN) fixed.
    pieces = iter(jnp.split(w, np.cumsum(sizes)[:-1]))
    return jax.tree.unflatten(tree, [next(pieces).reshape(p.shape) if m.ndim > 0 else p
                                     for p, m in zip(leaves, mask_leaves)])

  loss = lambda w: sum(loss_on(state, masks_lib.apply_masks(merge(w), masks), data, b, 200.0)
                       for b in batches) / batches.shape[0]
  w0 = prunable_flat(params, masks)
  want_g, hessian = jax.jit(lambda w: (jax.grad(loss)(w), jax.hessian(loss)(w)))(w0)
  want = hessian @ want_g
  theta = prunable_flat(masks_lib.apply_masks(params, masks), masks)
  got = prunable_flat(scores, masks)
  expect = theta * want if score_fn is saliency.grasp_scores else jnp.abs(theta * want)
  np.testing.assert_allclose(got, expect, rtol=1e-3, atol=1e-4 * float(jnp.max(jnp.abs(expect))))
  assert np.all(np.asarray(got)[np.asarray(theta) == 0] == 0)  # Pruned weights score 0.
  # The old all-params product H_ww g_w + H_wb g_b (tangent = the full gradient) differs.
  full = jax.grad(lambda p: sum(loss_on(state, masks_lib.apply_masks(p, masks), data, b, 200.0)
                                for b in batches) / batches.shape[0])
  old = prunable_flat(jax.jit(lambda p: jax.jvp(full, (p,), (full(p),))[1])(params), masks)
  rel = float(jnp.linalg.norm(old - want) / jnp.linalg.norm(want))
  assert rel > 0.05, rel


def test_grasp_abs_is_the_hessian_of_the_prunable_weights_mlp_with_biases():
  params, state, data = setup(MLP((6, 10)))
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(5), p.shape), params)
  masks = random_mask(params, 0.7, 1)
  _grasp_against_explicit_hessian(params, state, data, masks, saliency.grasp_abs_scores)


def test_grasp_is_the_hessian_of_the_prunable_weights_conv_batchnorm_eval():
  params, state, data = setup(ConvBN())
  k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(11), 4)
  params["bn"] = {"scale": 1.0 + 0.5 * jax.random.normal(k1, (3,)),
                  "bias": 0.5 * jax.random.normal(k2, (3,))}
  params["conv"]["bias"] = 0.3 * jax.random.normal(k4, (3,))
  stats = {"bn": {"mean": 0.3 * jax.random.normal(k3, (3,)),
                  "var": jax.random.uniform(k4, (3,), minval=0.5, maxval=2.0)}}
  state = state.replace(batch_stats=stats)
  masks = masks_lib.init_masks(params)
  _grasp_against_explicit_hessian(params, state, data, masks, saliency.grasp_scores)


def test_grasp_random_sampling_draws_distinct_examples():
  labels = np.random.default_rng(0).permutation(np.arange(70) % 10).astype(np.int32)
  data = PruneData(jnp.zeros((70, 2, 2, 1), jnp.uint8), jnp.asarray(labels))
  batches = np.asarray(saliency.grasp_batches(data, jax.random.PRNGKey(0),
                                              prune_cfg(grasp_sampling="random"), 10))
  assert batches.shape == (2, 15) and len(set(batches.ravel().tolist())) == 30


# ---------------------------------------------------------------- SynFlow-L2

def test_synflow_l2_conserves_per_layer_and_equals_the_path_sum():
  with jax.enable_x64(True):
    model = MLP((5, 4, 3), use_bias=False)  # ReLU inactive on positive inputs.
    params, state, _ = setup(model, classes=3, shape=(2, 3, 1), dtype=jnp.float64)
    masks = masks_lib.init_masks(params)
    scores = jax.jit(lambda p: pathkernel.synflow_l2_scores(p, masks, state, None, None, None))(params)
    sums = [float(jnp.sum(s)) for _, s in masks_lib.prunable_items(scores, masks)]
    sq = jax.tree.map(jnp.square, params)
    total = float(jnp.sum(state.logits(sq, jnp.ones((1, 2, 3, 1)))))
    np.testing.assert_allclose(sums, [total] * 3, rtol=1e-12)

    model = MLP((4, 3), use_bias=False)  # Two layers: direct path sums.
    params, state, _ = setup(model, classes=3, shape=(5, 1, 1), dtype=jnp.float64)
    masks = random_mask(params, 0.6, 2)
    scores = pathkernel.synflow_l2_scores(params, masks, state, None, None, None)
  w1 = np.asarray(params["hidden0"]["kernel"]) * np.asarray(masks["hidden0"]["kernel"])
  w2 = np.asarray(params["head"]["kernel"]) * np.asarray(masks["head"]["kernel"])
  # R = sum_{i,h,k} w1[i,h]^2 w2[h,k]^2; score = w^2 * (sum of the other factor over its paths).
  np.testing.assert_allclose(scores["hidden0"]["kernel"], w1 ** 2 * (w2 ** 2).sum(1)[None, :], rtol=1e-12)
  np.testing.assert_allclose(scores["head"]["kernel"], w2 ** 2 * (w1 ** 2).sum(0)[:, None], rtol=1e-12)


# ---------------------------------------------------------------- NTK-SAP

def test_ntk_sap_finite_difference_trace_matches_jacobian_trace():
  with jax.enable_x64(True):
    params, state, _ = setup(MLP((5, 3)), classes=3, shape=(3, 2, 1), dtype=jnp.float64)
    masks = random_mask(params, 0.7, 3)
    mf = jax.tree.map(lambda m, p: m.astype(p.dtype), masks, params)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 2, 1), jnp.float64)
    eps, draws = 0.01, 2000
    est = jax.jit(jax.vmap(lambda k: ntk_sap.fd_trace(state, params, mf, x,
                                              ntk_sap.perturbation(k, params, masks, eps))))(
        jax.random.split(jax.random.PRNGKey(2), draws)) / eps ** 2
    # Explicit: the Jacobian of f(x; theta * m) w.r.t. the prunable weights theta.
    leaves, tree = jax.tree.flatten(params)
    mleaves = jax.tree.leaves(masks)

    def f(w):
      pieces = iter(jnp.split(w, np.cumsum([p.size for p, m in zip(leaves, mleaves) if m.ndim])[:-1]))
      p = jax.tree.unflatten(tree, [next(pieces).reshape(q.shape) if m.ndim else q
                                    for q, m in zip(leaves, mleaves)])
      return state.logits(masks_lib.apply_masks(p, masks), x).reshape(-1)

    jac = jax.jit(jax.jacrev(f))(prunable_flat(params, masks))
    trace = float(jnp.sum(jnp.square(jac)))
    a = jac.T @ jac  # E = tr(A), Var[delta^T A delta] = 2 tr(A^2) for delta ~ N(0, I).
    sem = float(jnp.sqrt(2 * jnp.sum(a * a) / draws)) / trace
    mean = float(jnp.mean(est))
  assert abs(mean / trace - 1) < max(4 * sem, 1e-3), (mean, trace, sem)  # 4 standard errors.
  # The criterion itself: finite scores, zero on pruned weights.
  scores = jax.jit(lambda p: ntk_sap.ntk_sap_scores(p, masks, state, None, jax.random.PRNGKey(0),
                                                    prune_cfg(ntk_sap_samples_per_class=2)))(params)
  k = np.asarray(masks["hidden0"]["kernel"])
  s = np.asarray(scores["hidden0"]["kernel"])
  assert np.all(s[~k] == 0) and np.all(np.isfinite(s)) and np.any(s[k] > 0)


# ---------------------------------------------------------------- ProsPr

def test_prospr_meta_gradient_equals_central_differences_of_the_unrolled_loss():
  cfg = prune_cfg(prospr_batch_size=16, prospr_inner_steps=3, prospr_inner_lr=0.5)
  key = jax.random.PRNGKey(4)
  with jax.enable_x64(True):
    params, state, data = setup(MLP((5, 10)), dtype=jnp.float64)
    masks = random_mask(params, 0.8, 4)
    scores = jax.jit(lambda p: prospr.prospr_scores(p, masks, state, data, key, cfg))(params)
    b = jax.random.permutation(key, data.labels.shape[0])[:16]
    x = batching.normalize(data.images[b], state.spec).reshape(16, -1).astype(jnp.float64)
    y = np.asarray(data.labels)[np.asarray(b)]

    @jax.jit
    def unrolled(m1, m2):  # Written out: 3 SGD steps from theta * m, then the loss.
      def loss(p):
        h = jax.nn.relu(x @ p[0] + p[1])
        z = h @ p[2] + p[3]
        return -jnp.mean(jax.nn.log_softmax(z)[jnp.arange(16), y])
      p = [params["hidden0"]["kernel"] * m1, params["hidden0"]["bias"],
           params["head"]["kernel"] * m2, params["head"]["bias"]]
      for _ in range(3):
        p = [q - 0.5 * g for q, g in zip(p, jax.grad(loss)(p))]
      return loss(p)

    m1 = np.asarray(masks["hidden0"]["kernel"], np.float64)
    m2 = np.asarray(masks["head"]["kernel"], np.float64)
    rng, h = np.random.default_rng(0), 1e-5
    for leaf, m in (("hidden0", m1), ("head", m2)):
      for j in rng.choice(m.size, 6, replace=False):
        up, down = m.copy(), m.copy()
        up.flat[j] += h
        down.flat[j] -= h
        args = lambda mm: (mm, m2) if leaf == "hidden0" else (m1, mm)
        fd = float(unrolled(*args(up)) - unrolled(*args(down))) / (2 * h)
        np.testing.assert_allclose(np.asarray(scores[leaf]["kernel"]).flat[j], abs(fd),
                                   rtol=1e-6, atol=1e-10)


# ---------------------------------------------------------------- PX

def test_px_equals_its_closed_form_on_a_two_layer_linear_network():
  model = MLP((4, 3), use_bias=False, act=False)
  params, state, data = setup(model, classes=3, shape=(5, 1, 1), num_train=30)
  masks = random_mask(params, 0.7, 5)
  cfg = prune_cfg(px_samples_per_class=2, batch_size=4)
  scores = jax.jit(lambda p: pathkernel.px_scores(p, masks, state, data, jax.random.PRNGKey(0), cfg))(params)
  labels = np.asarray(data.labels)
  idx = [i for c in range(3) for i in np.nonzero(labels == c)[0][:2]]  # First 2 of each class.
  x = (np.asarray(data.images, np.float64)[idx].reshape(len(idx), -1) / 255.0 - 0.5) / 0.29
  m1, m2 = np.asarray(masks["hidden0"]["kernel"]), np.asarray(masks["head"]["kernel"])
  w1 = np.asarray(params["hidden0"]["kernel"], np.float64) * m1
  w2 = np.asarray(params["head"]["kernel"], np.float64) * m2
  z1 = ((x ** 2) @ m1 @ w2).sum(0)  # jvf: hidden weights = mask, head real, input x^2.
  # z2_k = sum_{i,h} w1[i,h]^2 w2[h,k] (ones input); L = z1 . z2.
  want1 = w1 ** 2 * np.abs(m1 * (w2 @ z1)[None, :])
  want2 = w2 ** 2 * np.abs(m2 * np.outer((w1 ** 2).sum(0), z1))
  np.testing.assert_allclose(scores["hidden0"]["kernel"], want1, rtol=1e-4, atol=1e-6 * want1.max())
  np.testing.assert_allclose(scores["head"]["kernel"], want2, rtol=1e-4, atol=1e-6 * want2.max())


# ---------------------------------------------------------------- FORCE

def test_force_one_round_all_alive_equals_snip_and_pruned_weights_score():
  params, state, data = setup(MLP((6, 10)))
  masks = masks_lib.init_masks(params)
  cfg = prune_cfg(num_batches=1, force_num_batches=1)
  key = jax.random.PRNGKey(8)
  got, want = jax.jit(lambda p: (force.force_scores(p, masks, state, data, key, cfg),
                                 saliency.snip_scores(p, masks, state, data, key, cfg)))(params)
  for (_, a), (_, b) in zip(masks_lib.prunable_items(got, masks), masks_lib.prunable_items(want, masks)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
  # At a sparse mask, pruned weights get a score (they can come back): |theta * dL/dtheta_eff|.
  sparse = random_mask(params, 0.5, 6)
  s = force.force_scores(params, sparse, state, data, key, cfg)
  dead = ~np.asarray(sparse["hidden0"]["kernel"])
  assert np.all(np.asarray(s["hidden0"]["kernel"])[dead] > 0)


# ---------------------------------------------------------------- Fisher

def test_fisher_equals_a_per_example_loop():
  params, state, data = setup(MLP((6, 10)))
  masks = random_mask(params, 0.6, 7)
  cfg = prune_cfg(batch_size=8, num_batches=2)
  key = jax.random.PRNGKey(9)
  scores = jax.jit(lambda p: fisher.fisher_scores(p, masks, state, data, key, cfg))(params)
  idx = np.asarray(batch_indices(data, key, cfg)).ravel()
  grad = jax.jit(jax.grad(lambda p, i: loss_on(state, masks_lib.apply_masks(p, masks), data, i[None])))
  total = jax.tree.map(jnp.zeros_like, params)
  for i in idx:
    total = jax.tree.map(lambda t, g: t + g ** 2, total, grad(params, jnp.asarray(i)))
  eff = masks_lib.apply_masks(params, masks)
  for leaf in ("hidden0", "head"):
    want = np.asarray(eff[leaf]["kernel"]) ** 2 * np.asarray(total[leaf]["kernel"]) / len(idx)
    np.testing.assert_allclose(scores[leaf]["kernel"], want, rtol=1e-4, atol=1e-7 * want.max())
