"""Models: pinned parameter counts (from the architectures' formulas), shapes, initialisation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autosparse_jax import masks as masks_lib
from autosparse_jax.models import get_model


def counts(model, shape):
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False))
  params = variables["params"]
  m = jax.eval_shape(lambda: masks_lib.init_masks(jax.tree.map(jnp.zeros_like, params)))
  prunable = [p for p, mk in zip(jax.tree.leaves(params), jax.tree.leaves(m)) if mk.ndim > 0]
  total = sum(p.size for p in jax.tree.leaves(params))
  return total, sum(p.size for p in prunable), len(prunable)


def resnet18_formula(classes, in_ch=3):
  """CIFAR ResNet-18 from its definition: kernels and BN (scale+bias) parameters."""
  kernels = 3 * 3 * in_ch * 64
  bn = 2 * 64
  c_in = 64
  tensors = 1
  for width in (64, 128, 256, 512):
    for block in range(2):
      kernels += 9 * c_in * width + 9 * width * width
      bn += 4 * width
      tensors += 2
      if c_in != width:
        kernels += c_in * width
        bn += 2 * width
        tensors += 1
      c_in = width
  kernels += 512 * classes
  return kernels + bn + classes, kernels, tensors + 1


def test_lenet_counts():
  total, weights, tensors = counts(get_model("lenet_300_100", 10), (1, 28, 28, 1))
  assert weights == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
  assert total - weights == 410 and tensors == 3


@pytest.mark.parametrize("classes,size", [(10, 32), (200, 64)])
def test_resnet18_counts(classes, size):
  got = counts(get_model("resnet18", classes), (1, size, size, 3))
  assert got == resnet18_formula(classes)
  if classes == 10:
    assert got[0] == 11_173_962 and got[2] == 21  # "about 11.17 M", 21 weight tensors.


def test_vgg_counts():
  def formula(stages, classes):
    total, c_in = 0, 3
    for w in sum(stages, ()):
      total += 9 * c_in * w + w + 2 * w  # kernel, bias, BN
      c_in = w
    return total + 512 * classes + classes
  from autosparse_jax.models.vgg import STAGES
  assert counts(get_model("vgg16", 10), (1, 32, 32, 3))[0] == formula(STAGES["vgg16"], 10)
  assert counts(get_model("vgg19", 100), (1, 32, 32, 3))[0] == formula(STAGES["vgg19"], 100)


@pytest.mark.parametrize("name,shape,classes", [
    ("lenet_300_100", (2, 28, 28, 1), 10), pytest.param("resnet18", (2, 32, 32, 3), 10, marks=pytest.mark.slow),
    pytest.param("vgg16", (2, 32, 32, 3), 10, marks=pytest.mark.slow),
    pytest.param("vgg19", (2, 64, 64, 3), 200, marks=pytest.mark.slow)])  # slow: CI's budget.
def test_forward_shapes_narrow(name, shape, classes):
  model = get_model(name, classes, width=1 / 16)
  x = jnp.ones(shape)
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (shape[0], classes) and bool(jnp.all(jnp.isfinite(logits)))


def test_kaiming_normal_init():
  params = get_model("resnet18", 10).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
  k = np.asarray(params["stage4_block2"]["conv2"]["kernel"])  # 3x3x512x512, fan_out = 9*512
  assert abs(k.std() / np.sqrt(2 / (9 * 512)) - 1) < 0.01
  assert abs(np.mean(np.abs(k) > 2 * np.sqrt(2 / (9 * 512))) - 0.0455) < 0.002  # Untruncated tails.
  d = np.asarray(get_model("lenet_300_100", 10).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 784)))["params"]["Dense_0"]["kernel"])
  assert abs(d.std() / np.sqrt(2 / 784) - 1) < 0.01
