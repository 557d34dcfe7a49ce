"""ResNet-18 for CIFAR / Tiny-ImageNet: 3x3 stride-1 stem, no max-pool, BasicBlocks."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from autosparse_jax.models.conv import conv_general_dilated_for
from autosparse_jax.models.layers import batch_norm, kaiming_fan_in, kaiming_fan_out


class BasicBlock(nn.Module):
  features: int
  strides: int = 1
  dtype: jnp.dtype = jnp.float32
  conv: str = "xla"  # models/conv.py: "xla", "im2col" or "auto".

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda f, k, s, name: nn.Conv(
        f, (k, k), (s, s), padding=((k // 2, k // 2),) * 2, use_bias=False,
        kernel_init=kaiming_fan_out, dtype=self.dtype, name=name,
        conv_general_dilated=conv_general_dilated_for(self.conv))
    norm = lambda name: batch_norm(self.conv, use_running_average=not train, dtype=self.dtype, name=name)
    y = nn.relu(norm("bn1")(conv(self.features, 3, self.strides, "conv1")(x)))
    y = norm("bn2")(conv(self.features, 3, 1, "conv2")(y))
    if self.strides != 1 or x.shape[-1] != self.features:
      x = norm("shortcut_bn")(conv(self.features, 1, self.strides, "shortcut_conv")(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  num_classes: int = 10
  base_width: int = 64
  dtype: jnp.dtype = jnp.float32
  conv: str = "xla"  # How every conv runs (models/conv.py); the params do not depend on it.

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    x = nn.Conv(self.base_width, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                kernel_init=kaiming_fan_out, dtype=self.dtype, name="stem_conv",
                conv_general_dilated=conv_general_dilated_for(self.conv))(x)
    x = nn.relu(batch_norm(self.conv, use_running_average=not train, dtype=self.dtype, name="stem_bn")(x))
    for stage, blocks in enumerate(self.stage_sizes):
      for block in range(blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.base_width * 2**stage, strides, self.dtype, conv=self.conv,
                       name=f"stage{stage + 1}_block{block + 1}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=kaiming_fan_in, dtype=self.dtype, name="head")(x)
