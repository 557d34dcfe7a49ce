"""Reliability: bad input at the CLI, non-finite losses, unreadable and unfinished checkpoints."""
import json
import os
import re
import shutil
import subprocess
import sys

import hypothesis
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from autosparse_jax import score_dataset
from autosparse_jax.lab import jobs, schema, workdir as workdir_lib
from autosparse_jax.errors import ConfigError, OutputError
from tests.conftest import REPO, apply_overrides, load_config


def cli(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "autosparse_jax.lab.main", *args], capture_output=True,
                        text=True, cwd=REPO, timeout=timeout)


# (config, overrides, the message the user must see). Each is refused before any compute with
# a ConfigError (the CLI's exit code 2, tests/test_main.py) and no workdir created. In-process:
# jobs.run validates, then runs the job, which refuses the rest before writing anything.
BAD_INPUT = [
    ("train:lenet_digits", {"num_seeds": 0}, "config.num_seeds=0 must be >= 1"),
    ("train:lenet_digits", {"train.epochs": 0}, "config.train.epochs=0 must be >= 1"),
    ("prune:lenet_digits", {"sparsity": -0.1, "criterion": "snip"}, "config.sparsity=-0.1 must lie in [0, 1)"),
    ("prune:lenet_digits", {"prune.distribution": "erkk", "criterion": "snip", "sparsity": 0.9},
     "config.prune.distribution='erkk' is not known. Allowed: global, layerwise, erk. Did you mean 'erk'?"),
    ("train:lenet_digits", {"train.loop": "scann"},
     "config.train.loop='scann' is not known. Allowed: auto, scan, python. Did you mean 'scan'?"),
    ("train:lenet_digits", {"job": "trian"}, "config.job='trian' is not known"),
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.0}, "config.criterion='snip' needs config.sparsity > 0"),
    # The train job trains dense networks: pruning at init and training is the prune job's.
    ("train:lenet_digits", {"criterion": "snip", "sparsity": 0.9},
     "config.criterion='snip', config.sparsity=0.9: the train job trains dense networks only; prune at init and "
     "train with the prune job (same fields, same networks): autosparse "
     "--config=prune:lenet_digits --workdir=DIR --config.criterion=snip --config.sparsity=0.9"),
    ("quickstart", {"sweep.job": "train", "sweep.criterion": "snip"},
     "config.sweep.criterion='snip', config.sweep.sparsity=0.0: the train job trains dense networks only; to "
     "prune at init and train, make this stage a prune job (config.sweep.job='prune'"),
    ("train:lenet_digits", {"model": "resnet19"}, "config.model='resnet19' is not known. Allowed: "
     "lenet_300_100, resnet18, vgg16, vgg19. Did you mean 'resnet18'?"),
    ("train:lenet_digits", {"dataset": "mnits"}, "config.dataset='mnits' is not known. Allowed: mnist, "
     "cifar10, cifar100, tiny_imagenet, digits, synthetic. Did you mean 'mnist'?"),
    ("prune:lenet_digits", {"criterion": "magnitud", "sparsity": 0.5}, "Did you mean 'magnitude'?"),
    ("prune:lenet_digits", {"sparsity": 1.0}, "config.sparsity=1.0 must lie in [0, 1)"),
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
    ("autos_train:mlp", {}, "config.scorer.datasets is empty"),
    ("autos_train:resnet34", {"scorer.datasets": ("/x",)},
     "config.scorer.backbone='resnet34' is not known. Allowed: resnet18, vgg19, mlp."),
    ("autos_train:mlp", {"scorer.datasets": ("/x",), "scorer.features": ("theta",)},
     "config.scorer.features='theta' is not known. Allowed: theta0, g0. Did you mean 'theta0'?"),
    ("autos_train:mlp", {"scorer.datasets": ("/x",), "scorer.holdout_fraction": 1.5},
     "config.scorer.holdout_fraction=1.5 must be in (0, 1)"),
    ("autos_train:mlp", {"scorer.datasets": ("/nonexistent/ds",)}, "/nonexistent/ds is not a score dataset (no dataset_info.json)"),
    ("autos_train:mlp", {"scorer.datasets": ("/x",), "dtype": "fp16"},
     "config.dtype='fp16' is not known. Allowed: float32, bfloat16."),
    # Renamed fields (schema.RENAMED): the old name is refused with the new one, also in a pipeline stage.
    ("autos_train:mlp", {"scorer.datasets": ("/x",), "autos.backbone": "vgg19"},
     "config.autos.backbone was renamed config.scorer.backbone (the autos_train job's scorer settings"),
    ("quickstart", {"autos.autos.width": 0.5}, "config.autos.autos.width was renamed config.autos.scorer.width"),
    ("ccc", {"ccc.datasets": ("/only/one",)}, "config.ccc.datasets has 1 entries"),
    # Caught by the schema (autosparse_jax/lab/schema.py): values and cross-field rules.
    ("prune:lenet_digits", {"data.eval_batch_size": 0}, "config.data.eval_batch_size=0 must be >= 1"),
    ("prune:lenet_digits", {"prune.prunable": "nomatch", "criterion": "snip", "sparsity": 0.5},
     "config.prune.prunable='nomatch' selects no parameter"),
    ("prune:lenet_digits", {"prune.prunable": "(", "criterion": "snip", "sparsity": 0.5},
     "config.prune.prunable='(' is not a valid regular expression"),
    ("prune:lenet_digits", {"prune.grasp_temperature": 0.0, "criterion": "grasp", "sparsity": 0.9},
     "config.prune.grasp_temperature=0.0 must be > 0"),
    ("prune:lenet_digits", {"width": 0.0, "criterion": "snip", "sparsity": 0.9}, "config.width=0.0 must be in (0, 64]"),
    ("prune:lenet_digits", {"width": 0.001, "criterion": "snip", "sparsity": 0.9},
     "config.width=0.001 leaves layers with no units"),
    ("train:lenet_digits", {"train.lr": -1.0}, "config.train.lr=-1.0 must be > 0"),
    ("train:lenet_digits", {"train.momentum": 5.0}, "config.train.momentum=5.0 must be in [0, 1)"),
    ("train:lenet_digits", {"train.weight_decay": -0.1}, "config.train.weight_decay=-0.1 must be >= 0"),
    ("train:lenet_digits", {"train.lr_drop_epochs": (20, 10)}, "config.train.lr_drop_epochs=(20, 10) must be strictly increasing"),
    ("train:lenet_digits", {"train.lr_drop_factor": 1.5}, "config.train.lr_drop_factor=1.5 must be in (0, 1]"),
    ("train:lenet_digits", {"train.log_every_steps": -2}, "config.train.log_every_steps=-2 must be >= 0"),
    ("train:lenet_digits", {"train_seed": -5}, "config.train_seed=-5 must be >= 0 or -1"),
    ("train:lenet_digits", {"seed": -1}, "config.seed=-1 must be >= 0"),
    ("train:lenet_digits", {"mesh.data": 3}, "config.train.batch_size=64 must divide by config.mesh.data=3"),
    ("train:lenet_digits", {"mesh.seeds": 0}, "config.mesh.seeds=0 must be >= 1"),
    ("train:lenet_digits", {"distributed.initialize": "maybe"}, "config.distributed.initialize='maybe' is not known"),
    ("train:lenet_digits", {"train.lr": -1.0, "train.momentum": 5.0, "num_seeds": 0},
     "3 problems in the config"),  # All problems at once.
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.99, "prune.min_per_layer": 10000},
     "config.prune.min_per_layer=10000 x 3 prunable layers = 30000 weights, more than the 502 kept"),
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.9, "prune.ablation": "inverse"},
     "config.prune.ablation='inverse' is not known. Allowed: none, shuffle_layerwise, reinit, invert. "
     "Did you mean 'invert'?"),
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.9, "prune.grad_reduction": "avg"},
     "config.prune.grad_reduction='avg' is not known. Allowed: sum, mean."),
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.9, "prune.batch_size": 0},
     "config.prune.batch_size=0 must be >= 1"),
    ("prune:lenet_digits", {"criterion": "grasp", "sparsity": 0.9, "prune.grasp_sampling": "balance"},
     "Did you mean 'balanced'?"),
    ("prune:lenet_digits", {"criterion": "ntk_sap", "sparsity": 0.9, "prune.ntk_sap_epsilon": 0.0},
     "config.prune.ntk_sap_epsilon=0.0 must be > 0"),
    ("irp:lenet_digits", {"irp.rounds": 100000}, "prunes fewer than one of the 50200 weights in some round"),
    ("irp:lenet_digits", {"irp.keep_checkpoints": 0}, "config.irp.keep_checkpoints=0 must be >= 1"),
    ("irp:lenet_digits", {"prune.ablation": "invert"}, "IRP does not take it"),
    ("pai_sweep:lenet_digits", {"sweep.max_networks_per_program": -2}, "max_networks_per_program=-2"),
    ("pai_sweep:lenet_digits", {"sparsities": (0.5, 1.2)}, "config.sparsities=1.2 must lie in (0, 1)"),
    ("pai_sweep:lenet_digits", {"sweep.sparsities": (0.5,)},
     "config.sweep.sparsities was renamed config.sparsities (one field for the sparsities of the prune and sweep"),
    ("quickstart", {"sweep.train.lr": -1.0, "irp_snip.train.epochs": 0},
     "config.irp_snip.train.epochs=0 must be >= 1"),  # Every stage of a pipeline, before stage 1.
    ("ccc", {"ccc.field": "scores", "ccc.datasets": ("/a", "/b")}, "config.ccc.field='scores' is not known"),
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.9, "imports": ("no_such_module",)},
     "config.imports names 'no_such_module'"),
    # Structures (structure.py): N:M fixes the density; groups must divide every layer; known names only.
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.75, "prune.structure": "2:4"},
     "config.prune.structure='2:4' keeps exactly 2 of every 4 weights (density 0.5), but "
     "config.sparsity/sparsities (0.75) asks for density 0.25: set config.sparsity/sparsities (0.75) to 0.5"),
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.5, "prune.structure": "block:7x7"},
     "config.prune.structure='block:7x7': structure block:7x7: layer Dense_0/kernel's [inputs, outputs] view is "
     "64 x 300"),
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.5, "prune.structure": "chanel"},
     "config.prune.structure='chanel' is not a sparsity structure"),
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.5, "prune.group_reduce": "median"},
     "config.prune.group_reduce='median' is not known"),
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.5, "export": "zip"}, "config.export='zip' is not known"),
    ("prune:lenet_digits", {"criterion": "snip", "sparsity": 0.5, "workdir_lock": "maybe"},
     "config.workdir_lock='maybe' is not known"),
]


def with_values(config, overrides):
  """config with dotted fields set to any value (even of another type: what a user may write)."""
  flat = config.to_dict()
  for name, value in overrides.items():
    target = flat
    *path, last = name.split(".")
    for p in path:
      target = target.setdefault(p, {})  # A group the config lacks (an old name) is created.
    target[last] = value
  return ml_collections.ConfigDict(flat)


@pytest.mark.parametrize("config,overrides,message", BAD_INPUT, ids=[str(i) for i in range(len(BAD_INPUT))])
def test_bad_input_is_refused_with_a_message_naming_the_field(tmp_path, config, overrides, message):
  name, _, arg = config.partition(":")
  loaded = with_values(load_config(name, arg or None), overrides)
  with pytest.raises(ConfigError) as refused:
    jobs.run(loaded, str(tmp_path / "wd"))
  assert message in str(refused.value)
  assert not (tmp_path / "wd").exists()


IRP = ["--config=configs/irp.py:lenet_digits", "--config.irp.rounds=2", "--config.train.epochs=1",
       "--config.width=0.5", "--config.checkpoint_min_seconds=0"]


def test_non_finite_loss_stops_with_round_epoch_and_step_and_keeps_good_checkpoints(tmp_path):
  wd = tmp_path / "wd"
  proc = cli(*IRP, f"--workdir={wd}", "--config.train.lr=1e30", "--config.train.log_every_steps=5",
             "--config.irp.checkpoint_every_steps=5")
  assert proc.returncode == 3, proc.stderr[-2000:]
  assert "non-finite training loss" in proc.stderr and "round 0, epoch 1, steps 1-5" in proc.stderr
  assert "Traceback" not in proc.stderr
  # Round 0 diverges before its first mid-round checkpoint (pruning is not checkpointed: a resume
  # redoes it), so nothing non-finite may have been saved; every checkpoint there is finite.
  manager = ocp.CheckpointManager(str(wd / "checkpoints"))
  for step in manager.all_steps():
    restored = manager.restore(step, args=ocp.args.Composite(
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
  from soak import soak
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
  from autosparse_jax.lab.jobs import ccc
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


JOB_CONFIGS = {"train": ("train", "lenet_digits"), "prune": ("prune", "lenet_digits"), "irp": ("irp", "lenet_digits"),
               "sweep": ("pai_sweep", "lenet_digits"), "autos_train": ("autos_train", "mlp"), "ccc": ("ccc", None),
               "pipeline": ("quickstart", None)}


def bad_values(field):
  """Values `field` must refuse: of the wrong type, and (where it has them) outside its range or choices."""
  wrong_type = {"int": ["7", 1.5, True], "float": ["0.5", None], "bool": [1, "yes"], "str": [3, None],
                "regex": [3, None], "ints": [5, ("a",)], "floats": [0.5, ("a",)], "strs": ["abc", (1,)]}
  out = list(wrong_type.get(field.kind, []))
  scalar = {"ints": "int", "floats": "float"}.get(field.kind, field.kind)
  wrap = (lambda v: (v,)) if field.kind in ("ints", "floats", "strs") else (lambda v: v)
  if field.low is not None:
    below = field.low - (0 if field.low_open else (1 if scalar == "int" else 0.5))
    if not (field.minus_one and below == -1):
      out.append(wrap(int(below) if scalar == "int" else float(below)))
  if field.high is not None:
    out.append(wrap(field.high + (0 if field.high_open else 1)))
  if field.choices is not None:
    out.append(wrap("no_such_choice"))
  if field.kind == "regex":
    out.append("(unclosed")
  return out


@hypothesis.settings(max_examples=50, deadline=None, derandomize=True)
@hypothesis.given(hypothesis.strategies.data())
def test_every_schema_field_refuses_a_value_of_the_wrong_type_or_range_naming_it(data):
  field = data.draw(hypothesis.strategies.sampled_from([f for f in schema.FIELDS if f.kind != "any"]))
  value = data.draw(hypothesis.strategies.sampled_from(bad_values(field)))
  job = data.draw(hypothesis.strategies.sampled_from([j for j in field.jobs if j != "pipeline"] or ["pipeline"]))
  name, arg = JOB_CONFIGS[job]
  config = load_config(name, arg)
  if field.name not in schema.flatten(schema.config_to_dict(config)):
    return  # A field that job's config file does not carry (e.g. sparsities outside prune).
  found = schema.problems(with_values(config, {field.name: value}))
  assert any(f"config.{field.name}=" in p for p in found), (field.name, value, found)


def test_the_schema_covers_every_field_every_job_config_has():
  for job, (name, arg) in JOB_CONFIGS.items():
    flat = schema.flatten(schema.config_to_dict(load_config(name, arg)))
    unknown = [f for f in flat if f not in schema.BY_NAME and not f.startswith("sweep.variants.")
               and not (job == "pipeline" and f.split(".")[0] in flat.get("stages", ()))]
    assert not unknown, (job, unknown)


def test_cli_faults_of_the_command_line_and_files_are_one_line_exit_2(tmp_path):
  (tmp_path / "broken.py").write_text("def get_config(:\n")
  (tmp_path / "a_file").write_text("not a directory")
  cases = [([f"--config=configs/train.py:lenet_digits", "--config.train.epoch=3"],
            "--config.train.epoch: config.train.epoch is not a config field. Did you mean --config.train.epochs?"),
           (["--config=configs/nope.py"], "--config=configs/nope.py: no such config file"),
           ([f"--config={tmp_path / 'broken.py'}"], "could not be loaded"),
           (["--config=configs/irp.py:lenet_digits", "--config.sparsity=0.5"],
            "config.sparsity=0.5 is not read by the irp job"),
           (["--config=configs/train.py:lenet_digits", "--config.irp.rounds=3"],
            "this config has no field irp.rounds (it belongs to the config of: irp)"),
           (["--config=configs/autos_train.py:mlp", "--config.autos.backbone=vgg19"],
            "--config.autos.backbone: config.autos.backbone was renamed config.scorer.backbone"),
           (["--config=configs/quickstart.py", "--config.autos.autos.width=0.5"],
            "config.autos.autos.width was renamed config.autos.scorer.width"),
           (["--config=configs/quickstart.py", "--config.sweep.sparsities=(0.9,)",  # The stage's: not the fault.
             "--config.sweep.sweep.sparsities=(0.9,)"],
            "--config.sweep.sweep.sparsities: config.sweep.sweep.sparsities was renamed config.sweep.sparsities"),
           (["--config=configs/train.py:lenet_digits", "--config.criterion=snip", "--config.sparsity=0.98"],
            "the train job trains dense networks only; prune at init and train with the prune job (same fields, "
            "same networks): autosparse --config=configs/prune.py:lenet_digits "
            f"--config.criterion=snip --config.sparsity=0.98 --workdir={tmp_path / 'wd'}")]
  for args, message in cases:
    proc = cli(*args, f"--workdir={tmp_path / 'wd'}")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-1500:]
  with pytest.raises(ConfigError, match="is a file, not a directory"):
    jobs.run(load_config("train", "lenet_digits"), str(tmp_path / "a_file"))
  assert not (tmp_path / "wd").exists()


def test_non_finite_scores_stop_the_job_with_exit_3_and_write_no_results(tmp_path):
  wd = tmp_path / "wd"
  proc = cli("--config=configs/prune.py:lenet_digits", f"--workdir={wd}", "--config.imports=('tests.plugin_criterion',)",
             "--config.criterion=plugin_nan_scores", "--config.sparsity=0.9")
  assert proc.returncode == 3, proc.stderr[-2000:]
  assert "criterion 'plugin_nan_scores' gave non-finite scores (NaN or Inf) in layer(s) Dense_2/kernel" in proc.stderr
  assert "Traceback" not in proc.stderr and not (wd / "results.json").exists()


def test_a_full_disk_while_writing_results_keeps_the_earlier_results(tmp_path, monkeypatch):
  wd = workdir_lib.Workdir(str(tmp_path / "wd"), load_config("train", "lenet_digits"), is_writer=True)
  wd.start()
  wd.write_results({"test_accuracy": 0.5})
  before = (tmp_path / "wd" / "results.json").read_bytes()

  def full(*args, **kwargs):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(workdir_lib.json, "dump", full)
  with pytest.raises(OutputError, match="No space left on device.*the earlier one is intact"):
    wd.write_results({"test_accuracy": 0.9})
  assert (tmp_path / "wd" / "results.json").read_bytes() == before
  assert [p.name for p in (tmp_path / "wd").iterdir() if ".tmp." in p.name] == []


def test_a_workdir_written_before_a_field_was_renamed_is_compared_under_the_new_names(tmp_path):
  """config.json of an earlier release (autos_train's config.autos.*, now config.scorer.*; the sweep's
  config.sweep.sparsities, now config.sparsities), alone and as pipeline stages: the same config
  resumes there and config.json is rewritten with the new names; another config is refused, naming
  the field under its new name."""
  def old_names(job_config):
    if job_config["job"] == "autos_train":
      job_config["autos"] = job_config.pop("scorer")
    if job_config["job"] == "sweep":
      job_config["sweep"]["sparsities"] = job_config.pop("sparsities")
    return job_config

  def saved_by_earlier_release(config):
    saved = schema.config_to_dict(config)
    if saved["job"] == "pipeline":
      return dict(saved, **{stage: old_names(saved[stage]) for stage in saved["stages"]})
    return old_names(saved)

  for config, changed_field, old_value in (
      (with_values(load_config("autos_train", "mlp"), {"scorer.datasets": ("/x",)}), "scorer.width", 1.0),
      (load_config("pai_sweep", "lenet_digits"), "sparsities", [0.9, 0.95, 0.98, 0.99]),
      (load_config("quickstart"), "autos.scorer.width", 1.0),
      (load_config("quickstart"), "sweep.sparsities", [0.8, 0.9, 0.95])):
    wd = tmp_path / f"{config.job}_{changed_field}"
    wd.mkdir()
    (wd / "config.json").write_text(json.dumps(saved_by_earlier_release(config)))
    workdir_lib.Workdir(str(wd), config, is_writer=True).start()
    assert json.loads((wd / "config.json").read_text()) == schema.config_to_dict(config)  # Rewritten so.
    (wd / "config.json").write_text(json.dumps(saved_by_earlier_release(config)))
    changed = with_values(config, {changed_field: (0.5,) if "sparsities" in changed_field else 0.5})
    with pytest.raises(ConfigError, match=re.escape(f"{changed_field}: {old_value!r} -> ")):
      workdir_lib.Workdir(str(wd), changed, is_writer=True)
