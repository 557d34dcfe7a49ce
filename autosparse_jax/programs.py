"""Caches of compiled programs and loaded artefacts: keyed by one helper, bounded, and purged on change.

Every process-wide cache of the package is a `BoundedCache` (least recently used
entries go first) or, for keys that must not outlive their function, a `WeakCache`;
both register themselves here, so `forget(obj)` and `reset()` reach every one of
them (a test walks the package for caches made any other way). Every compiled-program key is made by `program_key` from
everything the program reads: what it computes, the pruning spec's fields a program
reads (programs.py never guesses them: PruneSpec.program_fields lists them), the
criterion itself (its Criterion record, so a re-registered name is another key),
the network (a Flax module, or a plain apply_fn by its traced computation:
`function_fingerprint`), the arguments' shapes and dtypes, and the float64 flag.

Re-registering a criterion (criteria.register(..., replace=True)) calls
`forget(old_criterion)`: every cached program whose key holds it is dropped.
Loaded files (AutoS scorers, score datasets) are keyed by `directory_stamp`: a
rewritten directory is another key, never the old contents.
"""
import collections
import hashlib
import os
import threading
import weakref

import jax
import numpy as np

_CACHES = weakref.WeakSet()  # Every cache of the package, so that forget() and reset() reach them all.


class BoundedCache:
  """A least-recently-used dict of at most `maxsize` entries, built on demand."""

  def __init__(self, maxsize, name=""):
    self.maxsize, self.name = int(maxsize), name
    self._entries = collections.OrderedDict()
    self._lock = threading.Lock()
    self.builds = 0  # How many entries were built (tests: a hit builds nothing).
    _CACHES.add(self)

  def get(self, key, build):
    with self._lock:
      if key in self._entries:
        self._entries.move_to_end(key)
        return self._entries[key]
    value = build()
    with self._lock:
      self.builds += 1
      self._entries[key] = value
      self._entries.move_to_end(key)
      while len(self._entries) > self.maxsize:
        self._entries.popitem(last=False)
    return value

  def drop(self, predicate):
    """Drops the entries whose key satisfies `predicate`; returns how many."""
    with self._lock:
      gone = [k for k in self._entries if predicate(k)]
      for k in gone:
        del self._entries[k]
    return len(gone)

  def clear(self):
    with self._lock:
      self._entries.clear()

  def __len__(self):
    return len(self._entries)

  def __contains__(self, key):
    return key in self._entries


class WeakCache:
  """{object: BoundedCache(maxsize)}: entries live while their object does (a user's apply_fn)."""

  def __init__(self, maxsize, name=""):
    self.maxsize, self.name = int(maxsize), name
    self._entries = weakref.WeakKeyDictionary()
    _CACHES.add(self)

  def get(self, owner, key, build):
    try:
      per_owner = self._entries.get(owner)
      if per_owner is None:
        per_owner = self._entries[owner] = BoundedCache(self.maxsize, f"{self.name} of one function")
    except TypeError:  # Not weak-referenceable (a builtin): build every time.
      return build()
    return per_owner.get(key, build)

  def drop(self, predicate):
    return sum(c.drop(predicate) for c in list(self._entries.values()))

  def clear(self):
    self._entries.clear()

  def __len__(self):
    return len(self._entries)


def reset():
  """Empties every cache of the process (compiled programs, loaded scorers and datasets, the task)."""
  for cache in list(_CACHES):
    cache.clear()


def _holds(key, obj):
  if key is obj:
    return True
  if isinstance(key, tuple):
    return any(_holds(k, obj) for k in key)
  return False


def forget(obj):
  """Drops, from every cache, the entries whose key holds `obj` (e.g. a replaced Criterion)."""
  return sum(cache.drop(lambda key: _holds(key, obj)) for cache in list(_CACHES))


def abstract(tree):
  """The shapes and dtypes of a pytree's leaves, with its structure: hashable."""
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x).__name__))) for x in leaves)


_FINGERPRINTS = WeakCache(8, "function fingerprints")  # fn -> {abstract args: fingerprint}


def function_fingerprint(fn, *args):
  """A key for a plain function by what it computes on abstract `args`: its jaxpr and constants.

  Two lambdas that run the same network (the same jaxpr, the same closed-over values)
  get the same fingerprint, so a user who builds a fresh `lambda p, x: net.apply(...)`
  per call still reuses one compiled program; different networks, shapes or closed-over
  arrays never share one. Costs one trace of `fn` per (fn, shapes), remembered while
  `fn` lives.
  """
  specs = abstract(args)

  def fingerprint():
    shaped = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), args)
    closed = jax.make_jaxpr(fn)(*shaped)
    digest = hashlib.sha256(str(closed.jaxpr).encode())
    for const in closed.consts:
      value = np.asarray(const)
      digest.update(f"{value.dtype}{value.shape}".encode())
      digest.update(value.tobytes())
    return ("fn", digest.hexdigest())

  return _FINGERPRINTS.get(fn, specs, fingerprint)


def program_key(what, *, spec=None, criterion=None, model=None, args=(), **extra):
  """The key of a compiled program: everything it reads (see the module docstring)."""
  return (what,
          spec.program_fields() if spec is not None else None,
          criterion,
          model,
          abstract(args) if args else None,
          bool(jax.config.jax_enable_x64),
          tuple(sorted(extra.items())))


def directory_stamp(path):
  """(absolute path, every file's path, size and mtime): another value once anything in it changes."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    return (path,)
  stamps = []
  for root, _, files in sorted(os.walk(path)):
    for name in sorted(files):
      st = os.stat(os.path.join(root, name))
      stamps.append((os.path.relpath(os.path.join(root, name), path), st.st_size, st.st_mtime_ns))
  return (path, tuple(stamps))
