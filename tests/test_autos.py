"""AutoS application: sharded scoring on 4 CPU devices, and IRP -> scorer -> pruning another model."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import REPO

SHARDED = textwrap.dedent("""
    import os
    import chex
    chex.set_n_cpu_devices(4)  # Before jax starts its backend.
    import jax, jax.numpy as jnp, numpy as np
    from autosparse_jax.autos import apply
    from autosparse_jax.autos.scorer import make_scorer
    assert jax.device_count() == 4
    module = make_scorer("mlp", 2, 0.25)
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((2, 2)), train=False)
    scorer = apply.TrainedScorer(module, variables, ("theta0", "g0"), np.array([0.1, 0.0], np.float32),
                                 np.array([2.0, 0.5], np.float32), {})
    x = np.random.default_rng(0).normal(size=(1001, 2)).astype(np.float32)  # 1001 = 4 * 250 + 1.
    # Independent reference: the module applied to all rows at once, no padding, no batches.
    direct = np.asarray(module.apply(variables, (x - scorer.mean) / scorer.std, train=False))
    for name, got in [("unsharded", apply.score_unsharded(scorer, x, 64)),
                      ("pmap", apply.score_pmap(scorer, x, 64)),
                      ("shard_map", apply.score_shard_map(scorer, x, 64)),
                      ("chunked", apply.score_features(scorer, x, 64, chunk_weights=300))]:
      assert got.shape == (1001,), name
      np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6, err_msg=name)
      np.testing.assert_array_equal(got, apply.score_unsharded(scorer, x, 64), err_msg=name)
    print("ok")
""")


def test_pmap_and_shard_map_scoring_on_4_devices_equal_unsharded_scoring():
  out = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
  assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr


def cli(*args):
  out = subprocess.run([sys.executable, "-m", "autosparse_jax.lab.main", *args], capture_output=True,
                       text=True, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return out


def results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


@pytest.mark.slow  # ~25 s cold; CI's budget: the API's pretrained-scorer and autos_train resume tests cover it.
def test_scorer_from_lenet_irp_prunes_a_resnet_through_the_cli(tmp_path):
  irp_dir, scorer_dir, prune_dir = (str(tmp_path / n) for n in ("irp", "scorer", "prune"))
  cli("--config=configs/irp.py:lenet_digits", f"--workdir={irp_dir}", "--config.irp.rounds=3",
      "--config.train.epochs=1")
  dataset = results(irp_dir)["score_dataset_dir"]
  cli("--config=configs/autos_train.py:mlp", f"--workdir={scorer_dir}", "--config.train.epochs=1",
      "--config.scorer.width=0.25", f"--config.scorer.datasets=('{dataset}',)")
  trained = results(scorer_dir)
  assert os.path.exists(trained["figure"])
  # A different model: ResNet-18 (narrow) on the same small images, pruned by the LeNet-trained scorer.
  cli("--config=configs/prune.py:lenet_digits", f"--workdir={prune_dir}", "--config.model=resnet18",
      "--config.width=0.125", "--config.criterion=autos", f"--config.autos.scorer_dir={trained['scorer_dir']}",
      "--config.sparsity=0.9", "--config.train.epochs=1", "--config.train.batch_size=256")
  run = results(prune_dir)["runs"][0]
  assert run["kept_per_seed"][0] == int(np.floor(0.1 * run["total"] + 0.5))  # Exactly k.
  assert any(name.startswith("stage4") for name in run["layer_density"])  # It was the ResNet.
