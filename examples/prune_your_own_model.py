r"""Prune your own model: a Flax CNN that is in no registry, pruned at init by six criteria.

  python examples/prune_your_own_model.py [--sparsity=0.9] [--epochs=15]

The network, the data pipeline and the training loop are the user's own (scikit-learn's
embedded 8x8 digits, no download); autosparse_jax only scores and prunes (asj.prune) and
keeps pruned weights at zero during training (asj.masked). Prints a table of test
accuracies, one row per criterion. About 40 s on 2 CPU cores.
"""
import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import autosparse_jax as asj
from autosparse_jax.data import embedded


class SmallCNN(nn.Module):
  """The user's model: two convolutions and a classifier."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    x = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(x))
    x = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
    return nn.Dense(10)(x)


def user_data():
  """The user's own arrays: digits as float images in [0, 1] and integer labels."""
  _, splits = embedded.digits()
  (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
  to_float = lambda x: np.asarray(x, np.float32) / 255.0
  return to_float(x_train), np.asarray(y_train), to_float(x_test), np.asarray(y_test)


def train(net, params, masks, data, epochs, seed):
  """A plain training loop: Adam through asj.masked, batches of 64, accuracy on the test set."""
  x_train, y_train, x_test, y_test = data
  tx = asj.masked(optax.adam(1e-3), masks)
  params = asj.apply_masks(params, masks)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(net.apply({"params": p}, x), y).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    order = rng.permutation(len(y_train))
    for i in range(0, len(order) - 63, 64):
      idx = order[i:i + 64]
      params, opt_state = step(params, opt_state, x_train[idx], y_train[idx])
  predictions = jnp.argmax(net.apply({"params": params}, x_test), -1)
  return float(jnp.mean(predictions == y_test)), params


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sparsity", type=float, default=0.9)
  parser.add_argument("--epochs", type=int, default=15)
  args = parser.parse_args()
  start = time.time()
  data = user_data()
  net = SmallCNN()
  params = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  apply_fn = lambda p, x: net.apply({"params": p}, x)
  batches = [(data[0][i:i + 128], data[1][i:i + 128]) for i in range(0, len(data[1]), 128)]
  key = jax.random.key(1)
  runs = {
      "dense": asj.init_masks(params),  # All ones: the unpruned baseline.
      "random": asj.prune("random", params, sparsity=args.sparsity, key=key),
      "magnitude": asj.prune("magnitude", params, sparsity=args.sparsity),
      "snip": asj.prune("snip", params, apply_fn=apply_fn, batches=batches, sparsity=args.sparsity, key=key),
      "grasp": asj.prune("grasp", params, apply_fn=apply_fn, batches=batches, sparsity=args.sparsity, key=key),
      "synflow": asj.prune("synflow", params, apply_fn=apply_fn, input_shape=(1, 8, 8, 1),
                           sparsity=args.sparsity),
  }
  if "lenet_mnist" in asj.autos.pretrained_names():
    runs["autos (pretrained lenet_mnist)"] = asj.prune(
        "autos", params, apply_fn=apply_fn, batches=batches, sparsity=args.sparsity,
        scorer=asj.autos.pretrained("lenet_mnist"))
  print(f"SmallCNN on digits, {args.epochs} epochs of Adam, pruned at init to sparsity {args.sparsity:g}\n")
  print("| criterion | kept weights | test accuracy |\n|---|---|---|")
  for name, masks in runs.items():
    accuracy, trained = train(net, params, masks, data, args.epochs, seed=0)
    kept = sum(int(m.sum()) for m in jax.tree.leaves(masks) if m.ndim > 0)
    pruned_nonzero = sum(int(jnp.sum((p != 0) & ~m)) for p, m in zip(jax.tree.leaves(trained), jax.tree.leaves(masks)))
    assert pruned_nonzero == 0, f"{name}: pruned weights moved"
    print(f"| {name} | {kept} | {100 * accuracy:.2f}% |", flush=True)
  print(f"\n{time.time() - start:.0f} s")


if __name__ == "__main__":
  main()
