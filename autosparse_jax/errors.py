"""User-facing errors: each names the field, the bad value and the fix."""
import difflib


class ConfigError(ValueError):
  """A config field has a bad value; the CLI prints the message without a traceback."""


class NumericalError(RuntimeError):
  """A non-finite loss or score: the job stops (exit 3) and keeps its last good checkpoint."""


class OutputError(RuntimeError):
  """Results could not be written (e.g. a full disk): exit 4, the earlier results are intact."""


def unknown_name_message(field, value, allowed):
  guess = difflib.get_close_matches(str(value), list(allowed), n=1)
  hint = f" Did you mean {guess[0]!r}?" if guess else ""
  return f"{field}={value!r} is not known. Allowed: {', '.join(allowed)}.{hint}"
