"""NVIDIA apex ASP's own 2:4 masks (`m4n2_1d`), the reference for structure.py's N:M groups.

    git -C APEX show 6424da3b4faa6c8f062da4a48c424fff3f02d42d:apex/contrib/sparsity/sparse_masklib.py > sparse_masklib.py
    VENV/bin/python tests/reference/make_asp_fixtures.py sparse_masklib.py   # torch (CPU) and numpy only

apex commit 6424da3b4faa6c8f062da4a48c424fff3f02d42d (NVIDIA/apex), file
apex/contrib/sparsity/sparse_masklib.py (sha256 25cb936b...1006), run unmodified: it is
imported from the path given and `create_mask(weight, "m4n2_1d")` called, as ASP's
`ASP.compute_sparse_masks` calls it. The file allocates with `torch.cuda.IntTensor` /
`.cuda()`; on a machine without CUDA those two names are pointed at their CPU equivalents
before the call (the same integer and float tensors, on the CPU). Nothing else of apex
is imported. Generated with torch 2.13.0+cpu.

What ASP does (create_mask): a Linear weight (out, in) is grouped along `in`, 4
consecutive inputs of one output; a conv weight (K, C, R, S) is permuted to (R, S, K, C),
viewed as (R*S*K, C) and grouped along C: 4 consecutive INPUT CHANNELS at one tap
(r, s) of one filter k. In each group the pattern with 2 ones maximising the sum of
|w| is kept (the 2 largest magnitudes). Our Flax layouts are the same tensors
transposed: Dense kernel = weight.T; HWIO kernel = weight.transpose(2, 3, 1, 0).

Writes tests/reference/asp__m4n2_1d.npz: for each case (dense, conv1x1, conv3x3) the
PyTorch-layout weight `weight|CASE` and ASP's mask `mask|CASE` (bool, same layout).
"""
import importlib.util
import os
import sys

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "asp__m4n2_1d.npz")
SHAPES = {"dense": (8, 16), "conv1x1": (8, 16, 1, 1), "conv3x3": (8, 12, 3, 3)}  # PyTorch layout.


def load_masklib(path):
  if not torch.cuda.is_available():  # The file's two CUDA allocations, on the CPU.
    torch.cuda.IntTensor = lambda *shape: torch.IntTensor(*shape)
    torch.cuda.FloatTensor = lambda *shape: torch.FloatTensor(*shape)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
  spec = importlib.util.spec_from_file_location("sparse_masklib", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules["sparse_masklib"] = module  # As an import would: create_mask looks itself up there.
  spec.loader.exec_module(module)
  return module


def main(path):
  masklib = load_masklib(path)
  rng = np.random.default_rng(31)
  arrays = {}
  for case, shape in SHAPES.items():
    weight = rng.standard_normal(shape).astype(np.float32)
    mask = masklib.create_mask(torch.from_numpy(weight), "m4n2_1d").numpy()
    arrays[f"weight|{case}"], arrays[f"mask|{case}"] = weight, mask != 0
  np.savez_compressed(OUT, **arrays)
  print(f"wrote {OUT}: {', '.join(SHAPES)} (torch {torch.__version__})")


if __name__ == "__main__":
  main(sys.argv[1])
