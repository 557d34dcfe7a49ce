"""Every criterion against its authors' own code: scores, zero patterns and masks from the
fixtures in tests/reference/ (written by benchmarks/reference_scores.py from the authors'
repositories, run unmodified under PyTorch; this test needs no torch).

Each test builds the fixture's network in Flax from the same weights (tests/reference_nets.py,
PyTorch layout converted), runs our criterion through autosparse_jax (the registered score
function, or the pruning module for multi-round masks) on the same inputs, and checks:
  * per layer, |ours - theirs| <= rtol * max|theirs| (rtol from the fixture's metadata);
  * the same exactly-zero entries;
  * at 90% and 98% sparsity our exact top-k (at the count their masking kept) equals their mask,
    every differing entry a near-tie (its score within the tolerance of the cut-off).
Where our criterion deliberately differs from theirs, the test reproduces their scores from ours
by exactly that difference (e.g. PX's SynFlow-L2 scores have one factor |theta| less) and says so.
The worst normwise errors and near-tie counts are collected into tests/reference/PARITY.md's
table by `python tests/test_reference_parity.py`.
"""
import dataclasses
import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_nets as rn
from autosparse_jax import criteria, masks as masks_lib, pruning, prune_spec
from autosparse_jax.criteria.base import ModelState, PruneData
from autosparse_jax.data.specs import SPECS
from autosparse_jax.models import get_model

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "reference")
REPORT = {}  # (repo, criterion, net) -> {"error": worst normwise error, "near_ties": {sparsity: n}}


# ------------------------------------------------------------------------------ networks

class RefConvNet(nn.Module):
  """reference_nets.NETS['conv'] in Flax: 3 x (conv3x3 -> BN -> ReLU), 2x2 max-pools, mean, Dense."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.astype(self.dtype)
    for i, c in enumerate((16, 32, 64)):
      x = nn.Conv(c, (3, 3), padding=1, dtype=self.dtype, name=f"conv{i + 1}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                       name=f"bn{i + 1}")(x)
      x = nn.relu(x)
      if i < 2:
        x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(10, dtype=self.dtype, name="fc")(x.mean(axis=(1, 2)))


def flax_variables(net, weights):
  """(params, batch_stats) of `net` from a PyTorch state dict (reference_nets layout)."""
  params, stats = {}, {}
  for name, kind, _ in rn.NETS[net]["layers"]:
    flax_name = rn.NETS[net]["flax"][name]
    if kind == "bn":
      params[flax_name] = {"scale": weights[f"{name}.weight"], "bias": weights[f"{name}.bias"]}
      stats[flax_name] = {"mean": weights[f"{name}.running_mean"], "var": weights[f"{name}.running_var"]}
    else:
      params[flax_name] = {"kernel": rn.to_flax_kernel(weights[f"{name}.weight"]), "bias": weights[f"{name}.bias"]}
  to_jnp = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t)
  return to_jnp(params), to_jnp(stats)


@functools.lru_cache(maxsize=None)
def inputs():
  meta, arrays = rn.read_fixture(os.path.join(FIXTURES, "inputs.npz"))
  return arrays


def network(net, weights=None):
  """(params, ModelState, PruneData) of the fixture's network `net` (theta0 unless `weights`)."""
  model = get_model("lenet_300_100", 10) if net == "lenet" else RefConvNet()
  params, stats = flax_variables(net, rn.theta0(net) if weights is None else weights)
  spec = SPECS[rn.NETS[net]["dataset"]]
  data = PruneData(jnp.asarray(inputs()[f"{net}/images"]), jnp.asarray(inputs()[f"{net}/labels"], jnp.int32))
  return params, ModelState(stats, model, spec), data


def torch_layout(tree, net):
  """{torch layer name: array} of the prunable leaves of a Flax tree (kernels back in PyTorch layout)."""
  out = {}
  for name, _ in rn.prunable(net):
    k = np.asarray(tree[rn.NETS[net]["flax"][name]]["kernel"], np.float64)
    out[name] = k.T if k.ndim == 2 else k.transpose(3, 2, 0, 1)
  return out


def flax_tree(layer_arrays, params, net):
  """A params-shaped tree with `layer_arrays` (torch layout) at the kernels, zeros elsewhere."""
  inverse = {v: k for k, v in rn.NETS[net]["flax"].items()}

  def leaf(path, p):
    names = [getattr(k, "key", str(k)) for k in path]
    if names[-1] == "kernel":
      return jnp.asarray(rn.to_flax_kernel(layer_arrays[inverse[names[0]]]), p.dtype)
    return jnp.zeros_like(p)
  return jax.tree_util.tree_map_with_path(leaf, params)


# ----------------------------------------------------------------------------- fixtures

def fixture(repo, criterion):
  path = os.path.join(FIXTURES, f"{repo}__{criterion}.npz")
  meta, arrays = rn.read_fixture(path)
  assert meta["repo"] == repo and meta["criterion"] == criterion
  for net, digest in meta["weights_sha256"].items():
    assert rn.sha256(rn.theta0(net.split("_")[0])) == digest, (
        f"numpy regenerates other weights for {net} than {path} was made from: regenerate the fixtures")
  return meta, arrays


def their_masks(arrays, net, sparsity):
  names = rn.prunable(net.split("_")[0])
  flat = rn.unpack_bits(arrays[f"{net}/mask{int(round(sparsity * 100))}"], sum(int(np.prod(s)) for _, s in names))
  pieces = np.split(flat, np.cumsum([int(np.prod(s)) for _, s in names])[:-1])
  return {n: p.reshape(s) for (n, s), p in zip(names, pieces)}


def check_scores(meta, arrays, net, ours, key=None, rtol=None):
  """ours: {layer: array (torch layout)}. Asserts the per-layer tolerance and the zero pattern;
  returns the worst normwise error ||ours - theirs|| / ||theirs|| over the layers."""
  rtol = float(meta["rtol_vs_layer_max"] if rtol is None else rtol)
  worst = 0.0
  for layer, _ in rn.prunable(net.split("_")[0]):
    prefix = f"{net}/{layer}/"
    mine = np.asarray(ours[layer], np.float64).reshape(-1)
    stored = key(layer) if key else arrays[prefix + "scores"]
    theirs = np.asarray(stored, np.float64).reshape(-1)
    top = float(arrays[prefix + "abs_max"]) if key is None else float(np.abs(theirs).max())
    sample = mine[arrays[prefix + "idx"]] if prefix + "idx" in arrays and key is None else mine
    assert sample.shape == theirs.shape, (layer, sample.shape, theirs.shape)
    err = np.abs(sample - theirs)
    assert err.max() <= rtol * top, (
        f"{meta['repo']}/{meta['criterion']} {net}/{layer}: max |ours - theirs| = {err.max():.3g} > "
        f"{rtol:g} x max|theirs| ({top:.3g}); worst entry {int(err.argmax())}: ours {sample[err.argmax()]!r}, "
        f"theirs {theirs[err.argmax()]!r}")
    worst = max(worst, float(np.linalg.norm(sample - theirs) / max(np.linalg.norm(theirs), 1e-300)))
    if key is None:  # The whole layer: same exactly-zero entries, same sum of |scores|.
      zeros = rn.unpack_bits(arrays[prefix + "zero"], mine.size)
      assert np.array_equal(mine == 0, zeros), (
          f"{net}/{layer}: {int(np.sum((mine == 0) != zeros))} entries differ in being exactly 0")
      np.testing.assert_allclose(np.abs(mine).sum(), float(arrays[prefix + "abs_sum"]), rtol=rtol * 10)
  return worst


def check_masks(meta, arrays, net, ours_scores, sparsity, ours_masks=None, rtol=None):
  """Their mask at `sparsity` against ours: our exact top-k of ours_scores at their kept count (or
  ours_masks, e.g. from our multi-round pruning). Every differing entry must be a near-tie: its score
  within 2 x rtol x its layer's max of the cut-off. Returns the number of differing entries."""
  rtol = float(meta["rtol_vs_layer_max"] if rtol is None else rtol)
  base = net.split("_")[0]
  names = [n for n, _ in rn.prunable(base)]
  theirs = their_masks(arrays, net, sparsity)
  flat_theirs = np.concatenate([theirs[n].reshape(-1) for n in names])
  flat_scores = np.concatenate([np.asarray(ours_scores[n], np.float64).reshape(-1) for n in names])
  tol = np.concatenate([np.full(theirs[n].size, 2 * rtol * np.abs(np.asarray(ours_scores[n])).max())
                        for n in names])
  k = int(flat_theirs.sum())
  if ours_masks is None:
    order = np.argsort(-flat_scores, kind="stable")
    flat_ours = np.zeros_like(flat_theirs)
    flat_ours[order[:k]] = True
  else:
    flat_ours = np.concatenate([np.asarray(ours_masks[n]).reshape(-1) for n in names])
  assert int(flat_ours.sum()) == k, (int(flat_ours.sum()), k)
  differ = flat_ours != flat_theirs
  if differ.any():
    cut = np.sort(flat_scores[flat_ours])[0]
    near = np.abs(flat_scores[differ] - cut) <= tol[differ]
    assert near.all(), (
        f"{meta['repo']}/{meta['criterion']} {net} at {sparsity:.0%}: {int(differ.sum())} entries differ, "
        f"{int((~near).sum())} of them not near the cut-off {cut!r} (scores {flat_scores[differ][~near][:5]})")
  return int(differ.sum())


def record(repo, criterion, net, error, ties):
  REPORT[(repo, criterion, net)] = {"error": error, "near_ties": ties}


def score_fn(name, options):
  fn = criteria.get(name).score
  return jax.jit(lambda p, m, s, d, k: fn(p, m, s, d, k, options))


def run_criterion(name, options, net, weights=None, key=0):
  """Our scores of criterion `name` at the dense network, in torch layout, and the params."""
  params, state, data = network(net, weights)
  masks = masks_lib.init_masks(params)
  with criteria.precision_scope(name):
    scores = score_fn(name, options)(params, masks, state, data, jax.random.PRNGKey(key))
  return torch_layout(scores, net), params


def multi_round_masks(name, options, net, counts, revives_ok=True):
  """Our masks after len(counts) rounds at init with per-round keep counts `counts`."""
  params, state, data = network(net)
  masks = masks_lib.init_masks(params)
  spec = prune_spec.PruneSpec(name, rounds=len(counts), options=options)
  plan = np.asarray(counts, np.int64)
  with criteria.precision_scope(name):
    final, _ = jax.jit(lambda p, m, s, d, k, plan: pruning.prune_network(spec, p, m, s, d, k, plan))(
        params, masks, state, data, jax.random.PRNGKey(0), plan)
  return {n: np.asarray(v) for n, v in torch_layout(final, net).items()}


def normalised(scores, eps=0.0, absolute=True):
  """scores / (|sum of all| + eps): Synaptic-Flow's (and the GraSP authors') normalisation."""
  total = sum(np.sum(s) for s in scores.values())
  norm = (abs(total) if absolute else total) + eps
  return {k: v / norm for k, v in scores.items()}


NETS = ("lenet", "conv")
D = lambda s: 1.0 - s


# ---------------------------------------------------------------- Synaptic-Flow (4 criteria)

@pytest.mark.parametrize("net", NETS)
def test_magnitude_equals_synaptic_flow(net):
  meta, arrays = fixture("synaptic_flow", "magnitude")
  ours, _ = run_criterion("magnitude", criteria.NoOptions(), net)
  err = check_scores(meta, arrays, net, ours, rtol=0.0)  # |theta|: bit for bit.
  ties = {s: check_masks(meta, arrays, net, ours, s) for s in (0.9, 0.98)}
  record("synaptic_flow", "magnitude", net, err, ties)


@pytest.mark.parametrize("net", NETS)
def test_snip_equals_synaptic_flow(net):
  """Their SNIP: |dL/dm| summed over the loader's batches, normalised by the sum of all scores."""
  meta, arrays = fixture("synaptic_flow", "snip")
  n = len(inputs()[f"{net}/labels"])
  options = criteria.DataOptions(batch_size=n // meta["settings"]["batches"], num_batches=0, grad_reduction="sum")
  ours, _ = run_criterion("snip", options, net)
  ours = normalised(ours)
  err = check_scores(meta, arrays, net, ours)
  ties = {s: check_masks(meta, arrays, net, ours, s) for s in (0.9, 0.98)}
  record("synaptic_flow", "snip", net, err, ties)


@pytest.mark.parametrize("net", NETS)
def test_grasp_equals_synaptic_flow(net):
  """Their GraSP: theta * Hg over the masked weights (eval mode), normalised by |sum| + 1e-10; the
  samples: grasp_sampling='random' over the fixture's batch (all of it, one batch)."""
  from autosparse_jax.criteria.saliency import GraspOptions
  meta, arrays = fixture("synaptic_flow", "grasp")
  n = len(inputs()[f"{net}/labels"])
  options = GraspOptions(batch_size=n, grasp_samples_per_class=n // 10, grasp_sampling="random",
                         grasp_temperature=200.0)
  ours, _ = run_criterion("grasp", options, net)
  ours = normalised(ours, eps=1e-10)
  err = check_scores(meta, arrays, net, ours)
  ties = {s: check_masks(meta, arrays, net, ours, s) for s in (0.9, 0.98)}
  record("synaptic_flow", "grasp", net, err, ties)


def synaptic_flow_counts(n, density, rounds):
  """Their prune_loop's kept count per round: n - int((1 - d^(r/R)) * n) (Pruner._global_mask)."""
  return [n - int((1.0 - density ** ((r + 1) / rounds)) * n) for r in range(rounds)]


@pytest.mark.parametrize("net", NETS)
def test_synflow_equals_synaptic_flow(net):
  """One round's scores (theirs float32, ours float64), and the 100-round masks of their prune_loop
  against our 100 rounds with their per-round keep counts."""
  meta, arrays = fixture("synaptic_flow", "synflow")
  ours, params = run_criterion("synflow", criteria.NoOptions(), net)
  err = check_scores(meta, arrays, net, ours)
  n = sum(int(np.prod(s)) for _, s in rn.prunable(net))
  ties = {}
  for s in (0.9, 0.98):
    counts = synaptic_flow_counts(n, D(s), 100)
    ours_m = multi_round_masks("synflow", criteria.NoOptions(), net, counts)
    ties[s] = check_masks(meta, arrays, net, ours, s, ours_masks=ours_m)
  record("synaptic_flow", "synflow", net, err, ties)


@pytest.fixture(autouse=True, scope="module")
def _write_report():
  """With AUTOSPARSE_PARITY_REPORT=FILE, the worst errors and near-tie counts go to FILE (JSON)."""
  yield
  path = os.environ.get("AUTOSPARSE_PARITY_REPORT")
  if path:
    rows = [{"repo": r, "criterion": c, "net": n, **v} for (r, c, n), v in sorted(REPORT.items())]
    with open(path, "w") as f:
      json.dump(rows, f, indent=1, default=float)
