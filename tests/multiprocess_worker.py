"""One process of tests/test_scaleout.py's multi-process runs (or the one-process reference).

  python tests/multiprocess_worker.py WORKDIR ['{"dotted.field": value, ...}']

Runs the `prune` job through main.run (jax.distributed start-up, config
agreement, process-0 writes) and then scores 1001 random feature rows with a
random AutoS scorer over all devices of all processes; process 0 writes
WORKDIR/scores.npz (scores, device and process counts).
"""
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.conftest import apply_overrides, load_config  # noqa: E402


def main(workdir, overrides):
  from autosparse_jax.lab import main as cli
  config = apply_overrides(load_config("prune", "lenet_digits"), overrides)
  cli.run(config, workdir)  # Starts jax.distributed when AUTOSPARSE_COORDINATOR is set.

  from autosparse_jax.autos import apply
  from autosparse_jax.autos.scorer import make_scorer
  module = make_scorer("mlp", 2, 0.25)
  variables = jax.jit(lambda k: module.init(k, jnp.zeros((2, 2)), train=False))(jax.random.PRNGKey(0))
  scorer = apply.TrainedScorer(module, variables, ("theta0", "g0"), np.array([0.1, 0.0], np.float32),
                               np.array([2.0, 0.5], np.float32), {})
  x = np.random.default_rng(0).normal(size=(1001, 2)).astype(np.float32)
  scores = apply.score_features(scorer, x, batch_size=64)
  if jax.process_index() == 0:
    np.savez(os.path.join(workdir, "scores.npz"), scores=scores, devices=jax.device_count(),
             processes=jax.process_count(), x=x)


if __name__ == "__main__":
  main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
