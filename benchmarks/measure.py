"""Measurements shared by the benchmark scripts: a matmul peak and HLO-level FLOP counts."""
import time

import jax
import jax.numpy as jnp


def matmul_peak_gflops(n=2048, dtype=jnp.float32, repeats=10, precision=None):
  """Best GFLOP/s of an n x n matmul on the default device (JAX's default precision unless given)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  f = jax.jit(lambda x: jnp.matmul(x, x, precision=precision))
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best / 1e9


def hlo_flops(jitted, *args):
  """FLOPs of jitted(*args) by XLA's cost analysis of the program lowered for the CPU.

  The HLO-level count is the same on every backend; GPU analyses of compiled programs
  miss the FLOPs of library calls (cuBLAS / cuDNN) and jax 0.11 analyses no lowered
  GPU program, so the program is lowered for the CPU from abstract arguments.
  """
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu), args)
  analysis = jitted.lower(*abstract).cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", float("nan")))
