r"""AutoS scorer throughput: inference over many weights, and one training step.

  python benchmarks/autos_scoring.py [--configs=resnet18:float32,resnet18:bfloat16,vgg19:float32,mlp:float32]
      [--batch=4096] [--iters=20] [--train_configs=resnet18:float32,resnet18:bfloat16]
      [--train_batch=1024] [--width=1] [--json=out.json]

Scoring: the scorer in inference mode (BatchNorm running statistics) on batches
of --batch weights (2 features each: theta_0, g_0), --iters batches per timed
call, median of --repeats calls after a warm-up. Reports weights scored per
second, the projected time to score every prunable weight of ResNet-18 (its Conv
and Dense kernels, 11.2 M), and the achieved TFLOP/s (XLA's cost analysis of
one batch) against matmul peaks measured on the same machine.

Training: one Adam step (MSE loss, BatchNorm in train mode) on --train_batch
weights, median over --train_steps steps after a warm-up.
"""
import json
import time

from absl import app, flags

import autosparse_jax  # noqa: F401  (sets XLA flags before jax starts)
import jax
import jax.numpy as jnp
import numpy as np
import optax

from autosparse_jax import masks as masks_lib
from autosparse_jax.autos import make_scorer
from autosparse_jax.models import get_model
from measure import hlo_flops, matmul_peak_gflops  # benchmarks/measure.py

FLAGS = flags.FLAGS
flags.DEFINE_list("configs", ["resnet18:float32", "resnet18:bfloat16", "vgg19:float32", "mlp:float32"],
                  "backbone[:dtype[:batch]] to time in inference (batch default --batch).")
flags.DEFINE_list("train_configs", ["resnet18:float32", "resnet18:bfloat16"],
                  "backbone[:dtype[:batch]] whose training step is timed (batch default --train_batch).")
flags.DEFINE_integer("batch", 4096, "Weights per inference batch.")
flags.DEFINE_integer("iters", 20, "Inference batches per timed call.")
flags.DEFINE_integer("repeats", 3, "Timed calls (median).")
flags.DEFINE_integer("train_batch", 1024, "Weights per training step.")
flags.DEFINE_integer("train_steps", 10, "Timed training steps (median).")
flags.DEFINE_float("width", 1.0, "Scorer width (1 = full size; small for CPU smoke runs).")
flags.DEFINE_integer("matmul_n", 0, "Matmul peak size (0 = 2048 on CPU, 8192 elsewhere).")
flags.DEFINE_string("json", "", "Also write the figures to this JSON file (rewritten after each result).")

from autosparse_jax.models import DTYPES  # noqa: E402


def resnet18_prunable_weights():
  """Number of Conv and Dense kernel entries of ResNet-18 (CIFAR-10): the weights AutoS scores."""
  model = get_model("resnet18", 10)
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                             train=False))["params"]
  masks = jax.eval_shape(lambda: masks_lib.init_masks(jax.tree.map(jnp.zeros_like, params)))
  return sum(p.size for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)) if m.ndim > 0)


def parse(config, default_batch):
  """backbone[:dtype[:batch]] -> (backbone, dtype name, batch)."""
  backbone, dtype, batch = (config.split(":") + ["", ""])[:3]
  if dtype and dtype not in DTYPES:
    raise ValueError(f"dtype {dtype!r} in {config!r}: allowed {', '.join(DTYPES)}")
  return backbone, dtype or "float32", int(batch or default_batch)


def init(model, batch):
  # An "rbg" key: XLA compiles ResNet-18's threefry initialisers slowly (~13 s on CPU).
  return jax.jit(lambda k: model.init(k, jnp.ones((batch, model.n_features)), train=False))(
      jax.random.key(0, impl="rbg"))


def features(key, n):
  """theta_0 ~ Kaiming-scale normals, g_0 ~ small normals: the scorer's input distribution."""
  k1, k2 = jax.random.split(key)
  return jnp.stack([0.05 * jax.random.normal(k1, (n,)), 1e-3 * jax.random.normal(k2, (n,))], axis=1)


def time_inference(backbone, dtype_name, batch, total_weights):
  model = make_scorer(backbone, width=FLAGS.width, dtype=DTYPES[dtype_name])
  variables = init(model, 2)
  num_params = sum(p.size for p in jax.tree.leaves(variables["params"]))
  score = jax.jit(lambda v, x: model.apply(v, x, train=False))
  xs = [features(jax.random.PRNGKey(i), batch) for i in range(FLAGS.iters)]
  flops = hlo_flops(score, variables, xs[0])
  t = time.perf_counter()
  jax.block_until_ready(score(variables, xs[0]))
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(FLAGS.repeats + 1):  # The first call warms up.
    t = time.perf_counter()
    jax.block_until_ready([score(variables, x) for x in xs])
    times.append(time.perf_counter() - t)
  seconds = float(np.median(times[1:])) / FLAGS.iters  # Per batch.
  rate = batch / seconds
  return {"kind": "inference", "backbone": backbone, "dtype": dtype_name, "width": FLAGS.width,
          "params": num_params, "batch": batch, "seconds_per_batch": seconds,
          "weights_per_s": rate, "projected_s_resnet18_all_weights": total_weights / rate,
          "gflop_per_weight": flops / batch / 1e9, "tflops": flops / seconds / 1e12,
          "compile_s": compile_s}


def time_training(backbone, dtype_name, batch):
  model = make_scorer(backbone, width=FLAGS.width, dtype=DTYPES[dtype_name])
  variables = init(model, 2)
  tx = optax.adam(1e-3)

  def step(params, batch_stats, opt_state, x, y):
    def loss_fn(p):
      pred, upd = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                              mutable=["batch_stats"])
      return jnp.mean((pred - y) ** 2), upd["batch_stats"]
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  jitted = jax.jit(step, donate_argnums=(0, 1, 2))
  x = features(jax.random.PRNGKey(1), batch)
  y = jax.nn.sigmoid(50.0 * jnp.abs(x[:, 0]))
  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  flops = hlo_flops(jitted, params, batch_stats, opt_state, x, y)
  t = time.perf_counter()
  params, batch_stats, opt_state, loss = jax.block_until_ready(jitted(params, batch_stats, opt_state, x, y))
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(FLAGS.train_steps):
    t = time.perf_counter()
    params, batch_stats, opt_state, loss = jax.block_until_ready(
        jitted(params, batch_stats, opt_state, x, y))
    times.append(time.perf_counter() - t)
  seconds = float(np.median(times))
  return {"kind": "train_step", "backbone": backbone, "dtype": dtype_name, "width": FLAGS.width,
          "batch": batch, "seconds_per_step": seconds, "weights_per_s": batch / seconds,
          "tflops": flops / seconds / 1e12, "compile_s": compile_s, "final_loss": float(loss)}


def main(argv):
  del argv
  device = jax.devices()[0]
  n = FLAGS.matmul_n or (2048 if device.platform == "cpu" else 8192)
  total = resnet18_prunable_weights()
  out = {"device": f"{device.platform}: {device.device_kind}", "jax": jax.__version__,
         "resnet18_prunable_weights": total, "matmul_n": n,
         "matmul_peak_tflops": {d: matmul_peak_gflops(n, DTYPES[d]) / 1e3 for d in DTYPES},
         "results": []}
  peaks = out["matmul_peak_tflops"]
  print(f"device {out['device']}, jax {out['jax']}, matmul peak (n={n}) f32 {peaks['float32']:.1f} / "
        f"bf16 {peaks['bfloat16']:.1f} TFLOP/s; ResNet-18 prunable weights {total}", flush=True)

  def record(r):
    r["pct_of_matmul_peak"] = 100 * r["tflops"] / peaks[r["dtype"]]
    out["results"].append(r)
    if FLAGS.json:
      with open(FLAGS.json, "w") as f:
        json.dump(out, f, indent=2)

  for pair in FLAGS.configs:
    r = time_inference(*parse(pair, FLAGS.batch), total)
    record(r)
    print(f"score {r['backbone']:8s} {r['dtype']:8s} batch {r['batch']}: {1e3 * r['seconds_per_batch']:.2f} ms"
          f"/batch, {r['weights_per_s']:.3g} weights/s, all ResNet-18 weights in "
          f"{r['projected_s_resnet18_all_weights']:.1f} s, {r['gflop_per_weight']:.3f} GFLOP/weight, "
          f"{r['tflops']:.1f} TFLOP/s ({r['pct_of_matmul_peak']:.0f}% of {r['dtype']} peak), "
          f"compile {r['compile_s']:.1f} s", flush=True)
  for pair in FLAGS.train_configs:
    r = time_training(*parse(pair, FLAGS.train_batch))
    record(r)
    print(f"train {r['backbone']:8s} {r['dtype']:8s} batch {r['batch']}: {1e3 * r['seconds_per_step']:.2f} ms"
          f"/step, {r['weights_per_s']:.3g} weights/s, {r['tflops']:.1f} TFLOP/s "
          f"({r['pct_of_matmul_peak']:.0f}% of {r['dtype']} peak), compile {r['compile_s']:.1f} s, "
          f"loss {r['final_loss']:.4f}", flush=True)


if __name__ == "__main__":
  app.run(main)
