"""configs/sparse_training_reproduction.py (results/lenet_mnist_sparse_training): the published sweep's
recipe is results/lenet_mnist's, its variants validate, and the table script's FLOPs accounting is exact."""
import json
import os
import subprocess
import sys

import pytest

from autosparse_jax.lab import config_tools, jobs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flat(config):
  return config_tools.flatten(config_tools.config_to_dict(config))


def test_the_sweep_has_the_mnist_reproductions_recipe_and_validates():
  new, old = flat(config_tools.load_config("sparse_training_reproduction")), flat(
      config_tools.load_config("mnist_reproduction")["sweep"])
  differ = {k.split(".")[0] + "." + k.split(".")[1] if k.startswith("sweep.") else k.split(".")[0]
            for k in set(new) | set(old) if new.get(k) != old.get(k)}
  assert differ <= {"sweep.criteria", "sweep.variants", "sweep.dense", "sparsities", "autos"}, differ
  for arg in ("mnist", "cifar_subset"):
    jobs.validate(config_tools.load_config("sparse_training_reproduction", arg))


@pytest.mark.parametrize("name, args", [
    ("table.md", ["--new=results/lenet_mnist_sparse_training/results.jsonl",
                  "--old=results/lenet_mnist/results.jsonl", "--irp_config=mnist_reproduction"]),
    ("cifar_subset_table.md", ["--new=results/lenet_mnist_sparse_training/cifar_subset_results.jsonl",
                               "--sparsities=0.9", "--name=cifar_subset_table.md",
                               "--title=ResNet-18 (width 0.25, BatchNorm) / CIFAR-10 subset, 12 epochs, seeds 0-1"]),
])
def test_the_table_script_rebuilds_the_published_tables(tmp_path, name, args):
  out = tmp_path / "out"
  proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "sparse_training_table.py"), *args,
                         f"--out={out}"], capture_output=True, text=True, cwd=REPO,
                        env=dict(os.environ, PYTHONPATH=REPO, MPLBACKEND="Agg"), timeout=300)
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(REPO, "results", "lenet_mnist_sparse_training", name)) as f:
    assert (out / name).read_text() == f.read()


def test_static_training_flops_of_old_rows_equal_the_jobs_accounting():
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  import sparse_training_table as table  # pylint: disable=import-outside-toplevel
  rows = [json.loads(l) for l in open(os.path.join(REPO, "results", "lenet_mnist_sparse_training", "results.jsonl"))]
  f_dense, batch, steps = table.accounting(rows)
  assert (f_dense, batch, steps) == (533210.0, 128, 9360)
  set_row = next(r for r in rows if r["sparse_training"] == "set")
  recomputed = table.fill_flops([{k: v for k, v in set_row.items() if not k.startswith("training_flops_total")}],
                                f_dense, batch, steps)[0]
  assert recomputed["training_flops_total"] == pytest.approx(set_row["training_flops_total"], rel=1e-12)
