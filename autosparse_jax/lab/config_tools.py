"""Config plumbing shared by the CLI, the workdir, the processes' agreement check and the tests."""
import importlib.util
import json
import os
import re

import ml_collections

# The job configs ship inside the package (the checkout's configs/ is a symlink to them), so an
# installed package runs jobs by name: --config=prune:lenet_mnist.
PACKAGED_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


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

  The CLI loads each config file by path (a packaged one or any other), so config
  files that build on others load them by path too: config_module(__file__, "irp.py").
  """
  path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(anchor_file)), relative))
  return module_from_path(path, "configs_" + re.sub(r"\W", "_", os.path.splitext(relative)[0]))


def load_config(name, arg=None, directory=PACKAGED_CONFIGS):
  """get_config(arg) of DIRECTORY/NAME.py, as the CLI's --config=NAME[:arg] loads it."""
  module = module_from_path(os.path.join(directory, f"{name}.py"))
  return module.get_config() if arg is None else module.get_config(arg)


def packaged_config_names():
  """Every packaged config by name, as --config=NAME takes it: 'prune', ..., 'paper/table1', ...

  A config is a file with a get_config (paper/common.py holds builders, not a config).
  """
  names = []
  for folder, subfolders, files in os.walk(PACKAGED_CONFIGS):
    subfolders[:] = sorted(d for d in subfolders if not d.startswith(("_", ".")))
    for file in sorted(files):
      if file.endswith(".py") and not file.startswith("_"):
        with open(os.path.join(folder, file)) as f:
          if re.search(r"^def get_config\(", f.read(), re.M):
            rel = os.path.relpath(os.path.join(folder, file[:-3]), PACKAGED_CONFIGS)
            names.append(rel.replace(os.sep, "/"))
  return names


def resolve_config_arg(value):
  """What ml_collections loads for --config=VALUE: VALUE itself when its part before ':' is a
  file (PATH[:arg], relative to the working directory), else a packaged config by name (NAME[:arg]:
  its path, with the arg). Anything else is returned as it is, for the caller to report."""
  spec, colon, arg = value.partition(":")
  if os.path.isfile(spec) or spec not in packaged_config_names():
    return value
  return os.path.join(PACKAGED_CONFIGS, *spec.split("/")) + ".py" + colon + arg
