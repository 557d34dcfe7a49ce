"""Which XLA programs this process compiled, and whether any was built twice.

JAX's persistent compilation cache (on by default: autosparse_jax/__init__.py)
logs one record per executable it needs, a hit (loaded from the cache
directory) or a miss (compiled by XLA), with the program's cache key: a hash
of its HLO, compile options and backend. A key seen twice in one process is a
program built twice, i.e. a jitted function re-created instead of reused. The
records are read with a logging filter (public logging API; they are DEBUG
records, dropped after counting unless the logger's level lets them through).

  install()        start counting (idempotent); the CLI does it for every job
  summary()        {"programs", "compiled", "from_cache", "built_twice": {name: times},
                    "by_name": {name: distinct programs}}
  line(always)     one line for the job's log (always=False: only when a program was built more
                   than once; the CLI's --verbose prints it always), or None when the cache is off

AUTOSPARSE_COMPILE_STATS=FILE writes summary() as JSON to FILE at exit (tests,
benchmarks).
"""
import atexit
import collections
import logging
import os

STATS_ENV = "AUTOSPARSE_COMPILE_STATS"
_LOGGER = "jax._src.compiler"
_HIT = "Persistent compilation cache hit for"
_MISS = "PERSISTENT COMPILATION CACHE MISS for"


class _Recorder(logging.Filter):

  def __init__(self, threshold):
    super().__init__()
    self.threshold = threshold  # The logger's level before install(): what it used to let through.
    self.compiled = collections.Counter()  # cache key -> times XLA compiled it in this process
    self.loaded = collections.Counter()    # cache key -> times it came from the cache directory
    self.names = {}

  def filter(self, record):
    msg = record.msg if isinstance(record.msg, str) else ""
    if (msg.startswith(_HIT) or msg.startswith(_MISS)) and len(record.args or ()) == 2:
      name, key = record.args
      (self.loaded if msg.startswith(_HIT) else self.compiled)[key] += 1
      self.names[key] = name
    return record.levelno >= self.threshold


_recorder = None


def install():
  """Starts counting this process's compilations (idempotent)."""
  global _recorder
  if _recorder is not None:
    return _recorder
  logger = logging.getLogger(_LOGGER)
  _recorder = _Recorder(logger.getEffectiveLevel())
  logger.addFilter(_recorder)
  logger.setLevel(logging.DEBUG)  # The hit/miss records are DEBUG; the filter drops what was hidden.
  path = os.environ.get(STATS_ENV)
  if path:
    atexit.register(_write, path)
  return _recorder


def summary():
  r = _recorder
  if r is None:
    return None
  keys = set(r.compiled) | set(r.loaded)
  twice = collections.Counter()
  for key in keys:
    times = r.compiled[key] + r.loaded[key]
    if times > 1:
      twice[r.names[key]] += times - 1
  return {"programs": len(keys), "compiled": sum(r.compiled.values()), "from_cache": sum(r.loaded.values()),
          "built_twice": dict(sorted(twice.items())),
          "by_name": dict(collections.Counter(r.names[k] for k in keys).most_common())}


def line(always=True):
  """The summary line; always=False: only when a program was built more than once (else None)."""
  s = summary()
  if not s or not s["programs"]:
    return None
  twice = sum(s["built_twice"].values())
  if not always and not twice:
    return None
  return (f"XLA programs: {s['programs']} ({s['compiled']} compiled, {s['from_cache']} from the compilation "
          f"cache)" + (f"; {twice} built more than once: {', '.join(s['built_twice'])}" if twice else ""))


def _write(path):
  from autosparse_jax import artefacts  # Lazily: this module loads before the rest of the package.
  artefacts.write_json(path, summary())
