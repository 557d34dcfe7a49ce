"""autosparse_jax: pruning at initialization learned from iterative rewind pruning.

Public API (autosparse_jax/api.py; loaded on first use, so `import autosparse_jax`
stays light for the command-line tools): score, prune, masked, apply_masks,
init_masks, register_criterion, criterion_names, cost (sparse_cost.py), export /
load_export (compact_export.py), sparse_training / current_masks (dynamic_sparsity.py: GMP,
SET, RigL), and autos.pretrained / autos.load_scorer.

Importing the package (before jax starts its backend) turns off XLA:CPU's
YNNPACK library fusions unless XLA_FLAGS already sets them: those fusions pick
reduction orders that depend on the size of the vmapped seed axis, so seed k of
a num_seeds=3 run would differ in the last bits from the num_seeds=1 run of seed
k. Measured cost on the dev CPU: none (LeNet epoch 0.60 s either way). GPUs
ignore the flag. To keep XLA's default, set
XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,... yourself.
"""
import os

_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
if _YNN_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_YNN_FLAG}=".strip()

# JAX's persistent compilation cache, on by default: a job, a test or a rerun compiles each
# program once per machine, not once per process (the quickstart compiles ~270 programs).
# It lives in $XDG_CACHE_HOME/autosparse_jax/xla (~/.cache/autosparse_jax/xla without it);
# AUTOSPARSE_COMPILATION_CACHE moves it (a directory) or turns it off ("off"); JAX's own
# JAX_COMPILATION_CACHE_DIR, when set, wins and is left alone. Cached executables are the ones
# XLA would build: results are bit-identical with and without the cache.
CACHE_ENV = "AUTOSPARSE_COMPILATION_CACHE"


def default_cache_dir():
  """$XDG_CACHE_HOME/autosparse_jax/xla (the XDG base directory spec: ~/.cache when unset or empty)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "autosparse_jax", "xla")


def _enable_compilation_cache():
  where = os.environ.get(CACHE_ENV, default_cache_dir())
  if where.lower() in ("", "0", "off", "none", "false") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  import jax  # After XLA_FLAGS above: the backend starts later, at the first computation.
  jax.config.update("jax_compilation_cache_dir", where)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_enable_compilation_cache()


_API = ("score", "prune", "masked", "apply_masks", "init_masks", "register_criterion", "criterion_names")


# sparse_training lives in dynamic_sparsity.py, a module of another name: importing a submodule
# sets it as an attribute of the package, which would shadow a function of the same name.
_ELSEWHERE = {"cost": "autosparse_jax.sparse_cost", "export": "autosparse_jax.compact_export",
              "load_export": "autosparse_jax.compact_export",
              "sparse_training": "autosparse_jax.dynamic_sparsity", "current_masks": "autosparse_jax.dynamic_sparsity"}


def __getattr__(name):
  import importlib
  if name in _API:
    return getattr(importlib.import_module("autosparse_jax.api"), name)
  if name in _ELSEWHERE:
    return getattr(importlib.import_module(_ELSEWHERE[name]), name)
  if name == "autos":
    return importlib.import_module("autosparse_jax.autos")
  raise AttributeError(f"module 'autosparse_jax' has no attribute {name!r}")


__all__ = list(_API) + list(_ELSEWHERE) + ["autos"]
