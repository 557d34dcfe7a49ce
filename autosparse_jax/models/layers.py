"""Initialisers and norms shared by the models (PyTorch-equivalent settings)."""
import functools

import flax.linen as nn

# Kaiming-normal as torch.nn.init.kaiming_normal_: untruncated normal ("normal" in jax), gain sqrt(2).
kaiming_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# torch BatchNorm2d(momentum=0.1, eps=1e-5) == flax momentum 0.9 (decay of the running average).
batch_norm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)
