"""The job configs, shipped in the package: `--config=NAME[:arg]` runs one by name
(`prune:lenet_mnist`, `paper/table1`), config_tools.load_config(NAME, arg) loads one.

Each file defines get_config([arg]) and is loaded by path, as ml_collections loads any
config file (configs that build on others load them with config_tools.config_module);
this is a package so that the files ship in the wheel. The checkout's configs/ is a
symlink to this folder, so --config=configs/NAME.py[:arg] works there too.
"""
