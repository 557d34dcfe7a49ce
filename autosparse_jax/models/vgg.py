"""VGG-16 / VGG-19 with BatchNorm, open_lth "lottery" style: single Dense head.

3x3 convs with bias + BN + ReLU, 2x2 max-pool after each stage but the last,
then average pooling and Dense(classes). open_lth pools 2x2 on the 2x2 map of a
32x32 input; global average pooling is the same there and also fits 64x64 inputs.
"""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from autosparse_jax.models.conv import conv_general_dilated_for
from autosparse_jax.models.layers import batch_norm, kaiming_fan_in, kaiming_fan_out

STAGES = {
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


class VGG(nn.Module):
  stages: Sequence[Sequence[int]] = STAGES["vgg16"]
  num_classes: int = 10
  width_scale: float = 1.0
  dtype: jnp.dtype = jnp.float32
  conv: str = "xla"  # How every conv runs (models/conv.py); the params do not depend on it.

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    for s, widths in enumerate(self.stages):
      if s > 0:
        x = nn.max_pool(x, (2, 2), (2, 2))
      for i, width in enumerate(widths):
        x = nn.Conv(max(1, int(width * self.width_scale)), (3, 3), padding=((1, 1), (1, 1)),
                    kernel_init=kaiming_fan_out, dtype=self.dtype, name=f"conv{s + 1}_{i + 1}",
                    conv_general_dilated=conv_general_dilated_for(self.conv))(x)
        x = batch_norm(self.conv, use_running_average=not train, dtype=self.dtype,
                       name=f"bn{s + 1}_{i + 1}")(x)
        x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=kaiming_fan_in, dtype=self.dtype, name="head")(x)
