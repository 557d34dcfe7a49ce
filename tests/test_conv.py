"""models/conv.py: im2col + matmul convolution equals lax.conv; the conv="..." model choice."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from autosparse_jax.errors import ConfigError
from autosparse_jax.models import conv as conv_lib
from autosparse_jax.models import get_model
from autosparse_jax.models.conv import (auto_conv_general_dilated, conv_general_dilated_for,
                                        im2col_conv_general_dilated, use_im2col)

DN = ("NHWC", "HWIO", "NHWC")
# (kernel, stride, padding) on a 7x6 map: odd and even sides, so stride-2 "SAME" pads unevenly.
CASES = [(3, 1, "SAME"), (3, 2, "SAME"), (3, 1, ((1, 1), (1, 1))), (3, 2, ((1, 1), (1, 1))),
         (3, 1, ((0, 0), (0, 0))), (3, 2, "VALID"), (1, 1, ((0, 0), (0, 0))), (1, 2, ((0, 0), (0, 0))),
         (1, 2, "SAME")]


def run_fast(fn, *args):
  """fn(*args) jitted with XLA's CPU backend at optimisation level 0: the im2col programs
  compile 2-3x faster (XLA:CPU compiles each of a conv's k*k strided slices as its own
  kernel), and both sides of each comparison are compiled alike."""
  return jax.jit(fn).lower(*args).compile(compiler_options={"xla_backend_optimization_level": 0})(*args)


def rel_err(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30)


def normal(seed, shape, dtype=jnp.float32):
  """numpy draws: jax.random would compile a program per shape (seconds on a busy CPU)."""
  return jnp.asarray(np.random.RandomState(seed).standard_normal(shape), dtype)


def operands(k, dtype=jnp.float32, batch=2, cin=3, cout=5, nets=None):
  lead = () if nets is None else (nets,)
  return normal(k, lead + (batch, 7, 6, cin), dtype), normal(k + 100, lead + (k, k, cin, cout), dtype)


def conv_and_grads(fn, x, w, stride, padding, **kwargs):
  """Output and the vjp (w.r.t. input and kernel) of a random cotangent."""
  y, vjp = jax.vjp(lambda x, w: fn(x, w, (stride, stride), padding, dimension_numbers=DN, **kwargs), x, w)
  ct = jnp.cos(jnp.arange(y.size, dtype=jnp.float32).reshape(y.shape)).astype(y.dtype)
  return (y,) + vjp(ct)


def all_cases(ops):
  """(lax.conv, im2col) outputs and grads of every case: one compiled program."""
  return [tuple(conv_and_grads(fn, *ops[k], stride, padding)
                for fn in (lax.conv_general_dilated, im2col_conv_general_dilated))
          for k, stride, padding in CASES]


def test_im2col_equals_lax_conv_outputs_and_grads():
  results = run_fast(all_cases, {k: operands(k) for k in (1, 3)})
  for (k, stride, padding), (want, got) in zip(CASES, results):
    for name, a, b in zip(("output", "d input", "d kernel"), want, got):
      assert a.shape == b.shape and a.dtype == b.dtype, (k, stride, padding, name)
      assert rel_err(a, b) < 1e-5, (k, stride, padding, name, rel_err(a, b))


def test_im2col_bf16_precision_and_preferred_element_type():
  x, w = operands(3, jnp.bfloat16)
  options = ({}, {"preferred_element_type": jnp.float32}, {"precision": lax.Precision.HIGHEST})
  results = run_fast(lambda x, w: [tuple(conv_and_grads(fn, x, w, 2, "SAME", **kwargs)
                                         for fn in (lax.conv_general_dilated, im2col_conv_general_dilated))
                                   for kwargs in options], x, w)
  for kwargs, (want, got) in zip(options, results):
    for a, b in zip(want, got):
      assert a.dtype == b.dtype and a.shape == b.shape, kwargs
      assert rel_err(a, b) < 2e-2, (kwargs, rel_err(a, b))
  with pytest.raises(TypeError, match="same dtypes"):
    im2col_conv_general_dilated(x, w.astype(jnp.float32), (1, 1), "SAME", dimension_numbers=DN)


def test_im2col_under_vmap():
  """A grid of 3 nets: the batched matmul equals the batched (grouped) lax.conv, and its grads."""
  cases = [(3, 2, "SAME"), (1, 2, ((0, 0), (0, 0)))]

  def run(ops):
    per_net = lambda fn, k, stride, padding: jax.vmap(
        lambda x, w: conv_and_grads(fn, x, w, stride, padding))(*ops[k])
    return [(per_net(lax.conv_general_dilated, *case), per_net(im2col_conv_general_dilated, *case))
            for case in cases]
  for (k, stride, padding), (want, got) in zip(cases, run_fast(run, {k: operands(k, nets=3) for k in (1, 3)})):
    for a, b in zip(want, got):
      assert a.shape == b.shape and rel_err(a, b) < 1e-5, (k, stride, padding, rel_err(a, b))


def test_unsupported_arguments_raise():
  x, w = operands(3)
  bad = [dict(rhs_dilation=(2, 2)), dict(lhs_dilation=(2, 1)), dict(dimension_numbers=("NCHW", "OIHW", "NCHW")),
         dict(dimension_numbers=None), dict(batch_group_count=2)]
  for kwargs in bad:
    kwargs = {"dimension_numbers": DN, **kwargs}
    with pytest.raises(NotImplementedError):
      im2col_conv_general_dilated(x, w, (1, 1), "SAME", **kwargs)
    assert not use_im2col(x, w, (1, 1), "SAME", platform="cpu", **kwargs)
  with pytest.raises(NotImplementedError, match="feature_group_count"):
    im2col_conv_general_dilated(x, w[:, :, :1], (1, 1), "SAME", dimension_numbers=DN, feature_group_count=3)
  with pytest.raises(NotImplementedError, match="2-D"):
    im2col_conv_general_dilated(x[:, 0], w[0], (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
  # "auto" leaves what im2col cannot do to lax.conv.
  got = auto_conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=DN)
  want = lax.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=DN)
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ConfigError, match="im2col"):
    conv_general_dilated_for("im2colx")
  with pytest.raises(ConfigError, match="config.conv"):
    get_model("resnet18", 10, conv="cudnn")


def test_auto_policy():
  def choice(size, cin, cout, k, stride, platform="cpu"):
    x = jax.ShapeDtypeStruct((128, size, size, cin), jnp.float32)
    w = jax.ShapeDtypeStruct((k, k, cin, cout), jnp.float32)
    return use_im2col(x, w, (stride, stride), ((k // 2, k // 2),) * 2, dimension_numbers=DN, platform=platform)
  assert conv_lib.AUTO_MAX_OUTPUT_SIZE == 2
  assert choice(2, 512, 512, 3, 1) and choice(4, 256, 512, 3, 2)  # 2x2 outputs.
  assert choice(32, 64, 128, 1, 2) and choice(8, 256, 512, 1, 2)  # Strided 1x1 shortcuts.
  assert not choice(4, 512, 512, 3, 1) and not choice(8, 256, 512, 3, 2) and not choice(32, 64, 64, 3, 1)
  assert not choice(8, 256, 256, 1, 1)
  assert not choice(2, 512, 512, 3, 1, platform="gpu") and not choice(32, 64, 128, 1, 2, platform="tpu")
  assert conv_general_dilated_for("xla") is lax.conv_general_dilated


def count_convs(model, x, variables):
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
  return str(jaxpr).count("conv_general_dilated")


def random_variables(tree):
  """Variables of the tree's shapes drawn with numpy (jax.random's init would compile for seconds)."""
  def draw(i, path, leaf):
    if jax.tree_util.keystr(path).endswith("['var']"):  # BN running variances: positive.
      return 1 + jnp.abs(normal(i, leaf.shape))
    return normal(i, leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]) if leaf.ndim > 1 else 1.0)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return jax.tree.unflatten(treedef, [draw(i, path, leaf) for i, (path, leaf) in enumerate(leaves)])


# name, input size, convs "auto" gives im2col on CPU: VGG-16 at 32x32: the three 3x3 convs of
# the 2x2 stage; ResNet-18 at 16x16: the four 3x3 convs of the 2x2 stage and three strided 1x1
# shortcuts.
@pytest.mark.parametrize("name,size,auto_im2col", [("resnet18", 16, 7), ("vgg16", 32, 3)])
def test_models_same_params_and_logits(name, size, auto_im2col):
  x = normal(1, (2, size, size, 3))
  models = {impl: get_model(name, 10, width=1 / 16, conv=impl) for impl in ("xla", "im2col", "auto")}
  assert get_model(name, 10, width=1 / 16) == models["xla"]  # The default.
  trees = {impl: jax.eval_shape(lambda m=m: m.init(jax.random.PRNGKey(0), x, train=False))
           for impl, m in models.items()}
  assert trees["im2col"] == trees["xla"] and trees["auto"] == trees["xla"]  # Names, shapes, dtypes.
  variables = random_variables(trees["xla"])

  def outputs(variables):  # "auto" runs each conv as one of the other two: its choices are checked below.
    return {impl: (models[impl].apply(variables, x, train=False),
                   models[impl].apply(variables, x, train=True, mutable=["batch_stats"]))
            for impl in ("xla", "im2col")}
  out = run_fast(outputs, variables)
  for what, want, got in zip(("eval logits", "train logits and batch stats"), out["xla"], out["im2col"]):
    errors = jax.tree.leaves(jax.tree.map(rel_err, want, got))
    assert max(errors) < 1e-5, (what, max(errors))
  # Which convs run through XLA's conv (CPU): all, none, or those "auto" leaves to it.
  n = len([p for p in jax.tree.leaves(variables["params"]) if p.ndim == 4])
  counts = {impl: count_convs(m, x, variables) for impl, m in models.items()}
  assert counts == {"xla": n, "im2col": 0, "auto": n - auto_im2col}, counts


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_matmul_stats_batchnorm_equals_flax_batchnorm(dtype):
  import flax.linen as nn
  from autosparse_jax.models.layers import BN_SETTINGS, MatmulStatsBatchNorm
  x = jnp.asarray(np.random.default_rng(3).normal(2.0, 3.0, size=(4, 5, 6, 7)), jnp.float32)
  ours, flax_bn = (cls(use_running_average=False, dtype=dtype, **BN_SETTINGS)
                   for cls in (MatmulStatsBatchNorm, nn.BatchNorm))
  variables = flax_bn.init(jax.random.PRNGKey(0), x)
  assert jax.tree.structure(ours.init(jax.random.PRNGKey(0), x)) == jax.tree.structure(variables)
  variables = jax.tree.map(lambda v: v + 0.1 * jnp.arange(v.size, dtype=v.dtype).reshape(v.shape), variables)
  tol = 1e-5 if dtype == jnp.float32 else 2e-2

  def run(module, v, x):
    y, updates = module.apply(v, x, mutable=["batch_stats"])
    return jnp.sum(jnp.sin(y.astype(jnp.float32))), (y, updates)

  (_, (y_ours, up_ours)), g_ours = jax.value_and_grad(run, argnums=(1, 2), has_aux=True)(ours, variables, x)
  (_, (y_flax, up_flax)), g_flax = jax.value_and_grad(run, argnums=(1, 2), has_aux=True)(flax_bn, variables, x)
  assert y_ours.dtype == y_flax.dtype == dtype
  np.testing.assert_allclose(np.asarray(y_ours, np.float32), np.asarray(y_flax, np.float32), rtol=tol, atol=tol)
  for a, b in zip(jax.tree.leaves((up_ours, g_ours)), jax.tree.leaves((up_flax, g_flax))):
    assert a.dtype == b.dtype
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol, atol=tol * 10)
  np.testing.assert_allclose(
      ours.clone(use_running_average=True).apply(variables, x),
      flax_bn.clone(use_running_average=True).apply(variables, x), rtol=tol, atol=tol)  # Eval mode.
