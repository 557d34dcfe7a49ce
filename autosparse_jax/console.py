"""The one `log`: progress lines on stdout, from process 0 only (the processes compute the same)."""
import jax


def log(message):
  if jax.process_index() == 0:
    print(message, flush=True)


def fmt_time(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"
