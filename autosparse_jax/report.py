"""`python -m autosparse_jax.report`: the lab's report command (autosparse_jax/lab/report.py), under its old name."""
import sys

from autosparse_jax.lab.report import main

if __name__ == "__main__":
  sys.exit(main(sys.argv))
