"""`python -m autosparse_jax.main`: the lab's command line (autosparse_jax/lab/main.py), under its old name."""
from autosparse_jax.lab.main import cli, main  # noqa: F401

if __name__ == "__main__":
  cli()
