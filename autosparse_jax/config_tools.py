"""Config plumbing shared by the CLI, the workdir, the processes' agreement check and the tests."""
import importlib.util
import json
import os
import re

import ml_collections

REPO_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def flatten(d, prefix=""):
  """{'train.lr': 0.1, ...} of a nested dict."""
  out = {}
  for key, value in d.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def config_to_dict(config):
  """A plain JSON-able dict of a ConfigDict (or of a dict)."""
  return json.loads(config.to_json_best_effort()) if isinstance(
      config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)) else dict(config)


def canonical_json(config):
  """One string per content of a ConfigDict (or dict): sorted keys; the key of compiled programs."""
  return json.dumps(config_to_dict(config), sort_keys=True, default=str)


def module_from_path(path, name=None):
  name = name or "configs_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def config_module(anchor_file, relative):
  """The config file `relative` to the directory of `anchor_file`, loaded as a module.

  configs/ is not a package (the CLI loads each file by path), so config files
  that build on others load them by path too: config_module(__file__, "irp.py").
  """
  path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(anchor_file)), relative))
  return module_from_path(path, "configs_" + re.sub(r"\W", "_", os.path.splitext(relative)[0]))


def load_config(name, arg=None, directory=REPO_CONFIGS):
  """get_config(arg) of DIRECTORY/NAME.py, as the CLI's --config=configs/NAME.py[:arg] loads it."""
  module = module_from_path(os.path.join(directory, f"{name}.py"))
  return module.get_config() if arg is None else module.get_config(arg)
