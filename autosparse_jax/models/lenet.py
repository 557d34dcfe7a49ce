"""LeNet-300-100: Dense 784-300-100-10 with ReLU and biases."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from autosparse_jax.models.layers import kaiming_fan_in


class LeNet300100(nn.Module):
  num_classes: int = 10
  hidden: Sequence[int] = (300, 100)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # No BatchNorm or dropout.
    x = x.reshape((x.shape[0], -1)).astype(self.dtype)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, kernel_init=kaiming_fan_in, dtype=self.dtype)(x))
    return nn.Dense(self.num_classes, kernel_init=kaiming_fan_in, dtype=self.dtype)(x)
