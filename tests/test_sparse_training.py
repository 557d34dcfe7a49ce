"""Masks that change while training (autosparse_jax/dynamic_sparsity.py): GMP, SET, RigL.

Exact counts after every update under global / layerwise / ERK, masks that move, RigL's growth by the
largest gradient on a hand-built layer, pruned weights exactly 0 between updates, regrown weights 0
with their Adam moments reset, the optax wrapper on a dict MLP and an equinox model (eager = jit), the
bad-input errors, and parity with google-research/jaxpruner's own updaters from the fixtures in
tests/reference/jaxpruner__*.npz (tests/reference/make_jaxpruner_fixtures.py; jaxpruner is not needed).
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import autosparse_jax as asj
from autosparse_jax import dynamic_sparsity as ds
from autosparse_jax import masks as masks_lib

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "reference")
SIZES = (12, 24, 16, 5)


def mlp_params(key, sizes=SIZES):
  keys = jax.random.split(key, len(sizes) - 1)
  params = {}
  for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    params[f"w{i}"] = jax.random.normal(k, (a, b)) / np.sqrt(a)
    params[f"b{i}"] = jnp.zeros(b)
  return params


def mlp_loss(params, x, y):
  n = len(params) // 2
  h = x
  for i in range(n):
    h = h @ params[f"w{i}"] + params[f"b{i}"]
    if i < n - 1:
      h = jnp.tanh(h)
  return optax.softmax_cross_entropy_with_integer_labels(h, y).mean()


def data(key, n=32, d=SIZES[0], classes=SIZES[-1]):
  kx, ky = jax.random.split(key)
  return jax.random.normal(kx, (n, d)), jax.random.randint(ky, (n,), 0, classes)


def start_masks(params, density, distribution, key=jax.random.PRNGKey(3)):
  scores = jax.tree.map(lambda p: jax.random.uniform(key, p.shape), params)
  return masks_lib.scores_to_masks(scores, masks_lib.init_masks(params), density, distribution)


def layer_counts(masks):
  return np.array([int(np.asarray(m).sum()) for _, m in masks_lib.prunable_items(masks, masks)])


def pruned_are_zero(params, masks):
  return all(bool(jnp.all(jnp.where(m, True, p == 0))) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)))


def train(tx, params, steps, batch, jit=True, record=None):
  state = tx.init(params)

  def step(params, state):
    grads = jax.grad(mlp_loss)(params, *batch)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  step = jax.jit(step) if jit else step
  for t in range(steps):
    params, state = step(params, state)
    if record is not None:
      record(t, params, state)
  return params, state


# ------------------------------------------------------------------------------------------ API

def test_public_api_names_the_functions_not_the_module():
  import autosparse_jax.dynamic_sparsity  # noqa: F401  (importing the submodule must not shadow them)
  assert asj.sparse_training is ds.sparse_training
  assert asj.current_masks is ds.current_masks
  assert "sparse_training" in asj.__all__ and "current_masks" in asj.__all__


def test_records_declare_the_papers_defaults_once():
  rigl = ds.schedule("rigl").resolve(1000)
  assert (rigl.drop_fraction, rigl.drop_fraction_decay, rigl.update_every_steps) == (0.3, "cosine", 100)
  assert (rigl.start_step, rigl.end_step) == (0, 750)  # RigL: end at 75% of training.
  assert ds.schedule("set", start_fraction=0.1, end_fraction=0.5).resolve(1000).end_step == 500
  gmp = ds.schedule("gmp", sparsity=0.9).resolve(1000)
  assert (gmp.start_step, gmp.end_step, gmp.power, gmp.initial_sparsity) == (0, 700, 3, 0.0)  # 750 moved onto the grid.
  assert ds.schedule("gmp", sparsity=0.9, end_step=801).resolve().end_step == 801  # Step 800 has progress 1.
  np.testing.assert_array_equal(ds.update_steps(ds.schedule("rigl", start_step=50, end_step=300).resolve()),
                                [100, 200, 300])


BAD = [
    (dict(method="rigl", drop_fraction=0.0), "drop_fraction=0.0 must lie in (0, 1)"),
    (dict(method="set", drop_fraction=1.0), "drop_fraction=1.0 must lie in (0, 1)"),
    (dict(method="rigl", drop_fraction=-0.2), "drop_fraction=-0.2"),
    (dict(method="rigl", update_every_steps=0), "update_every_steps=0 must be an integer >= 1"),
    (dict(method="rigl", update_every_steps=2.5), "update_every_steps=2.5"),
    (dict(method="rigl", start_step=50, end_step=10), "end_step=10 is before start_step=50"),
    (dict(method="rigl", start_fraction=0.8, end_fraction=0.5), "end_step=50 is before start_step=80"),
    (dict(method="rigl", end_step=500), "end_step=500 is beyond the run's 100 steps"),
    (dict(method="rigl", end_fraction=1.5), "end_fraction=1.5 must lie in [0, 1]"),
    (dict(method="rigl", start_step=1, start_fraction=0.1), "start_step=1 and start_fraction=0.1 are both given"),
    (dict(method="rigl", drop_fraction_decay="linear"), "drop_fraction_decay='linear' is not known"),
    (dict(method="gmp", sparsity=0.5, initial_sparsity=0.7), "initial_sparsity=0.7 must lie in [0, sparsity=0.5]"),
    (dict(method="gmp", sparsity=1.2), "sparsity=1.2 must lie in [0, 1)"),
    (dict(method="gmp"), "method='gmp' needs sparsity="),
    (dict(method="gmp", sparsity=0.9, distribution="uniform"), "distribution='uniform' is not known"),
    (dict(method="gmp", sparsity=0.9, update_every_steps=10, end_step=55), "Give end_step=50 or 60"),
    (dict(method="rigl", sparsity=0.9), "sparsity: not a field of method='rigl'"),
    (dict(method="lottery"), "method='lottery' is not known"),
    (dict(method="static"), "use asj.masked(tx, masks) for static masks"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_refused_with_the_field_and_the_fix(kwargs, message):
  params = mlp_params(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=None) as err:
    asj.sparse_training(optax.sgd(0.1), start_masks(params, 0.5, "global"), total_steps=100, **kwargs)
  assert message in str(err.value), str(err.value)


def test_bad_input_needing_the_run_or_the_masks():
  params = mlp_params(jax.random.PRNGKey(0))
  masks = start_masks(params, 0.2, "layerwise")
  with pytest.raises(ValueError, match="give total_steps="):
    asj.sparse_training(optax.sgd(0.1), masks, "rigl")
  with pytest.raises(ValueError, match="fewer than GMP's first update keeps"):
    asj.sparse_training(optax.sgd(0.1), masks, "gmp", sparsity=0.9, total_steps=100, update_every_steps=10)
  tx = asj.sparse_training(optax.sgd(0.1), masks, "rigl", total_steps=100)
  with pytest.raises(ValueError, match=r"call update\(grads, state, params\)"):
    tx.update(params, tx.init(params))
  with pytest.raises(ValueError, match="record.resolve"):
    ds.is_update_step(ds.schedule("rigl"), 0)


# ---------------------------------------------------------------------- counts, zeros, movement

@pytest.mark.parametrize("method", ["gmp", "set", "rigl"])
@pytest.mark.parametrize("distribution", ["global", "layerwise", "erk"])
def test_exact_counts_after_every_update_and_pruned_weights_zero(method, distribution):
  params = mlp_params(jax.random.PRNGKey(1))
  batch = data(jax.random.PRNGKey(2))
  if method == "gmp":
    masks0 = masks_lib.init_masks(params)
    fields = dict(sparsity=0.8, distribution=distribution, update_every_steps=2, start_step=2, end_step=10)
  else:
    masks0 = start_masks(params, 0.3, distribution)
    fields = dict(update_every_steps=2, end_step=10)
  params = masks_lib.apply_masks(params, masks0)
  tx = asj.sparse_training(optax.adam(1e-2), masks0, method, total_steps=14, **fields)
  record = ds.schedule(method, **fields).resolve(14)
  table = ds.gmp_keep_counts(record, masks0) if method == "gmp" else None
  seen = []

  def check(t, params, state):
    masks = asj.current_masks(state)
    counts = layer_counts(masks)
    if method == "gmp":
      done = ds.update_steps(record) <= t
      want = table[done.sum() - 1] if done.any() else layer_counts(masks0)
      if distribution == "global" and done.any():
        assert counts.sum() == want, (t, counts)
      else:
        np.testing.assert_array_equal(counts, want)
    else:
      np.testing.assert_array_equal(counts, layer_counts(masks0))
    assert pruned_are_zero(params, masks), t
    seen.append(masks)

  train(tx, params, 14, batch, record=check)
  final = layer_counts(seen[-1])
  if method == "gmp":  # The target reached exactly: the distribution's own counts.
    want = masks_lib.keep_counts(masks0, 0.2, distribution)
    assert final.sum() == np.sum(want)
    if distribution != "global":
      np.testing.assert_array_equal(final, want)
  else:  # Masks really moved, and more than once.
    changes = [not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y)))
               for x, y in zip([masks0] + seen[:-1], seen)]
    assert sum(changes) >= 3, changes


def test_rigl_regrows_the_largest_gradients_hand_built():
  # One 2x4 layer keeping 4: drop the 2 smallest |w| of the kept, regrow the 2 largest |g| elsewhere.
  w = jnp.array([[0.9, -0.1, 0.0, 0.0], [0.5, 0.0, -0.2, 0.0]])
  m = jnp.array([[True, True, False, False], [True, False, True, False]])
  g = jnp.array([[0.0, 5.0, 3.0, 0.1], [0.0, 0.2, 0.0, 4.0]])
  params, masks = {"w": w, "b": jnp.zeros(2)}, {"w": m, "b": jnp.ones((), bool)}
  record = ds.schedule("rigl", drop_fraction=0.5, drop_fraction_decay="constant", update_every_steps=1,
                       end_step=10).resolve()
  new, regrown = ds.update_masks(record, params, masks, {"w": g, "b": jnp.zeros(2)}, step=0)
  # Dropped: -0.1 (0,1) and -0.2 (1,2). Candidates: every entry not kept after the drop, the just-dropped
  # included: (0,1) has |g| 5 (regrown: it stays), (1,3) 4; (0,2) 3 loses.
  np.testing.assert_array_equal(new["w"], [[True, True, False, False], [True, False, False, True]])
  np.testing.assert_array_equal(regrown["w"], [[False, False, False, False], [False, False, False, True]])
  # SET with the same draws fed as growth scores behaves the same way.
  new_set, _ = ds.update_masks(ds.schedule("set", drop_fraction=0.5, drop_fraction_decay="constant",
                                           end_step=10).resolve(), params, masks, grow_scores={"w": g, "b": g[0, :2]})
  np.testing.assert_array_equal(new_set["w"], new["w"])


def test_regrown_weights_are_zero_with_adam_moments_reset_and_the_step_skipped():
  params = mlp_params(jax.random.PRNGKey(4))
  masks0 = start_masks(params, 0.3, "layerwise")
  params = masks_lib.apply_masks(params, masks0)
  params = jax.tree.map(lambda p, m: jnp.where(m, p, 0.0) + 0.0, params, masks0)
  tx = asj.sparse_training(optax.adam(1e-2), masks0, "rigl", update_every_steps=5, end_step=10, total_steps=20)
  state = tx.init(params)
  adam = state.inner_state[0]
  ones = jax.tree.map(jnp.ones_like, params)
  state = state._replace(inner_state=(adam._replace(mu=ones, nu=ones, count=jnp.array(7, jnp.int32)),)
                         + state.inner_state[1:])
  grads = jax.grad(mlp_loss)(params, *data(jax.random.PRNGKey(5)))
  updates, new_state = tx.update(grads, state, params)  # Step 0: an update step.
  new_params = optax.apply_updates(params, updates)
  new_masks = asj.current_masks(new_state)
  regrown = jax.tree.map(lambda a, b: a & ~b, new_masks, masks0)
  assert sum(int(r.sum()) for r in jax.tree.leaves(regrown)) > 0
  new_adam = new_state.inner_state[0]
  assert int(new_adam.count) == 7  # The optimizer step was skipped.
  for p, r, mu, nu, m in zip(jax.tree.leaves(new_params), jax.tree.leaves(regrown), jax.tree.leaves(new_adam.mu),
                             jax.tree.leaves(new_adam.nu), jax.tree.leaves(new_masks)):
    assert bool(jnp.all(jnp.where(r, (p == 0) & (mu == 0) & (nu == 0), (mu == 1) & (nu == 1))))
    assert bool(jnp.all(jnp.where(m, True, p == 0)))
  kept = jax.tree.map(lambda a, b: a & b, new_masks, masks0)  # Kept weights did not move on the update step.
  assert all(bool(jnp.all(jnp.where(k, a == b, True))) for a, b, k in
             zip(jax.tree.leaves(new_params), jax.tree.leaves(params), jax.tree.leaves(kept)))


def test_reset_opt_state_finds_every_params_shaped_subtree():
  params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
  regrown = {"w": jnp.array([[True, False, False], [False, False, True]]), "b": jnp.zeros((), bool)}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.sgd)(0.1, momentum=0.9),
                   optax.adamw(1e-3))
  state = jax.tree.map(lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.floating) else x, tx.init(params))
  out = ds.reset_opt_state(state, params, regrown)
  trace, adam = out[1].inner_state[0].trace, out[2][0]
  for tree in (trace, adam.mu, adam.nu):
    np.testing.assert_array_equal(tree["w"], np.where(regrown["w"], 0.0, 1.0))
    np.testing.assert_array_equal(tree["b"], np.ones(3))
  assert float(out[1].hyperparams["learning_rate"]) == pytest.approx(1.1)  # Not params-shaped: untouched.


# ------------------------------------------------------------------------- the wrapper in loops

def test_wrapper_on_a_dict_mlp_eager_equals_jit():
  params = mlp_params(jax.random.PRNGKey(6))
  masks0 = start_masks(params, 0.25, "erk")
  params = masks_lib.apply_masks(params, masks0)
  batch = data(jax.random.PRNGKey(7))
  outs = []
  for jit in (False, True):
    tx = asj.sparse_training(optax.adam(1e-2), masks0, "set", update_every_steps=2, end_step=2, total_steps=4,
                             key=jax.random.PRNGKey(11))
    outs.append(train(tx, params, 4, batch, jit=jit))
  (p_eager, s_eager), (p_jit, s_jit) = outs
  for a, b in zip(jax.tree.leaves(asj.current_masks(s_eager)), jax.tree.leaves(asj.current_masks(s_jit))):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(p_eager), jax.tree.leaves(p_jit)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert mlp_loss(p_jit, *batch) < mlp_loss(params, *batch)


def test_wrapper_on_an_equinox_model_in_a_plain_optax_loop():
  eqx = pytest.importorskip("equinox")
  model = eqx.nn.MLP(8, 3, 16, 2, key=jax.random.PRNGKey(8))
  params, static = eqx.partition(model, eqx.is_array)
  masks0 = start_masks(params, 0.3, "global")
  assert len(masks_lib.prunable_items(masks0, masks0)) == 3  # The three weights; biases dense.
  params = masks_lib.apply_masks(params, masks0)
  x, y = data(jax.random.PRNGKey(9), d=8, classes=3)

  def loss(p):
    logits = jax.vmap(eqx.combine(p, static))(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  results = []
  for jit in (False, True):
    tx = asj.sparse_training(optax.adam(1e-2), masks0, "rigl", update_every_steps=2, end_step=2, total_steps=3)

    def step(p, s):
      updates, s = tx.update(jax.grad(loss)(p), s, p)
      return optax.apply_updates(p, updates), s

    step = eqx.filter_jit(step) if jit else step
    p, s = params, tx.init(params)
    for _ in range(3):  # Updates at steps 0 and 2.
      p, s = step(p, s)
      assert pruned_are_zero(p, asj.current_masks(s))
      np.testing.assert_array_equal(layer_counts(asj.current_masks(s)), layer_counts(masks0))
    results.append((p, asj.current_masks(s)))
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert float(loss(results[1][0])) < float(loss(params))


# -------------------------------------------------------------------------- jaxpruner's own output

FIXTURE_FIELDS = {
    "gmp_layerwise": dict(method="gmp", sparsity=0.8, distribution="layerwise", update_every_steps=2, start_step=2,
                          end_step=10),
    "gmp_global": dict(method="gmp", sparsity=0.8, distribution="global", update_every_steps=2, start_step=2,
                       end_step=10),
    "set": dict(method="set", drop_fraction=0.3, drop_fraction_decay="cosine", update_every_steps=4, start_step=0,
                end_step=12),
    "rigl": dict(method="rigl", drop_fraction=0.3, drop_fraction_decay="cosine", update_every_steps=4, start_step=0,
                 end_step=12),
}


def load_fixture(name):
  f = np.load(os.path.join(FIXTURES, f"jaxpruner__{name}.npz"))
  meta = json.loads(str(f["meta"]))
  names = sorted({k.split("/")[1] for k in f.files if k.startswith("params0/")})
  params0 = {k: jnp.asarray(f[f"params0/{k}"]) for k in names}
  masks0 = {k: jnp.asarray(f[f"masks0/{k}"]).astype(bool) if f"masks0/{k}" in f.files else jnp.ones((), bool)
            for k in names}
  return f, meta, names, params0, masks0


@pytest.mark.parametrize("name", sorted(FIXTURE_FIELDS))
def test_jaxpruner_parity_masks_and_params_at_every_step(name):
  f, meta, names, params, masks0 = load_fixture(name)
  assert meta["jaxpruner_commit"] == "f133ee50f31a03d0152b8b272edb534065152f5d"
  fields = dict(FIXTURE_FIELDS[name])
  method = fields.pop("method")
  record = ds.schedule(method, **fields).resolve(meta["steps"])
  steps = np.arange(meta["steps"] + 2)
  np.testing.assert_array_equal([bool(ds.is_update_step(record, t)) for t in steps], f["is_update_step"])
  if method == "gmp":  # Zhu & Gupta's cubic as jaxpruner's PolynomialSchedule computes it, every step.
    np.testing.assert_array_equal(np.array([ds.gmp_sparsity(record, t) for t in steps]), f["sparsity_at_step"])
  else:  # The cosine drop fraction, every step.
    np.testing.assert_allclose(np.array([ds.drop_fraction(record, t) for t in steps]), f["drop_fraction_at_step"],
                               rtol=1e-6, atol=1e-7)
  key = jax.random.PRNGKey(meta["rng_seed"][1]) if method == "set" else None
  tx = asj.sparse_training(optax.adam(meta["lr"]), masks0, method, key=key, **fields)
  state = tx.init(params)
  step = jax.jit(tx.update)
  for t in range(meta["steps"]):
    grads = {k: jnp.asarray(f[f"grads/{k}"][t]) for k in names}
    updates, state = step(grads, state, params)
    params = optax.apply_updates(params, updates)
    masks = asj.current_masks(state)
    for k in names:
      if f"masks/{k}" in f.files:
        np.testing.assert_array_equal(np.asarray(masks[k]), f[f"masks/{k}"][t].astype(bool), err_msg=f"{k} step {t}")
      np.testing.assert_allclose(params[k], f[f"params/{k}"][t], rtol=1e-6, atol=1e-7, err_msg=f"{k} step {t}")


def test_jaxpruner_set_draws_fed_to_ours_equal_the_fixed_key():
  f, meta, names, params, masks0 = load_fixture("set")
  fields = dict(FIXTURE_FIELDS["set"])
  record = ds.schedule(fields.pop("method"), **fields).resolve()
  key = jax.random.PRNGKey(meta["rng_seed"][1])
  draws = ds.random_scores(params, jax.random.fold_in(key, 0))
  for k in ("w1", "w2"):
    np.testing.assert_array_equal(draws[k], f[f"draws/0/{k}"])
  fed = dict(draws, **{k: jnp.asarray(f[f"draws/0/{k}"]) for k in ("w1", "w2")})
  by_key, _ = ds.update_masks(record, params, masks0, key=key, step=0)
  by_draws, _ = ds.update_masks(record, params, masks0, grow_scores=fed, step=0)
  for k in ("w1", "w2"):
    np.testing.assert_array_equal(by_key[k], by_draws[k])
    np.testing.assert_array_equal(by_draws[k], f[f"masks/{k}"][0].astype(bool))


# ------------------------------------------------------------------------ training FLOPs, by hand

LENET_MACS = (784 * 300, 300 * 100, 100 * 10)  # 235,200 + 30,000 + 1,000 = 266,200 multiply-adds.


def test_training_flops_static_and_rigl_by_hand():
  f_dense = 2 * 266_200  # 532,400 forward FLOPs per example.
  f_sparse = 2 * 26_620  # Every layer at 10%: 53,240.
  assert ds.static_training_flops(f_sparse, batch=8) == 3 * 53_240 * 8 == 1_277_760
  # RigL, dT = 100: (3 x 53,240 x 100 + 2 x 53,240 + 532,400) / 101 per example.
  assert ds.rigl_training_flops(f_sparse, f_dense, 100) == pytest.approx((15_972_000 + 106_480 + 532_400) / 101)
  assert ds.rigl_training_flops(f_sparse, f_dense, 100, batch=8) == pytest.approx(8 * 16_610_880 / 101)
  # A 1,000-step run updating every 100 steps until 750: updates at 0, 100, ..., 700 (8 of them).
  rigl = ds.schedule("rigl").resolve(1000)
  total = ds.training_flops_total(rigl, 1000, f_sparse, f_dense, batch=1)
  assert total == 992 * 3 * 53_240 + 8 * (2 * 53_240 + 532_400)
  assert ds.training_flops_total(ds.schedule("set").resolve(1000), 1000, f_sparse, f_dense) == 1000 * 159_720


def test_training_flops_gmp_integrates_its_schedule_by_hand():
  masks = {"w": jnp.ones((10, 10), bool), "b": jnp.ones((), bool)}
  record = ds.schedule("gmp", sparsity=0.5, distribution="layerwise", update_every_steps=1, start_step=0,
                       end_step=2).resolve(4)
  # Updates at 0 (progress 1/2: s = 0.5 x (1 - 1/8) = 0.4375, keep 56), 1 and 2 (keep 50).
  np.testing.assert_array_equal(ds.gmp_keep_counts(record, masks), [[56], [50], [50]])
  # One multiply-add per weight per example; f_D = 200. Step 0 runs dense, step 1 with 56, steps 2-3 with 50.
  f = ds.gmp_forward_flops(record, masks, 200.0, [100], 4)
  np.testing.assert_array_equal(f, [200.0, 112.0, 100.0, 100.0])
  assert ds.training_flops_total(record, 4, forward_flops=f, batch=2) == 3 * 512 * 2
  glob = ds.schedule("gmp", sparsity=0.5, update_every_steps=1, start_step=0, end_step=2).resolve(4)
  two = {"a": jnp.ones((10, 10), bool), "b": jnp.ones((10, 30), bool)}
  # Global: 400 weights, keep 225 then 200; both layers taken at the overall density.
  np.testing.assert_allclose(ds.gmp_forward_flops(glob, two, 1000.0, [100, 300], 4),
                             [1000.0, 1000 - 2 * 400 * (1 - 225 / 400), 1000 - 2 * 400 * 0.5, 600.0])
