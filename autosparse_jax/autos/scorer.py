"""The AutoS scorer: a network that maps one weight's features to a score.

One sample is one weight of the network being pruned; its input is a feature
vector of `n_features` numbers (default 2: theta_0 and g_0, the weight and its
gradient at initialisation), its output one unbounded number (no output
activation), the predicted survival score.

Backbones (`AutoSScorer.backbone`):
  resnet18  encoder Dense(n_features->64)+BN+ReLU, Dense(64->3072)+BN+ReLU, reshaped
            to a 32x32x3 "image", then the CIFAR ResNet-18 of models/resnet.py with
            a 1-unit head (the paper's scorer).
  vgg19     the same encoder lifting to 64x64x3 (Dense(64->12288)), then VGG-19-BN
            of models/vgg.py with a 1-unit head.
  mlp       Dense n_features-16-64-1024-1024-64-1 with BN+ReLU between: small
            enough for CPU tests and quick experiments.

The backbones are the models of `autosparse_jax.models` (get_model(name,
num_classes=1, width, dtype)). BatchNorm everywhere uses the models' PyTorch
settings (momentum 0.1 in torch terms, eps 1e-5); in the encoder and the MLP it
normalises each feature over the batch of weights (torch BatchNorm1d).

`dtype` is the compute dtype (e.g. jnp.bfloat16); parameters and batch
statistics stay float32 and the predictions are returned as float32. `width`
scales the backbone's channels (and the MLP's hidden widths); 1 is the paper's
size, narrow widths are for tests. The encoder's sizes do not scale: the lift
has to produce a 32x32x3 (64x64x3) image.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from autosparse_jax.errors import unknown_name_message
from autosparse_jax.models import get_model
from autosparse_jax.models.layers import batch_norm, kaiming_fan_in

BACKBONES = ("resnet18", "vgg19", "mlp")
# The image the encoder lifts one weight's features to, per conv backbone.
IMAGE_SHAPES = {"resnet18": (32, 32, 3), "vgg19": (64, 64, 3)}
ENCODER_HIDDEN = 64
MLP_HIDDEN = (16, 64, 1024, 1024, 64)


def _check_backbone(backbone):
  if backbone not in BACKBONES:
    raise ValueError(unknown_name_message("backbone", backbone, BACKBONES))


class AutoSScorer(nn.Module):
  """features [batch, n_features] -> predictions [batch] (float32)."""
  backbone: str = "resnet18"
  n_features: int = 2
  width: float = 1.0
  dtype: Any = jnp.float32

  def _dense_bn_relu(self, x, features, train, name):
    x = nn.Dense(features, kernel_init=kaiming_fan_in, dtype=self.dtype, name=f"{name}_dense")(x)
    x = batch_norm(use_running_average=not train, dtype=self.dtype, name=f"{name}_bn")(x)
    return nn.relu(x)

  @nn.compact
  def __call__(self, features, train: bool):
    _check_backbone(self.backbone)
    if features.ndim != 2 or features.shape[-1] != self.n_features:
      raise ValueError(f"AutoSScorer expects features of shape [batch, {self.n_features}] "
                       f"(one row per weight), got {features.shape}.")
    x = features.astype(self.dtype)
    if self.backbone == "mlp":
      for i, w in enumerate(MLP_HIDDEN):
        x = self._dense_bn_relu(x, max(1, int(w * self.width)), train, f"mlp{i + 1}")
      out = nn.Dense(1, kernel_init=kaiming_fan_in, dtype=self.dtype, name="head")(x)
    else:
      shape = IMAGE_SHAPES[self.backbone]
      x = self._dense_bn_relu(x, ENCODER_HIDDEN, train, "encoder1")
      x = self._dense_bn_relu(x, shape[0] * shape[1] * shape[2], train, "encoder2")
      x = x.reshape((x.shape[0],) + shape)
      net = get_model(self.backbone, num_classes=1, width=self.width, dtype=self.dtype)
      out = net.clone(parent=self, name="backbone")(x, train=train)
    return out.reshape(out.shape[0]).astype(jnp.float32)


def make_scorer(backbone="resnet18", n_features=2, width=1, dtype=jnp.float32):
  """The scorer module; ValueError naming the allowed backbones for an unknown one."""
  _check_backbone(backbone)
  if int(n_features) < 1:
    raise ValueError(f"n_features={n_features} must be >= 1.")
  return AutoSScorer(backbone=backbone, n_features=int(n_features), width=float(width), dtype=dtype)
