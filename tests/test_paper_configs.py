"""configs/paper/*.py: each loads as the CLI loads it, is a valid pipeline, and wires the paper's experiment.

References are resolved with fake stage results (pipeline.stage_config), so every
"@STAGE.FIELD[i]" is checked to land on the dataset / scorer the paper means. No
training: the whole file runs in seconds.
"""
import importlib.util
import os
import re
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

from autosparse_jax.lab import config_tools, recipes
from autosparse_jax.lab.jobs import sweep
from autosparse_jax.lab.jobs.pipeline import stage_config, validate as validate_pipeline
from tests.conftest import REPO, load_config

PAPER = os.path.join(config_tools.PACKAGED_CONFIGS, "paper")
PAPER_TEXT = os.path.join(os.path.dirname(REPO), "shared", "paper", "autosparse-paper.txt")
NAMES = sorted(n.split("/", 1)[1] for n in config_tools.packaged_config_names() if n.startswith("paper/"))
FAKE = re.compile(r"^/fake/(?P<stage>\w+)/scores/seed_(?P<seed>\d+)$")
JOB_OF_PREFIX = (("irp_", "irp"), ("autos", "autos_train"), ("sweep", "sweep"), ("ccc_", "ccc"))


def module(name):
  spec = importlib.util.spec_from_file_location(f"paper_{name}", os.path.join(PAPER, f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def cases():
  """(config name, arg) for every config and every documented arg (module.ARGS)."""
  out = []
  for name in NAMES:
    args = getattr(module(name), "ARGS", (None,))
    out += [(name, arg) for arg in args]
  return out


def fake_results(config):
  """What each stage's results.json would hold, as far as references read it."""
  results = {}
  for name in config.stages:
    stage = config[name]
    if stage.job == "irp":
      seeds = [int(stage.seed) + i for i in range(int(stage.num_seeds))]
      dirs = [f"/fake/{name}/scores/seed_{s}" for s in seeds]
      results[name] = {"score_dataset_dir": dirs if len(dirs) > 1 else dirs[0], "seeds": seeds}
    elif stage.job == "autos_train":
      results[name] = {"scorer_dir": f"/fake/{name}/scorer"}
    else:
      results[name] = {"table": [], "files": [], "pairs": []}
  return results


def resolved(config):
  results = fake_results(config)
  return {name: stage_config(config, name, results) for name in config.stages}


def origins(paths):
  """[(stage, seed)] of resolved score-dataset paths; fails on anything else (e.g. a '[0]' of a string)."""
  out = []
  for p in paths:
    m = FAKE.match(p)
    assert m, f"{p!r} is not a whole score_dataset_dir (a reference indexed a string?)"
    out.append((m["stage"], int(m["seed"])))
  return out


def sweep_variants(stage):
  """{label: (criterion, config)} as the sweep job builds them (set_fields rejects unknown fields)."""
  return {label: (criterion, vconfig) for label, criterion, vconfig in sweep.variants(stage)}


def scorer_stage(vconfig):
  m = re.match(r"^/fake/(\w+)/scorer$", vconfig.autos.scorer_dir)
  assert m, f"autos.scorer_dir={vconfig.autos.scorer_dir!r} is not an autos_train stage's scorer_dir"
  return m[1]


# --- every config -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,arg", cases())
def test_loads_as_a_valid_pipeline_with_the_right_jobs(name, arg):
  config = load_config(f"paper/{name}", arg)
  assert config.job == "pipeline"
  validate_pipeline(config)
  for stage in config.stages:
    expected = next(job for prefix, job in JOB_OF_PREFIX if stage.startswith(prefix))
    assert config[stage].job == expected, f"{name}:{arg} stage {stage}"
  stages = resolved(config)
  for stage_name, stage in stages.items():
    recipe = next((r for r in recipes.RECIPES.values()
                   if (r["model"], r["dataset"]) == (stage.get("model"), stage.get("dataset"))), None)
    if stage.job in ("irp", "sweep"):  # The paper's recipes, untouched.
      assert recipe and int(stage.train.epochs) == recipe["train"]["epochs"], stage_name
      assert float(stage.train.lr) == recipe["train"]["lr"], stage_name
    if stage.job == "irp":
      assert float(stage.irp.final_density) == 0.01 and stage.irp.schedule == "count"
    if stage.job == "autos_train":
      assert stage.scorer.datasets and origins(stage.scorer.datasets)
      assert int(stage.train.epochs) == 10 and int(stage.train.batch_size) == 1024
    if stage.job == "ccc":
      assert len(origins(stage.ccc.datasets)) == 2
    if stage.job == "sweep":
      assert int(stage.seed) == 0 and int(stage.num_seeds) == 3  # Seeds 0, 1, 2 (Appendix E).
      autos_scorers = []
      for label, (criterion, vconfig) in sweep_variants(stage).items():
        if criterion == "autos":
          autos_scorers.append(scorer_stage(vconfig))
          assert config[autos_scorers[-1]].job == "autos_train"
        if criterion == "survival":
          origins(vconfig.survival.score_datasets)
      assert len(set(autos_scorers)) == len(autos_scorers), f"{stage_name}: variants share a scorer"


@pytest.mark.parametrize("name", NAMES)
def test_docstring_gives_command_compute_and_a_reduced_command_that_parses(name):
  mod = module(name)
  doc = mod.__doc__
  assert f"python -m autosparse_jax.lab.main --config=configs/paper/{name}.py" in doc
  assert "GPU-hours" in doc and "H200" in doc and "Paper numbers" in doc
  assert "Not reproduced exactly" in doc
  # The reduced command: every --config override must name an existing field (as the CLI checks).
  text = doc.replace("\\\n", " ")
  reduced = text[text.index("Reduced"):]
  line = next(l for l in reduced.splitlines() if "python -m autosparse_jax.lab.main" in l)
  args = [a for a in shlex.split(line[line.index("python"):]) if a.startswith("--config")]
  args[0] = args[0].replace("configs/paper/", os.path.join(PAPER, ""))
  values = flags.FlagValues()  # As main.py defines --config (overrides are found in sys_argv).
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=["prog"] + args)
  values(["prog"] + args)
  config = values.config
  validate_pipeline(config)
  arg = args[0].split(":")[1] if ":" in args[0] else None
  plain = load_config(f"paper/{name}", arg)
  overridden = [a[len("--config."):].split("=") for a in args[1:]]
  assert overridden, f"{name}: the reduced command overrides nothing"
  for path, value in overridden:
    got, before = config, plain
    for part in path.split("."):
      got, before = got[part], before[part]
    assert str(got) == value and got != before, f"{name}: --config.{path}={value} did not apply"


@pytest.mark.parametrize("name", NAMES)
def test_paper_numbers_in_docstrings_are_the_papers(name):
  if not os.path.exists(PAPER_TEXT):
    pytest.skip(f"paper text not found at {PAPER_TEXT}")
  paper = open(PAPER_TEXT).read()
  doc = module(name).__doc__
  section = doc[doc.index("Paper numbers"):doc.index("Compute on one H200")]
  numbers = re.findall(r"(?<![+\d])-?\d+\.\d+", section)  # "+-0.52" is a std: 0.52
  assert numbers or name == "fig3"
  missing = [n for n in numbers if n not in paper]
  assert not missing, f"{name}: {missing} are not in the paper text"


# --- what each experiment wires -----------------------------------------------------------------


@pytest.mark.parametrize("arg", module("fig3").ARGS)
def test_fig3_sweeps_each_target_with_the_one_resnet18_cifar10_scorer(arg):
  fig3 = module("fig3")
  stages = resolved(load_config("paper/fig3", arg))
  irp = stages["irp_snip"]
  assert (irp.model, irp.dataset, irp.criterion, int(irp.irp.rounds), int(irp.num_seeds)) == \
      ("resnet18", "cifar10", "snip", 20, 1)
  assert stages["autos"].scorer.backbone == "resnet18"
  assert origins(stages["autos"].scorer.datasets) == [("irp_snip", 0)]
  sweeps = {n: s for n, s in stages.items() if s.job == "sweep"}
  targets = fig3.TARGETS if arg == "all" else (arg,)
  assert len(sweeps) == len(targets)
  for target, (_, s) in zip(targets, sweeps.items()):
    assert (s.model, s.dataset) == (recipes.RECIPES[target]["model"], recipes.RECIPES[target]["dataset"])
    assert set(s.sweep.criteria) == {"random", "snip", "grasp", "npb", "autos"} and s.sweep.dense
    assert tuple(s.sparsities) == (0.2, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99)
    assert s.autos.scorer_dir == "/fake/autos/scorer"


def test_table1_prunes_tiny_imagenet_with_the_cifar10_scorer():
  stages = resolved(load_config("paper/table1"))
  s = stages["sweep"]
  assert (s.model, s.dataset, int(s.train.epochs)) == ("resnet18", "tiny_imagenet", 300)
  assert tuple(s.sparsities) == (0.3, 0.5, 0.7, 0.9)
  assert tuple(s.sweep.criteria) == ("snip", "grasp", "npb", "autos")
  assert s.autos.scorer_dir == "/fake/autos/scorer"
  assert (stages["irp_snip"].model, stages["irp_snip"].dataset) == ("resnet18", "cifar10")


def test_table2_three_scorers_differ_only_in_their_inputs():
  stages = resolved(load_config("paper/table2_inputs"))
  variants = sweep_variants(stages["sweep"])
  features = {label: tuple(stages[scorer_stage(v)].scorer.features) for label, (_, v) in variants.items()}
  assert features == {"autos_param": ("theta0",), "autos_grad": ("g0",), "autos_both": ("theta0", "g0")}
  data = {tuple(stages[n].scorer.datasets) for n in ("autos_param", "autos_grad", "autos_both")}
  assert len(data) == 1 and origins(data.pop()) == [("irp_snip", 0)]


def test_table3_autos_from_lth_and_snip_iter_and_the_irp_masks_on_every_sweep_seed():
  stages = resolved(load_config("paper/table3_irp_method"))
  assert stages["irp_lth"].criterion == "magnitude" and stages["irp_snip"].criterion == "snip"
  variants = sweep_variants(stages["sweep"])
  assert origins(stages[scorer_stage(variants["autos_lth"][1])].scorer.datasets) == [("irp_lth", 0)]
  assert origins(stages[scorer_stage(variants["autos_snip_iter"][1])].scorer.datasets) == [("irp_snip", 0)]
  first = int(stages["sweep"].seed)
  sweep_seeds = list(range(first, first + int(stages["sweep"].num_seeds)))
  for label, irp in (("lth", "irp_lth"), ("snip_iter", "irp_snip")):
    criterion, v = variants[label]
    assert criterion == "survival"
    assert origins(v.survival.score_datasets) == [(irp, s) for s in sweep_seeds]


@pytest.mark.parametrize("arg,backbones", [("all", ("resnet18", "vgg19")), ("resnet18", ("resnet18",)),
                                           ("vgg19", ("vgg19",))])
def test_table4_every_source_x_backbone_scorer(arg, backbones):
  table4 = module("table4_source_model")
  stages = resolved(load_config("paper/table4_source_model", arg))
  seen = set()
  for label, (criterion, v) in sweep_variants(stages["sweep"]).items():
    scorer = stages[scorer_stage(v)]
    [(irp_name, seed)] = origins(scorer.scorer.datasets)
    irp = stages[irp_name]
    source = next(r for r in table4.SOURCES if (recipes.RECIPES[r]["model"], recipes.RECIPES[r]["dataset"])
                  == (irp.model, irp.dataset))
    seen.add((source, scorer.scorer.backbone))
    assert criterion == "autos" and seed == 0 and irp.criterion == "snip"
  assert seen == {(s, b) for s in table4.SOURCES for b in backbones}
  assert tuple(stages["sweep"].sparsities) == (0.9, 0.95, 0.99)
  assert (stages["sweep"].model, stages["sweep"].dataset) == ("resnet18", "cifar10")


def test_table5_scorers_learn_from_20_40_and_100_round_irps_of_one_init():
  stages = resolved(load_config("paper/table5_iterations"))
  rounds = {}
  for label, (_, v) in sweep_variants(stages["sweep"]).items():
    [(irp, seed)] = origins(stages[scorer_stage(v)].scorer.datasets)
    rounds[label] = (int(stages[irp].irp.rounds), seed, stages[irp].criterion)
  assert rounds == {"autos_20": (20, 0, "snip"), "autos_40": (40, 0, "snip"), "autos_100": (100, 0, "snip")}


def test_table6_merges_splice_the_right_datasets():
  stages = resolved(load_config("paper/table6_merges"))
  merged = {}
  for label, (_, v) in sweep_variants(stages["sweep"]).items():
    merged[label] = [(int(stages[irp].irp.rounds), stages[irp].criterion, seed)
                     for irp, seed in origins(stages[scorer_stage(v)].scorer.datasets)]
  assert merged == {
      "autos_3x20": [(20, "snip", 0), (20, "snip", 1), (20, "snip", 2)],
      "autos_20_40_100": [(20, "snip", 0), (40, "snip", 0), (100, "snip", 0)],
      "autos_mag_snip": [(20, "magnitude", 0), (20, "snip", 0)],
  }


def test_table9_cells_compare_the_right_runs():
  table9 = module("table9_ccc")
  config = load_config("paper/table9_ccc")
  stages = resolved(config)
  cells = [n for n in config.stages if n.startswith("ccc_")]
  assert len(cells) == 2 * len(table9.PAIRS) == 20
  for a, b in table9.PAIRS:
    for column in ("same", "diff"):
      (stage_a, seed_a), (stage_b, seed_b) = origins(stages[f"ccc_{column}_{a}_{b}"].ccc.datasets)
      assert stages[stage_a].criterion == table9.CRITERIA[a] and stages[stage_b].criterion == table9.CRITERIA[b]
      assert seed_a == 0 and seed_b == (0 if column == "same" else 1)
      assert (stage_a, seed_a) != (stage_b, seed_b)  # Never a dataset against itself.
      if column == "same" and a == b:  # Same theta_0, another run.
        assert stage_b == f"irp_{b}_rerun" and int(stages[stage_b].train_seed) != int(stages[stage_b].seed)
  assert stages["irp_snip"].model == "lenet_300_100" and config.survival_figure_stage == "irp_snip"


def test_table9_same_init_reruns_are_supported_by_the_jobs():
  assert "train_seed" in recipes.base_config()
  config = load_config("paper/table9_ccc")
  for name in config.stages:
    if name.endswith("_rerun"):
      assert int(config[name].train_seed) != int(config[name].seed)
