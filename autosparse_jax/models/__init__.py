"""Model registry: name -> flax.linen module factory."""
import jax.numpy as jnp

from autosparse_jax.errors import ConfigError, unknown_name_message

from autosparse_jax.models.conv import CONV_IMPLS
from autosparse_jax.models.lenet import LeNet300100
from autosparse_jax.models.resnet import ResNet
from autosparse_jax.models.vgg import STAGES, VGG

MODELS = ("lenet_300_100", "resnet18", "vgg16", "vgg19")

# config.dtype: the compute dtype of the forward and backward passes. Parameters, optimizer
# state, BatchNorm statistics, the loss and pruning scores stay float32 (see training.py).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def get_model(name, num_classes, width=1.0, dtype=jnp.float32, conv="xla"):
  """Returns the flax module. `width` scales channel counts (1.0 = the paper's nets).

  `conv` ("xla", "im2col" or "auto"; models/conv.py) is how the conv nets convolve:
  "xla" lax.conv everywhere (the default, as before), "im2col" im2col + matmul
  everywhere, "auto" im2col for the convs measured faster that way on CPU (XLA's
  conv elsewhere, and always on GPU/TPU: decided from jax.default_backend() when
  traced). Params, their names and values do not depend on it. LeNet ignores it.
  """
  if conv not in CONV_IMPLS:
    raise ConfigError(unknown_name_message("config.conv", conv, CONV_IMPLS))
  if name == "lenet_300_100":
    return LeNet300100(num_classes=num_classes, hidden=tuple(max(1, int(h * width)) for h in (300, 100)),
                       dtype=dtype)
  if name == "resnet18":
    return ResNet(num_classes=num_classes, base_width=max(1, int(64 * width)), dtype=dtype, conv=conv)
  if name in STAGES:
    return VGG(stages=STAGES[name], num_classes=num_classes, width_scale=width, dtype=dtype, conv=conv)
  raise ConfigError(unknown_name_message("config.model", name, MODELS))
