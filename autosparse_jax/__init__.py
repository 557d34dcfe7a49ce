"""autosparse_jax: pruning at initialization learned from iterative rewind pruning.

Importing the package (before jax starts its backend) turns off XLA:CPU's
YNNPACK library fusions unless XLA_FLAGS already sets them: those fusions pick
reduction orders that depend on the size of the vmapped seed axis, so seed k of
a num_seeds=3 run would differ in the last bits from the num_seeds=1 run of seed
k. Measured cost on the dev CPU: none (LeNet epoch 0.60 s either way). GPUs
ignore the flag. To keep XLA's default, set
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,... yourself.
"""
import os

_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
if _YNN_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_YNN_FLAG}=".strip()
