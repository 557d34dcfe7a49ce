"""Reliability: bad input at the CLI, non-finite losses, unreadable and unfinished checkpoints."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from autosparse_jax import jobs, score_dataset
from autosparse_jax.errors import ConfigError
from tests.conftest import REPO, apply_overrides, load_config


def cli(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "autosparse_jax.main", *args], capture_output=True,
                        text=True, cwd=REPO, timeout=timeout)


# (config, overrides, the message the user must see). Each is refused before any compute with
# a ConfigError (the CLI's exit code 2, tests/test_main.py) and no workdir created. In-process:
# jobs.run validates, then runs the job, which refuses the rest before writing anything.
BAD_INPUT = [
    ("train:lenet_digits", {"num_seeds": 0}, "config.num_seeds=0 must be >= 1"),
    ("train:lenet_digits", {"train.epochs": 0}, "config.train.epochs=0 must be >= 1"),
    ("train:lenet_digits", {"sparsity": -0.1, "criterion": "snip"}, "config.sparsity=-0.1 must lie in [0, 1)"),
    ("train:lenet_digits", {"prune.distribution": "erkk", "criterion": "snip", "sparsity": 0.9},
     "config.prune.distribution='erkk' is not known. Allowed: global, layerwise, erk. Did you mean 'erk'?"),
    ("train:lenet_digits", {"train.loop": "scann"},
     "config.train.loop='scann' is not known. Allowed: auto, scan, python. Did you mean 'scan'?"),
    ("train:lenet_digits", {"job": "trian"}, "config.job='trian' is not known"),
    ("train:lenet_digits", {"criterion": "snip"}, "config.criterion='snip' needs config.sparsity > 0"),
    ("train:lenet_digits", {"model": "resnet19"}, "config.model='resnet19' is not known. Allowed: "
     "lenet_300_100, resnet18, vgg16, vgg19. Did you mean 'resnet18'?"),
    ("train:lenet_digits", {"dataset": "mnits"}, "config.dataset='mnits' is not known. Allowed: mnist, "
     "cifar10, cifar100, tiny_imagenet, digits, synthetic. Did you mean 'mnist'?"),
    ("train:lenet_digits", {"criterion": "magnitud", "sparsity": 0.5}, "Did you mean 'magnitude'?"),
    ("train:lenet_digits", {"sparsity": 1.0}, "config.sparsity=1.0 must lie in [0, 1)"),
    ("train:lenet_digits", {"train.optimizer": "adamw"}, "config.train.optimizer='adamw' is not known"),
    ("train:lenet_digits", {"train.batch_size": 5000}, "config.train.batch_size=5000 is larger than the training set"),
    ("prune:lenet_digits", {"criterion": "npb", "prune.rounds": 3},
     "config.prune.rounds=3 is not supported by config.criterion='npb'"),
    ("prune:lenet_digits", {"criterion": "autos"}, "config.autos.scorer_dir='' holds no trained scorer"),
    ("prune:lenet_digits", {"criterion": "autos", "autos.scorer_dir": "/nonexistent/scorer"},
     "config.autos.scorer_dir='/nonexistent/scorer' holds no trained scorer"),
    ("prune:lenet_digits", {"criterion": "none"}, "config.criterion='none' does not prune"),
    ("prune:lenet_digits", {"sparsities": (0.5, 1.2)}, "config.sparsities=1.2 must lie in (0, 1)"),
    ("irp:lenet_digits", {"irp.schedule": "pct"}, "config.irp.schedule='pct' is not known. Allowed: count, geometric."),
    ("irp:lenet_digits", {"irp.final_density": 0.0}, "config.irp.final_density=0.0 must be in (0, 1)"),
    ("irp:lenet_digits", {"irp.final_density": 1.5}, "config.irp.final_density=1.5 must be in (0, 1)"),
    ("irp:lenet_digits", {"irp.rounds": 0}, "config.irp.rounds=0 must be >= 1"),
    ("irp:lenet_digits", {"irp.rewind_step": -1}, "config.irp.rewind_step=-1 must be >= 0"),
    ("irp:lenet_digits", {"irp.rewind_step": 100000}, "config.irp.rewind_step=100000 must be below the steps of one round"),
    ("irp:lenet_digits", {"criterion": "npb"}, "config.criterion='npb' cannot drive IRP"),
    ("irp:lenet_digits", {"criterion": "synflw"}, "Did you mean 'synflow'?"),
    ("autos_train:mlp", {}, "config.autos.datasets is empty"),
    ("autos_train:resnet34", {"autos.datasets": ("/x",)},
     "config.autos.backbone='resnet34' is not known. Allowed: resnet18, vgg19, mlp."),
    ("autos_train:mlp", {"autos.datasets": ("/x",), "autos.features": ("theta",)},
     "config.autos.features='theta' is not known. Allowed: theta0, g0. Did you mean 'theta0'?"),
    ("autos_train:mlp", {"autos.datasets": ("/x",), "autos.holdout_fraction": 1.5},
     "config.autos.holdout_fraction=1.5 must be in (0, 1)"),
    ("autos_train:mlp", {"autos.datasets": ("/nonexistent/ds",)}, "/nonexistent/ds is not a score dataset (no dataset_info.json)"),
    ("autos_train:mlp", {"autos.datasets": ("/x",), "autos.dtype": "fp16"},
     "config.autos.dtype='fp16' is not known. Allowed: float32, bfloat16."),
    ("ccc", {"ccc.datasets": ("/only/one",)}, "config.ccc.datasets has 1 entries"),
]


@pytest.mark.parametrize("config,overrides,message", BAD_INPUT, ids=[str(i) for i in range(len(BAD_INPUT))])
def test_bad_input_is_refused_with_a_message_naming_the_field(tmp_path, config, overrides, message):
  name, _, arg = config.partition(":")
  loaded = apply_overrides(load_config(name, arg or None), overrides)
  with pytest.raises(ConfigError) as refused:
    jobs.run(loaded, str(tmp_path / "wd"))
  assert message in str(refused.value)
  assert not (tmp_path / "wd").exists()


IRP = ["--config=configs/irp.py:lenet_digits", "--config.irp.rounds=2", "--config.train.epochs=1",
       "--config.width=0.5"]


def test_non_finite_loss_stops_with_round_epoch_and_step_and_keeps_good_checkpoints(tmp_path):
  wd = tmp_path / "wd"
  proc = cli(*IRP, f"--workdir={wd}", "--config.train.lr=1e30", "--config.train.log_every_steps=5",
             "--config.irp.checkpoint_every_steps=5")
  assert proc.returncode == 3, proc.stderr[-2000:]
  assert "non-finite training loss" in proc.stderr and "round 0, epoch 1, steps 1-5" in proc.stderr
  assert "Traceback" not in proc.stderr
  manager = ocp.CheckpointManager(str(wd / "checkpoints"))
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  for leaf in jax.tree.leaves(restored.state):
    if np.issubdtype(np.asarray(leaf).dtype, np.floating):
      assert np.all(np.isfinite(leaf))
  assert not (wd / "results.json").exists()


def test_unreadable_latest_checkpoint_is_moved_aside_and_the_previous_one_resumes(tmp_path):
  good, broken = tmp_path / "good", tmp_path / "broken"
  assert cli(*IRP, f"--workdir={good}").returncode == 0
  shutil.copytree(good, broken)
  os.remove(broken / "results.json")
  shutil.rmtree(broken / "scores")
  latest = max(int(n) for n in os.listdir(broken / "checkpoints") if n.isdigit())
  data = broken / "checkpoints" / str(latest) / "state" / "ocdbt.process_0" / "d"
  for name in os.listdir(data):  # Truncate every data file of the newest checkpoint.
    with open(data / name, "r+b") as f:
      f.truncate(10)
  # An interrupted save (Orbax's temporary directory) must be ignored as well.
  os.makedirs(broken / "checkpoints" / f"{latest + 1}.orbax-checkpoint-tmp-1234")
  proc = cli(*IRP, f"--workdir={broken}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"checkpoint {latest} in" in proc.stdout and "cannot be read" in proc.stdout
  assert len(os.listdir(broken / "checkpoints.unreadable")) == 1  # Kept, not deleted.
  a, _ = score_dataset.load_score_dataset(json.load(open(good / "results.json"))["score_dataset_dir"])
  b, _ = score_dataset.load_score_dataset(json.load(open(broken / "results.json"))["score_dataset_dir"])
  for field in score_dataset.FIELDS:
    np.testing.assert_array_equal(a[field], b[field])


@pytest.mark.slow
def test_kill_soak_ten_sigkills_end_bit_identical(tmp_path):
  from autosparse_jax.soak import soak
  landed, diffs = soak(10, str(tmp_path / "soak"), seed=0)
  assert landed >= 10 and not diffs, (landed, diffs)


@pytest.mark.parametrize("damage", ["missing_shard", "truncated_shard"])
def test_damaged_prepared_dataset_gets_a_clear_error(prepared_data_dir, tmp_path, damage):
  from autosparse_jax.data import DatasetNotPreparedError, load_dataset
  data_dir = tmp_path / "tfds"
  shutil.copytree(prepared_data_dir("mnist"), data_dir)
  version = data_dir / "autosparse_mnist" / "1.0.0"
  shard = next(p for p in version.iterdir() if "train.array_record" in p.name)
  if damage == "missing_shard":
    shard.unlink()
    expected = r"its train split lacks 1 shard file\(s\)"
  else:
    with open(shard, "r+b") as f:
      f.truncate(shard.stat().st_size // 2)
    expected = "cannot be read"
  with pytest.raises(DatasetNotPreparedError, match=expected) as info:
    load_dataset("mnist", str(data_dir))
  assert "python -m autosparse_jax.data.prepare mnist" in str(info.value)
  assert version.exists()  # The damaged data is left for the user to inspect.


def test_ccc_refuses_score_datasets_of_different_models(tmp_path):
  from autosparse_jax.jobs import ccc
  from autosparse_jax.errors import ConfigError
  rng = np.random.default_rng(0)
  dirs = []
  for i, shape in enumerate([(64, 150), (64, 100)]):
    dirs.append(score_dataset.export_score_dataset(
        str(tmp_path / str(i)), ["Dense_0/kernel"], [rng.normal(size=shape)], [rng.normal(size=shape)],
        [rng.integers(0, 3, size=shape)], {"model": f"net{i}"}))
  with pytest.raises(ConfigError, match="have different layers"):
    ccc.dataset_concordance(*dirs)


def test_restart_moves_the_earlier_run_aside_instead_of_overwriting_it(tmp_path):
  wd = tmp_path / "wd"
  base = ["--config=configs/train.py:lenet_digits", f"--workdir={wd}", "--config.train.epochs=1"]
  assert cli(*base).returncode == 0
  first = json.load(open(wd / "results.json"))
  refused = cli(*base, "--config.seed=1")
  assert refused.returncode == 2 and "--restart" in refused.stderr
  assert cli(*base, "--config.seed=1", "--restart").returncode == 0
  aside = [p for p in tmp_path.iterdir() if p.name.startswith("wd.previous.")]
  assert len(aside) == 1 and json.load(open(aside[0] / "results.json")) == first
  assert json.load(open(wd / "results.json"))["seeds"] == [1]


def test_scorer_whose_features_do_not_match_the_job_is_refused(tmp_path):
  import jax.numpy as jnp
  from autosparse_jax.autos.apply import save_scorer
  from autosparse_jax.autos.scorer import make_scorer
  module = make_scorer("mlp", 2, 0.25)
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((2, 2)), train=False)
  save_scorer(str(tmp_path / "scorer"), {"backbone": "mlp", "width": 0.25, "features": ["theta0", "g0"],
                                         "dtype": "float32", "g0_reduction": "mean"},
              variables, np.zeros(2), np.ones(2))
  proc = cli("--config=configs/prune.py:lenet_digits", f"--workdir={tmp_path / 'wd'}",
             "--config.criterion=autos", f"--config.autos.scorer_dir={tmp_path / 'scorer'}")
  assert proc.returncode == 2 and "learnt g_0 reduced by 'mean'" in proc.stderr, proc.stderr[-2000:]
  assert "--config.prune.grad_reduction=mean" in proc.stderr and "Traceback" not in proc.stderr
  assert not (tmp_path / "wd").exists()
