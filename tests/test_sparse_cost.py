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
from autosparse_jax import artefacts, compact_export, masks as masks_lib, sparse_cost, structure
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
  # N values per group of 4 and their 2-bit indices (LeNet's 2:4 groups all keep exactly 2).
  assert out["nm"] == other + sum(4 * (m.size // 2) + math.ceil(m.size // 2 * 2 / 8) for _, m in prunable)


@pytest.mark.parametrize("fmt", ["bitmask", "bcoo", "nm"])
def test_the_export_round_trips_bit_exact_and_its_size_is_the_formulas(tmp_path, fmt):
  params, _ = lenet()
  masks = (asj.prune("magnitude", params, sparsity=0.5, structure="2:4") if fmt == "nm"
           else asj.prune("random", params, sparsity=0.5, key=jax.random.key(3)))
  path = str(tmp_path / f"lenet.{fmt}.npz")
  written = asj.export(params, masks, path, format=fmt)  # nm: structure='2:4', the default.
  got_params, got_masks = asj.load_export(path, like=params)
  for a, b, m in zip(jax.tree.leaves(params), jax.tree.leaves(got_params), jax.tree.leaves(masks)):
    np.testing.assert_array_equal(np.asarray(a) * (np.asarray(m) if np.ndim(m) else 1), np.asarray(b))
  for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(got_masks)):
    np.testing.assert_array_equal(np.broadcast_to(np.asarray(a), np.shape(b)), np.asarray(b))
  size = os.path.getsize(path)
  assert written["file_bytes"] == size
  if fmt != "bcoo":  # Values + bits (or packed indices) + the dense biases: asj.cost's bytes exactly, the file
    formula = sparse_cost.stored_bytes(params, masks, nm=(2, 4))["nm" if fmt == "nm" else "bitmask"]  # within 1%.
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
    values, packed = data["values_0"], data["indices_0"]
  assert values.shape == (3, 2, 2) and packed.shape == (3,) and packed.dtype == np.uint8  # 12 indices, 4 a byte.
  indices = compact_export.unpack_indices(packed, 12, 2).reshape(3, 2, 2)  # [out, K/4, 2]
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
  with pytest.raises(ValueError, match=r"masks are not 2:4: layer Dense_0/kernel's group \[\d+, \d+\]\.\.\[\d+, "
                     r"\d+\] \(the 4 consecutive inputs of one output\) keeps [34] of 4"):
    asj.export(params, masks, path, format="nm")  # structure='2:4' by default: the first group keeping more.
  with pytest.raises(ValueError, match="structure='block:2x2' is not N:M"):
    asj.export(params, masks, path, format="nm", structure="block:2x2")
  nm = asj.prune("magnitude", params, sparsity=0.5, structure="2:4", structure_fallback="dense")
  nm["Dense_1"]["kernel"] = nm["Dense_1"]["kernel"].at[0, 0].set(False)  # Left dense, then one weight pruned.
  with pytest.raises(ValueError, match=r"layer Dense_1/kernel \(shape \(30, 10\), layout io\) has 30 inputs per "
                     "output, not a multiple of M=4. Its mask is not all ones"):
    asj.export(params, nm, path, format="nm")
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
  assert run["dense_layers"] == []
  params, masks = asj.load_export(run["export"][0])
  for name, m in masks_lib.prunable_items(masks, masks):
    groups = np.asarray(structure.parse("2:4").to_groups(jnp.asarray(m), name))
    assert np.all(groups.sum(axis=1) == 2), name
  for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks)):
    assert not np.any(np.asarray(p)[~np.broadcast_to(np.asarray(m), np.shape(p))])


def test_nm_indices_are_packed_lsb_first_as_the_hand_packed_bytes():
  # 2:4: 2 bits an index, four to a byte, the first index in bits 0-1 (compact_export's docstring).
  indices = [0, 1, 2, 3, 1, 3, 0, 2, 3, 2]
  packed = compact_export.pack_indices(indices, 2)
  np.testing.assert_array_equal(packed, np.array([0b11100100, 0b10001101, 0b00001011], np.uint8))  # E4 8D 0B
  np.testing.assert_array_equal(compact_export.unpack_indices(packed, len(indices), 2), indices)
  # 2:8: 3 bits an index, across byte boundaries: 5 = 101, 7 = 111, 1 = 001 -> stream 101 111 100 (LSB first).
  packed = compact_export.pack_indices([5, 7, 1], 3)
  np.testing.assert_array_equal(packed, np.array([0b01111101, 0b00000000], np.uint8))
  np.testing.assert_array_equal(compact_export.unpack_indices(packed, 3, 3), [5, 7, 1])


class TwoLayouts(nn.Module):
  """A Flax conv (HWIO) and a PyTorch-layout conv `weight` (OIHW) run by hand, then a Dense."""
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    w = self.param("torch_conv", lambda k: {"weight": jax.random.normal(k, (8, 8, 3, 3)) * 0.1})["weight"]
    x = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "OIHW", "NHWC"))
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


def test_the_nm_payload_is_what_asj_cost_reports_in_both_conv_layouts_with_explicit_zeros(tmp_path):
  net = TwoLayouts()
  params = net.init(jax.random.key(0), jnp.zeros((1, 6, 6, 4)))["params"]
  apply_fn = lambda p, x: net.apply({"params": p}, x)
  masks = asj.prune("magnitude", params, sparsity=0.5, structure="2:4")
  # A group of the OIHW conv keeping 1 of 4: stored as its value and an explicit zero.
  masks["torch_conv"]["weight"] = masks["torch_conv"]["weight"] & ~jnp.asarray(np.asarray(
      masks["torch_conv"]["weight"]) & (np.arange(8)[:, None, None, None] == 0))
  cost = asj.cost(params, masks, apply_fn, (1, 6, 6, 4), nm=(2, 4))
  written = asj.export(params, masks, str(tmp_path / "nm.npz"), format="nm")
  assert written["payload_bytes"] == cost["bytes"]["nm"] < cost["bytes"]["dense"]  # Zeros stored: > bitmask here.
  got_params, got_masks = asj.load_export(str(tmp_path / "nm.npz"), like=params)
  for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(got_masks)):
    np.testing.assert_array_equal(np.broadcast_to(np.asarray(a), np.shape(b)), np.asarray(b))
  for p, m, b in zip(jax.tree.leaves(params), jax.tree.leaves(masks), jax.tree.leaves(got_params)):
    np.testing.assert_array_equal(np.where(m, np.asarray(p), 0), np.asarray(b))
  # Masks that are not 2:4: no N:M bytes, and why not (the first group keeping more than 2).
  dense_conv = dict(masks, Conv_0={"kernel": jnp.ones_like(masks["Conv_0"]["kernel"]), "bias": masks["Conv_0"]["bias"]})
  out = sparse_cost.stored_bytes(params, dense_conv, nm=(2, 4))
  assert out["nm"] is None and "layer Conv_0/kernel's group [0, 0, 0, 0]..[0, 0, 3, 0]" in out["nm_why_not"]


def test_export_files_of_version_1_still_load():
  # Written by the code before issue 31 (tests/reference/make_structure_fixtures.py): nm with one uint8 per index
  # and groups over the flattened inputs (an OIHW conv's taps), bitmask unchanged.
  here = os.path.join(os.path.dirname(__file__), "reference")
  expected = np.load(os.path.join(here, "export_v1__expected.npz"))
  for fmt in ("nm", "bitmask"):
    params, masks = asj.load_export(os.path.join(here, f"export_v1__{fmt}.npz"))
    for name in ("fc/kernel", "conv/weight"):
      layer, leaf = name.split("/")
      m = expected[f"mask|{name}"]
      np.testing.assert_array_equal(masks[layer][leaf], m, err_msg=f"{fmt} {name}")
      np.testing.assert_array_equal(params[layer][leaf], np.where(m, expected[name], 0), err_msg=f"{fmt} {name}")
    np.testing.assert_array_equal(params["fc"]["bias"], expected["fc/bias"])


def test_exports_refuse_masks_and_trees_that_are_not_the_params(tmp_path):
  params, _ = lenet(width=0.1)
  masks = asj.prune("random", params, sparsity=0.5, key=jax.random.key(0))
  path = str(tmp_path / "e.npz")
  halves = jax.tree.map(lambda m: m * 0.5 if np.ndim(m) else m, masks)
  with pytest.raises(ValueError, match="masks= leaf 'Dense_0/kernel' holds values other than 0 and 1"):
    asj.export(params, halves, path)
  floats = jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), masks)
  asj.export(params, floats, path)  # 0/1 numbers are masks.
  other = jax.tree.map(lambda m: m[:, :-1] if np.ndim(m) == 2 else m, masks)
  with pytest.raises(ValueError, match=r"masks= leaf 'Dense_0/kernel' has shape \(784, 29\) but params="):
    asj.export(params, other, path)
  narrower = jax.tree.map(lambda p: p[:, :-1] if p.ndim == 2 else p, params)
  with pytest.raises(ValueError, match=r"like= leaf 'Dense_0/kernel' has shape \(784, 29\), but the export"):
    asj.load_export(path, like=narrower)
  with pytest.raises(ValueError, match=r"like= leaf 'Dense_0/bias' has dtype bfloat16"):
    asj.load_export(path, like=jax.tree.map(lambda p: p.astype(jnp.bfloat16), params))
  renamed = {("fc0" if k == "Dense_0" else k): v for k, v in params.items()}
  with pytest.raises(ValueError, match="like= leaf 'Dense_1/bias' has path 'Dense_1/bias', but the export .* holds "
                     "'Dense_0/bias'"):
    asj.load_export(path, like=renamed)
  with pytest.raises(ValueError, match="like= has 4 leaves, the export .* holds 6 \\(the file's 'Dense_2/bias' is "
                     "missing from like=\\)"):
    asj.load_export(path, like={k: v for k, v in params.items() if k != "Dense_2"})
