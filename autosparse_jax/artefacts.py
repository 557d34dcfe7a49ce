"""The one reader and the one writer of every file a job reads or writes.

Writer: every file goes to a temporary file in its own directory, is flushed and
fsynced, then renamed over its name (and the directory fsynced): a kill at any
instant leaves the old file or the new one, never a torn one. A failed write (a
full disk, a permission) removes the temporary file, leaves the earlier file as
it was and raises OutputError naming the file (the CLI's exit 4).

Reader: a file that does not parse, is empty, lacks a field this version needs or
holds a field of the wrong type raises DamagedFile, one line naming the file, what
is wrong and the fix (the CLI's exit 2; a ConfigError, so a ValueError for the
API); nothing is overwritten. A JSON-lines log whose LAST line is cut short (the
state a SIGKILL mid-append leaves) loses that line with a warning; a bad line
before the last is damage.
"""
import io
import json
import os

from autosparse_jax.console import log
from autosparse_jax.errors import ConfigError, OutputError


class DamagedFile(ConfigError):
  """A file a job reads is unreadable: the message names it, what is wrong and the fix."""


def _damaged(path, what, fix):
  return DamagedFile(f"{path} is damaged ({what}); nothing was changed. {fix}")


# ---- Writing.

def _fsync_directory(directory):
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass  # Some filesystems cannot fsync a directory; the rename is still atomic.
  finally:
    os.close(fd)


def write_atomic(path, write, binary=False):
  """Writes `path` through write(file) into a temporary file, then renames it into place."""
  directory = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
  try:
    with open(tmp, "wb" if binary else "w") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    kept = "the earlier one is intact" if os.path.exists(path) else "there was none before"
    raise OutputError(f"could not write {path} ({e.strerror or e}); {kept}. Free space (or fix the "
                      "permissions) and run the same command again: finished work is not redone.") from None
  _fsync_directory(directory)


def write_json(path, obj):
  def write(f):
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
  write_atomic(path, write)


def write_text(path, text):
  write_atomic(path, lambda f: f.write(text))


def write_jsonl(path, records):
  write_atomic(path, lambda f: f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records))


def save_figure(fig, path, **kwargs):
  """A matplotlib figure as `path` (its format from the extension), atomically."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format=os.path.splitext(path)[1].lstrip(".") or "png", **kwargs)
  write_atomic(path, lambda f: f.write(buffer.getvalue()), binary=True)


def append_jsonl(path, records):
  """Appends JSON lines (flushed and synced). Appends are not atomic: read_jsonl drops a torn last line."""
  try:
    with open(path, "a") as f:
      for record in records:
        f.write(json.dumps(record, sort_keys=True) + "\n")
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    raise OutputError(f"could not append to {path} ({e.strerror or e}); the lines written before are "
                      "intact. Free space and run the same command again.") from None


# ---- Reading.

_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "true or false"}


def _type_name(types):
  types = types if isinstance(types, tuple) else (types,)
  return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def read_json(path, fix, required=None):
  """The JSON object in `path`; DamagedFile naming it and `fix` if it is not what this version wrote.

  required: {field: type or tuple of types} the object must hold.
  """
  try:
    with open(path) as f:
      text = f.read()
  except OSError as e:
    raise DamagedFile(f"{path} cannot be read ({e.strerror or e}). {fix}") from None
  except UnicodeDecodeError:
    raise _damaged(path, "not text", fix) from None
  if not text.strip():
    raise _damaged(path, "empty: cut short while being written", fix)
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise _damaged(path, f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", fix) from None
  if not isinstance(obj, dict):
    raise _damaged(path, f"it holds {_type_name(type(obj))}, not a JSON object", fix)
  for field, types in (required or {}).items():
    if field not in obj:
      raise _damaged(path, f"no {field!r} field: cut short, or written by another version", fix)
    value = obj[field]
    bad_bool = isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
    if not isinstance(value, types) or bad_bool:
      raise _damaged(path, f"{field!r} is {value!r}, expected {_type_name(types)}", fix)
  return obj


def read_jsonl(path, fix="", quiet=False, whole=False):
  """Records of a JSON-lines file (none if it is missing).

  A cut-short LAST line (a kill mid-append) is dropped with a warning; an unreadable
  line before it is DamagedFile naming the line. whole=True: None in place of each
  unreadable line, nothing raised (to detect them).
  """
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      lines = f.readlines()
  except (OSError, UnicodeDecodeError) as e:
    raise DamagedFile(f"{path} cannot be read ({e}). {fix}") from None
  rows = []
  for number, line in enumerate(lines, 1):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if whole:
        rows.append(None)
      elif number == len(lines):
        if not quiet:
          log(f"warning: dropping the cut-short last line of {path} (a write interrupted by a kill).")
      elif not line.strip():
        continue
      else:
        raise _damaged(path, f"line {number} of {len(lines)} is not valid JSON", fix)
  return rows
