"""Shared fixtures: real data from ../shared/data (skipped where absent), small configs."""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("AUTOSPARSE_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data"))


def shared_raw_dir(name):
  path = os.path.join(SHARED_DATA, name)
  if not os.path.isdir(path):
    pytest.skip(f"real raw data not found at {path} (set AUTOSPARSE_SHARED_DATA to a folder "
                "holding mnist/ and cifar10-subset/ in the official formats)")
  return path


@pytest.fixture(scope="session")
def prepared_data_dir(tmp_path_factory):
  """A TFDS data dir where real MNIST and the CIFAR-10 subset are prepared on first use."""
  from autosparse_jax.data.prepare import prepare

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  done = set()

  def get(name):
    raw = {"mnist": "mnist", "cifar10": "cifar10-subset"}[name]
    if name not in done:
      prepare(name, data_dir=data_dir, raw_dir=shared_raw_dir(raw), log=lambda *_: None)
      done.add(name)
    return data_dir
  return get


def load_config(name, arg=None):
  """get_config(arg) of configs/NAME.py, as the CLI loads it."""
  from autosparse_jax.lab.config_tools import load_config as load
  return load(name, arg)


def small_config(**overrides):
  """A seconds-long LeNet config on synthetic data; overrides as dotted names."""
  from autosparse_jax.lab import recipes

  config = recipes.base_config()
  config.dataset = "synthetic"
  config.width = 0.2
  config.train.update(dict(epochs=2, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9,
                           nesterov=True, weight_decay=5e-4))
  return apply_overrides(config, overrides)


def apply_overrides(config, overrides):
  """Sets dotted names ('train.lr') of a ConfigDict, as --config.train.lr does."""
  for name, value in overrides.items():
    target = config
    *path, last = name.split(".")
    for p in path:
      target = target[p]
    target[last] = value
  return config
