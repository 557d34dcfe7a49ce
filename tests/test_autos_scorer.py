"""AutoS scorer: shapes per backbone, parameter counts from the layer shapes, BatchNorm,
bf16 compute with f32 params, and the MLP learning a known survival function (CPU, seconds)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autosparse_jax.autos import BACKBONES, make_scorer

NARROW = 1 / 16  # Conv backbones in the tests that run them: ResNet-18 at 4..32 channels.


@functools.lru_cache(maxsize=None)
def _scorer_and_variables(backbone, width, dtype=jnp.float32):
  model = make_scorer(backbone, n_features=2, width=width, dtype=dtype)
  # An "rbg" key: XLA:CPU compiles ResNet-18's threefry initialisers in ~13 s, these in ~3 s.
  key = jax.random.key(0, impl="rbg")
  return model, jax.jit(lambda k: model.init(k, jnp.ones((4, 2)), train=False))(key)


def _apply(model, variables, x, train=False):
  """Jitted apply; train=True also returns the updated collections."""
  if train:
    return jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
  return jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)


def _param_shapes(model, n_features=2):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.ones((2, n_features)),
                                           train=False))["params"]


def _num_params(model, n_features=2):
  return sum(p.size for p in jax.tree.leaves(_param_shapes(model, n_features)))


def _dense_bn(n_in, n_out):
  """Dense kernel + bias, then BatchNorm scale + bias."""
  return n_in * n_out + n_out + 2 * n_out


def _resnet18_cifar(in_ch, classes):
  """CIFAR ResNet-18 (3x3 stem, BasicBlocks of bias-free convs + BN, Dense head)."""
  total = 9 * in_ch * 64 + 2 * 64
  c_in = 64
  for width in (64, 128, 256, 512):
    for _ in range(2):
      total += 9 * c_in * width + 2 * width + 9 * width * width + 2 * width
      if c_in != width:
        total += c_in * width + 2 * width  # 1x1 shortcut conv + BN.
      c_in = width
  return total + 512 * classes + classes


@pytest.mark.parametrize("backbone,width", [("resnet18", NARROW), ("vgg19", NARROW), ("mlp", 1.0)])
def test_output_shape_and_dtype(backbone, width):
  model, variables = _scorer_and_variables(backbone, width)
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 2))
  y = _apply(model, variables, x)
  assert y.shape == (5,) and y.dtype == jnp.float32 and np.all(np.isfinite(y))


def test_full_width_resnet18_parameter_count():
  assert _resnet18_cifar(3, 10) == 11_173_962  # The hand count gives the known ResNet-18 size.
  encoder = _dense_bn(2, 64) + _dense_bn(64, 32 * 32 * 3)
  assert _num_params(make_scorer("resnet18")) == encoder + _resnet18_cifar(3, 1)
  # More features only widen the first Dense.
  assert _num_params(make_scorer("resnet18", n_features=5), 5) == encoder + 3 * 64 + _resnet18_cifar(3, 1)


def test_full_width_mlp_parameter_count():
  widths = (2, 16, 64, 1024, 1024, 64)
  want = sum(_dense_bn(a, b) for a, b in zip(widths[:-1], widths[1:])) + 64 * 1 + 1
  assert _num_params(make_scorer("mlp")) == want


def test_vgg19_lifts_to_64x64_and_has_one_output():
  params = _param_shapes(make_scorer("vgg19", width=NARROW))
  assert params["encoder2_dense"]["kernel"].shape == (64, 64 * 64 * 3)
  assert params["backbone"]["head"]["kernel"].shape[-1] == 1


def test_unknown_backbone_and_wrong_feature_count_are_named():
  with pytest.raises(ValueError, match="Allowed: resnet18, vgg19, mlp"):
    make_scorer("resnet50")
  with pytest.raises(ValueError, match=r"\[batch, 2\]"):
    make_scorer("mlp").init(jax.random.PRNGKey(0), jnp.ones((4, 3)), train=False)
  assert BACKBONES == ("resnet18", "vgg19", "mlp")


def test_batchnorm_updates_batch_stats_in_train_mode_only():
  model, variables = _scorer_and_variables("resnet18", NARROW)
  x = 3.0 + jax.random.normal(jax.random.PRNGKey(2), (8, 2))
  y, updates = _apply(model, variables, x, train=True)
  assert y.shape == (8,)
  old, new = variables["batch_stats"], updates["batch_stats"]
  assert jax.tree.structure(old) == jax.tree.structure(new)
  # Every BN layer (encoder and backbone) saw the batch.
  assert all(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new)))
  # Inference mode normalises with the running statistics: a row's score does not depend on the batch.
  np.testing.assert_allclose(_apply(model, variables, x[:3]), _apply(model, variables, x)[:3],
                             rtol=1e-5, atol=1e-6)


def test_bf16_compute_keeps_f32_params_and_outputs():
  model, variables = _scorer_and_variables("mlp", 1.0, jnp.bfloat16)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  x = jax.random.normal(jax.random.PRNGKey(3), (16, 2))
  y = _apply(model, variables, x)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, _apply(make_scorer("mlp"), variables, x), rtol=0.1, atol=0.1)


def _synthetic(key, n):
  """Features (theta_0, g_0) and a known survival score y = sigmoid(5 |theta_0|)."""
  k1, k2 = jax.random.split(key)
  theta = 0.5 * jax.random.normal(k1, (n,))
  g = jax.random.normal(k2, (n,))
  return jnp.stack([theta, g], axis=1), jax.nn.sigmoid(5.0 * jnp.abs(theta))


def test_mlp_learns_a_known_survival_function():
  model, variables = _scorer_and_variables("mlp", 1.0)
  x_train, y_train = _synthetic(jax.random.PRNGKey(10), 4096)
  x_test, y_test = _synthetic(jax.random.PRNGKey(11), 2048)
  batch, steps = 64, 300
  tx = optax.adam(optax.cosine_decay_schedule(3e-3, steps))

  @jax.jit
  def fit(variables, key):
    def step(carry, k):
      params, batch_stats, opt_state = carry
      idx = jax.random.randint(k, (batch,), 0, x_train.shape[0])

      def loss_fn(p):
        pred, upd = model.apply({"params": p, "batch_stats": batch_stats}, x_train[idx], train=True,
                                mutable=["batch_stats"])
        return jnp.mean((pred - y_train[idx]) ** 2), upd["batch_stats"]

      (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    params = variables["params"]
    carry = (params, variables["batch_stats"], tx.init(params))
    (params, batch_stats, _), losses = jax.lax.scan(step, carry, jax.random.split(key, steps))
    return {"params": params, "batch_stats": batch_stats}, losses

  trained, losses = fit(variables, jax.random.PRNGKey(12))
  mse = float(jnp.mean((_apply(model, trained, x_test) - y_test) ** 2))
  variance = float(jnp.var(y_test))
  assert mse < 0.1 * variance, (mse, variance, float(losses[-1]))  # Measured: ~0.03 x variance.
