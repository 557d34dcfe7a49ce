r"""AutoS application through the project's sharded code path (autos/apply.py).

  python benchmarks/autos_apply.py --backbone=resnet18 --dtype=bfloat16 --weights=11164352

Scores `weights` random (theta_0, g_0) rows with a freshly initialised scorer
(eval mode; the cost does not depend on the trained values) through
score_features: padding, host chunks of --chunk_weights, lax.map over
batches, shard_map (and pmap) over all devices. Reports weights/s after one
warm-up pass (compilation excluded), and the projected time for a full
ResNet-18 (11.16 M prunable weights).
"""
import json
import time

from absl import app, flags

import autosparse_jax  # noqa: F401  (XLA flags before jax starts)
import jax
import jax.numpy as jnp
import numpy as np

from autosparse_jax.autos import apply
from autosparse_jax.autos.scorer import make_scorer

FLAGS = flags.FLAGS
flags.DEFINE_string("backbone", "mlp", "resnet18 | vgg19 | mlp")
flags.DEFINE_string("dtype", "float32", "float32 | bfloat16")
flags.DEFINE_integer("weights", 266200, "Weights to score (LeNet-300-100: 266200, ResNet-18: 11164352).")
flags.DEFINE_integer("batch", 4096, "Weights per device batch.")
flags.DEFINE_integer("chunk_weights", 1 << 22, "Weights per host pass.")
flags.DEFINE_string("shardings", "shard_map,pmap", "Code paths to time.")
flags.DEFINE_string("json", "", "Also write the figures here.")
RESNET18_WEIGHTS = 11164352


def main(argv):
  del argv
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[FLAGS.dtype]
  module = make_scorer(FLAGS.backbone, 2, 1.0, dtype)
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((2, 2)), train=False)
  scorer = apply.TrainedScorer(module, variables, ("theta0", "g0"), np.zeros(2, np.float32),
                               np.ones(2, np.float32), {})
  x = np.random.default_rng(0).normal(size=(FLAGS.weights, 2)).astype(np.float32)
  rows = []
  for sharding in FLAGS.shardings.split(","):
    run = lambda: apply.score_features(scorer, x, FLAGS.batch, FLAGS.chunk_weights, sharding)
    t = time.perf_counter()
    run()
    first = time.perf_counter() - t
    t = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - t
    assert out.shape == (FLAGS.weights,) and np.all(np.isfinite(out))
    row = {"backbone": FLAGS.backbone, "dtype": FLAGS.dtype, "sharding": sharding,
           "devices": jax.device_count(), "device": jax.devices()[0].device_kind,
           "weights": FLAGS.weights, "batch": FLAGS.batch, "seconds": seconds,
           "first_call_seconds": first, "weights_per_second": FLAGS.weights / seconds,
           "resnet18_projected_seconds": RESNET18_WEIGHTS / (FLAGS.weights / seconds)}
    rows.append(row)
    print(f"{FLAGS.backbone} {FLAGS.dtype} {sharding} on {row['devices']} x {row['device']}: "
          f"{FLAGS.weights} weights in {seconds:.2f} s = {row['weights_per_second']:.3g} weights/s "
          f"(first call {first:.1f} s); all of ResNet-18: {row['resnet18_projected_seconds']:.1f} s", flush=True)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
