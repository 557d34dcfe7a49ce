"""benchmarks/irp_vs_original.py: the pieces that need neither torch nor the original checkout."""
import argparse
import gzip
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import irp_original_torch  # noqa: E402
import irp_vs_original  # noqa: E402


def test_read_idx_gz_and_plain(tmp_path):
  images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  header = (0x0803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
  plain = tmp_path / "x-images-idx3-ubyte"
  plain.write_bytes(header + images.tobytes())
  with gzip.open(str(plain) + ".gz", "wb") as f:
    f.write(header + images.tobytes())
  np.testing.assert_array_equal(irp_original_torch.read_idx(str(plain)), images)
  np.testing.assert_array_equal(irp_original_torch.read_idx(str(plain) + ".gz"), images)


def test_settings_rows_match_the_recipe():
  args = argparse.Namespace(rounds=20, epochs_per_round=2, seed=0, final_density=0.01, match_prune_batch=True)
  rows = {name: verdict for name, _, _, verdict in irp_vs_original.settings_rows(args)}
  for name in ("optimizer", "lr", "batch", "weight decay", "lr drops", "schedule", "mask scope",
               "pruning batch", "SNIP gradient"):
    assert rows[name] == "same", (name, rows[name])
  assert rows["rewind"].startswith("**differs**")
  args.match_prune_batch = False
  rows = {name: verdict for name, _, _, verdict in irp_vs_original.settings_rows(args)}
  assert rows["pruning batch"].startswith("**differs**")


def test_original_cfgs_shape():
  cfgs = irp_original_torch.original_cfgs(rounds=3, epochs_per_round=1)
  assert cfgs["prune"]["prune_epochs"] == 3 and cfgs["train"]["post_epochs"] == 1
  assert cfgs["prune"]["schedule"] == "num" and cfgs["train"]["model"] == "fc1"
  assert cfgs["policy"]["run_choice"] == "prune_iterative"
