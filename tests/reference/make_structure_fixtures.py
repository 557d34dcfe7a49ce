"""Masks of the code before issue 31 (main at cf65ed5), kept to pin what must not change.

    PYTHONPATH=<a checkout of cf65ed5> python tests/reference/make_structure_fixtures.py

Writes tests/reference/structure__before_issue31.npz: magnitude masks of a small Flax
network (params drawn by numpy, seed 0) under 2:4 (every conv's c_in divides by 4),
block:2x2 and channel (global and layerwise). Issue 31 changes N:M groups for
PyTorch-layout convs and for convs whose c_in does not divide by M only: these
must stay bit for bit (tests/test_sparsity_structure.py).

Also writes export_v1__nm.npz and export_v1__bitmask.npz: asj.export files of format
version 1 (that code's), which later versions must still load (tests/test_sparse_cost.py);
their params and masks are in export_v1__expected.npz.
"""
import os

import numpy as np

import autosparse_jax as asj

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "structure__before_issue31.npz")
CASES = (("2:4", "global"), ("block:2x2", "global"), ("block:2x2", "layerwise"), ("channel", "global"),
         ("channel", "layerwise"))


def params():
  rng = np.random.default_rng(0)
  draw = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  return {"Conv_0": {"kernel": draw(3, 3, 8, 16), "bias": draw(16)}, "Conv_1": {"kernel": draw(1, 1, 16, 8)},
          "Conv_2": {"kernel": draw(2, 2, 8, 4)}, "Dense_0": {"kernel": draw(32, 12), "bias": draw(12)}}


def masks(structure, distribution):
  sparsity = 0.5 if structure == "2:4" else 0.7
  return asj.prune("magnitude", params(), sparsity=sparsity, structure=structure, distribution=distribution)


def v1_exports():
  rng = np.random.default_rng(1)
  tree = {"fc": {"kernel": rng.standard_normal((8, 4)).astype(np.float32), "bias": np.ones(4, np.float32)},
          "conv": {"weight": rng.standard_normal((4, 4, 3, 3)).astype(np.float32)}}
  m = asj.prune("magnitude", tree, sparsity=0.5, structure="2:4")
  here = os.path.dirname(OUT)
  from autosparse_jax import compact_export
  for fmt in ("nm", "bitmask"):
    compact_export.export(tree, m, os.path.join(here, f"export_v1__{fmt}.npz"), format=fmt, structure="2:4")
  np.savez(os.path.join(here, "export_v1__expected.npz"), **{
      "fc/kernel": tree["fc"]["kernel"], "fc/bias": tree["fc"]["bias"], "conv/weight": tree["conv"]["weight"],
      "mask|fc/kernel": np.asarray(m["fc"]["kernel"]), "mask|conv/weight": np.asarray(m["conv"]["weight"])})


def main():
  arrays = {}
  for structure, distribution in CASES:
    m = masks(structure, distribution)
    for layer in ("Conv_0", "Conv_1", "Conv_2", "Dense_0"):
      arrays[f"{structure}|{distribution}|{layer}"] = np.asarray(m[layer]["kernel"])
  np.savez_compressed(OUT, **arrays)
  print(f"wrote {OUT}: {len(arrays)} masks")
  v1_exports()


if __name__ == "__main__":
  main()
