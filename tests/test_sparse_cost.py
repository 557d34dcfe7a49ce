"""What masks save: FLOPs against a hand count and XLA's own, bytes against their formula, and the compact
export's round trips (bit-exact), sizes and refusals."""
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import autosparse_jax as asj
from autosparse_jax import artefacts, masks as masks_lib, sparse_cost, structure
from autosparse_jax.models import get_model


def lenet(width=1.0):
  model = get_model("lenet_300_100", 10, width=width)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), train=False)["params"]
  return params, lambda p, x: model.apply({"params": p}, x, train=False)


def test_kept_macs_of_a_masked_lenet_equal_a_hand_count_exactly():
  params, apply_fn = lenet()
  masks = asj.prune("random", params, sparsity=0.9, key=jax.random.key(0))
  batch = 7
  out = asj.cost(params, masks, apply_fn, (batch, 28, 28, 1))
  hand = batch * sum(int(np.asarray(m).sum()) for _, m in masks_lib.prunable_items(masks, masks))
  assert out["kept_macs"] == hand  # Each kept weight multiplies once per example.
  dense = batch * sum(int(m.size) for _, m in masks_lib.prunable_items(masks, masks))
  assert out["macs_masked_layers_dense"] == dense
  assert out["inference_flops"] == out["inference_flops_dense"] - 2 * (dense - hand)
  assert 0 < out["training_flops"] < out["training_flops_dense"]


@pytest.mark.parametrize("batch", [1, 8])
def test_training_flops_are_rigls_forward_plus_twice_backward_at_the_training_batch(batch):
  """A masked 2-layer linear MLP (no biases, no activation): every FLOP is a kept multiply-add, so by hand
  a step is 3 x 2 x kept weights x batch (forward f, backward 2f), whatever loss trains it."""
  rng = np.random.default_rng(0)
  params = {"w1": jnp.asarray(rng.normal(size=(64, 32)), jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(32, 10)), jnp.float32)}
  apply_fn = lambda p, x: x.reshape(x.shape[0], -1) @ p["w1"] @ p["w2"]
  masks = asj.prune("random", params, sparsity=0.5, key=jax.random.key(0))
  kept = sum(int(np.asarray(m).sum()) for m in jax.tree.leaves(masks))
  out = asj.cost(params, masks, apply_fn, (1, 64), train_batch=batch)
  assert out["kept_macs"] == kept and out["inference_flops"] == 2 * kept
  assert out["training_flops"] == 3 * 2 * kept * batch
  assert out["training_flops_dense"] == 3 * 2 * (64 * 32 + 32 * 10) * batch


def test_a_dense_conv_net_costs_what_xla_counts_and_padding_is_counted_as_xla_does():
  model = get_model("resnet18", 10, width=0.125)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
  apply_fn = lambda p, x: model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x, train=False)
  params = variables["params"]
  ones = asj.init_masks(params)
  xla = jax.jit(apply_fn).lower(params, jnp.zeros((2, 32, 32, 3))).compile().cost_analysis()
  xla = xla[0] if isinstance(xla, (list, tuple)) else xla
  out = asj.cost(params, ones, apply_fn, (2, 32, 32, 3), dense_flops=sparse_cost._xla_flops(
      apply_fn, params, jnp.zeros((2, 32, 32, 3))))
  assert out["inference_flops"] == out["inference_flops_dense"] == float(xla["flops"])
  # Convolutions and the head are nearly all of it; the rest is BatchNorm, ReLU, adds.
  assert 0.9 * out["inference_flops_dense"] < 2 * out["kept_macs"] <= out["inference_flops_dense"]


def test_conv_multiply_adds_count_each_tap_where_it_meets_the_input():
  class OneConv(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Conv(2, (3, 3), padding="SAME", use_bias=False)(x).reshape(x.shape[0], -1)

  net = OneConv()
  params = net.init(jax.random.key(0), jnp.zeros((1, 5, 5, 1)))["params"]
  masks = {"Conv_0": {"kernel": jnp.zeros((3, 3, 1, 2), bool).at[0, 0, 0, 0].set(True).at[1, 1, 0, 1].set(True)}}
  out = sparse_cost.masked_macs(lambda p, x: net.apply({"params": p}, x), params, masks, jnp.zeros((1, 5, 5, 1)))
  # The corner tap (0, 0) meets the input at 4 x 4 of the 5 x 5 outputs, the centre tap at all 25.
  assert out["kept"] == 16 + 25
  assert out["macs"] == 2 * sum(a * b for a in (4, 5, 4) for b in (4, 5, 4))


def test_stored_bytes_follow_their_formula():
  params, _ = lenet()
  masks = asj.prune("magnitude", params, sparsity=0.5, structure="2:4")
  out = sparse_cost.stored_bytes(params, masks, nm=(2, 4))
  prunable = [(np.asarray(params_leaf), np.asarray(m)) for params_leaf, m in
              zip(jax.tree.leaves(params), jax.tree.leaves(masks)) if np.ndim(m)]
  other = sum(4 * int(np.prod(p.shape)) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks))
              if not np.ndim(m))
  assert out["dense"] == 4 * sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert out["bitmask"] == other + sum(4 * int(m.sum()) + math.ceil(m.size / 8) for _, m in prunable)
  assert out["nm"] == other + sum(4 * int(m.sum()) + math.ceil(int(m.sum()) * 2 / 8) for _, m in prunable)


@pytest.mark.parametrize("fmt", ["bitmask", "bcoo", "nm"])
def test_the_export_round_trips_bit_exact_and_its_size_is_the_formulas(tmp_path, fmt):
  params, _ = lenet()
  masks = (asj.prune("magnitude", params, sparsity=0.5, structure="2:4") if fmt == "nm"
           else asj.prune("random", params, sparsity=0.5, key=jax.random.key(3)))
  path = str(tmp_path / f"lenet.{fmt}.npz")
  written = asj.export(params, masks, path, format=fmt, structure="2:4" if fmt == "nm" else None)
  got_params, got_masks = asj.load_export(path, like=params)
  for a, b, m in zip(jax.tree.leaves(params), jax.tree.leaves(got_params), jax.tree.leaves(masks)):
    np.testing.assert_array_equal(np.asarray(a) * (np.asarray(m) if np.ndim(m) else 1), np.asarray(b))
  for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(got_masks)):
    np.testing.assert_array_equal(np.broadcast_to(np.asarray(a), np.shape(b)), np.asarray(b))
  size = os.path.getsize(path)
  assert written["file_bytes"] == size
  if fmt != "bcoo":  # Values + bits (or indices) + the dense biases: the formula exactly, the file within 1%.
    formula = sparse_cost.stored_bytes(params, masks, nm=(2, 4))["nm" if fmt == "nm" else "bitmask"]
    if fmt == "nm":  # One uint8 per index in the file (the formula packs them in 2 bits).
      formula += sum(int(np.asarray(m).sum()) for m in jax.tree.leaves(masks) if np.ndim(m)) * 3 // 4
    assert written["payload_bytes"] == formula
    assert abs(size - formula) < 0.01 * formula, (size, formula)  # The container: npz headers, metadata.
  nested_params, _ = asj.load_export(path)  # Without like=: nested dicts by path.
  assert set(nested_params) == set(params)


def test_the_nm_export_is_the_2_4_semi_structured_layout(tmp_path):
  kernel = jnp.arange(8 * 3, dtype=jnp.float32).reshape(8, 3)  # [inputs, outputs].
  params = {"layer": {"kernel": kernel}}
  masks = asj.prune("magnitude", params, sparsity=0.5, structure="2:4")
  path = str(tmp_path / "nm.npz")
  asj.export(params, masks, path, format="nm", structure="2:4")
  with np.load(path) as data:
    values, indices = data["values_0"], data["indices_0"]
  assert values.shape == (3, 2, 2) and indices.shape == (3, 2, 2)  # [out, K/4, 2]
  for o in range(3):  # Row o of W^T [out, K]: in each group of 4 inputs, the 2 largest |w|, in order.
    row = np.asarray(kernel)[:, o]
    for g in range(2):
      group = row[4 * g:4 * g + 4]
      keep = np.sort(np.argsort(-np.abs(group), kind="stable")[:2])
      np.testing.assert_array_equal(indices[o, g], keep)
      np.testing.assert_array_equal(values[o, g], group[keep])


def test_a_damaged_or_foreign_export_is_refused_naming_it(tmp_path):
  params, _ = lenet(width=0.1)
  masks = asj.prune("random", params, sparsity=0.5, key=jax.random.key(0))
  path = str(tmp_path / "e.npz")
  asj.export(params, masks, path)
  with open(path, "rb") as f:
    data = f.read()
  for damaged in (data[: len(data) // 2], b"", b"not a zip file"):
    with open(path, "wb") as f:
      f.write(damaged)
    with pytest.raises(artefacts.DamagedFile, match=f"{path} is not a readable autosparse export"):
      asj.load_export(path)
  np.savez(path, other=np.zeros(3))
  with pytest.raises(ValueError, match=f"{path} is not a readable autosparse export"):
    asj.load_export(path)
  with pytest.raises(ValueError, match="format='nm' needs structure='N:M'"):
    asj.export(params, masks, path, format="nm")
  with pytest.raises(ValueError, match="layer Dense_1/kernel has 30 inputs per output"):
    asj.export(params, masks, path, format="nm", structure="2:4")
  params, _ = lenet()
  with pytest.raises(ValueError, match="masks are not 2:4"):
    asj.export(params, asj.prune("random", params, sparsity=0.5, key=jax.random.key(0)), path, format="nm",
               structure="2:4")


def test_the_prune_job_exports_its_trained_networks_and_reports_their_cost(tmp_path):
  from autosparse_jax.lab import jobs
  from tests.conftest import apply_overrides, load_config
  config = apply_overrides(load_config("prune", "lenet_digits"), {
      "train.epochs": 1, "sparsity": 0.5, "prune.structure": "2:4", "export": "nm", "tensorboard": False})
  results = jobs.run(config, str(tmp_path / "wd"))
  run = results["runs"][0]
  assert run["structure"] == "2:4" and len(run["export"]) == 1
  assert run["inference_flops"] < run["inference_flops_dense"]
  assert run["bytes"]["nm"] == run["bytes"]["bitmask"] < run["bytes"]["dense"]  # 2:4: 2 index bits per kept = 1 bit a weight.
  params, masks = asj.load_export(run["export"][0])
  for name, m in masks_lib.prunable_items(masks, masks):
    groups = np.asarray(structure.parse("2:4").to_groups(jnp.asarray(m), name))
    assert np.all(groups.sum(axis=1) == 2), name
  for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)):
    assert not np.any(np.asarray(p)[~np.broadcast_to(np.asarray(m), np.shape(p))])
