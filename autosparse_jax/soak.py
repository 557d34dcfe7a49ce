r"""Kill soak: SIGKILL an IRP job at K random moments, resume it each time, compare bit for bit.

  python -m autosparse_jax.soak --kills=10 --workdir=/tmp/soak [--seed=0]

Runs the IRP once without interruption (reference), then again in another
workdir, killing it with SIGKILL after a random delay K times (each time
resuming with the same command), and lets the last attempt finish. Then the
final Orbax states (params, masks, optimizer state, BN statistics, keys,
survival counts) and the exported score datasets of the two workdirs must be
identical. Prints the kill times, how far each attempt got, and the verdict;
exit code 1 if anything differs. About 3 minutes for K=10 on the 2-core CPU.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("kills", 10, "Number of SIGKILLs.")
flags.DEFINE_string("workdir", "/tmp/autosparse_soak", "Where the two runs go (must not exist).")
flags.DEFINE_integer("seed", 0, "Seed of the kill times.")
flags.DEFINE_integer("rounds", 4, "IRP rounds of the soaked job.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(workdir, rounds):
  return [sys.executable, "-m", "autosparse_jax.main", "--config=configs/irp.py:lenet_digits",
          f"--workdir={workdir}", f"--config.irp.rounds={rounds}", "--config.train.epochs=2",
          "--config.train.log_every_steps=2", "--config.irp.checkpoint_every_steps=2", "--config.width=0.5"]


def final_state(workdir):
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  manager.close()
  return restored.state


def compare(reference, soaked):
  """[differences] between the two workdirs' final states and score datasets."""
  import jax
  from autosparse_jax.score_dataset import FIELDS, load_score_dataset
  diffs = []
  a, b = final_state(reference), final_state(soaked)
  for (path, x), (_, y) in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)):
    if not np.array_equal(np.asarray(x), np.asarray(y)):
      diffs.append(f"state {jax.tree_util.keystr(path)}")
  dirs = [json.load(open(os.path.join(w, "results.json")))["score_dataset_dir"] for w in (reference, soaked)]
  da, db = load_score_dataset(dirs[0])[0], load_score_dataset(dirs[1])[0]
  diffs += [f"dataset {f}" for f in FIELDS if not np.array_equal(da[f], db[f])]
  return diffs


def soak(kills, workdir, seed=0, rounds=4, log=print):
  """Returns (number of kills that landed before the job ended, [differences])."""
  if os.path.exists(workdir):
    raise SystemExit(f"--workdir={workdir} exists: choose a new one (the soak never reuses results).")
  reference, soaked = os.path.join(workdir, "reference"), os.path.join(workdir, "soaked")
  start = time.time()
  subprocess.run(command(reference, rounds), cwd=REPO, check=True, capture_output=True)
  duration = time.time() - start
  log(f"reference run: {duration:.1f} s")
  rng = np.random.default_rng(seed)
  # Progress lines (one per 2-step chunk) of a whole run: spread the kills over them.
  ref_lines = sum(1 for _ in open(os.path.join(reference, "metrics.jsonl"))) * 11
  landed = 0
  for k in range(kills):
    # Kill after a random number of progress lines, then a random fraction of a second, so
    # kills land inside chunks, between chunks and during checkpoint saves.
    lines_before_kill = int(rng.integers(1, max(2, ref_lines // (kills + 1))))
    extra = float(rng.uniform(0.0, 0.5))
    proc = subprocess.Popen(command(soaked, rounds), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = 0
    for line in proc.stdout:
      seen += "step" in line or "epoch" in line
      if seen >= lines_before_kill:
        time.sleep(extra)
        break
    if proc.poll() is not None:
      log(f"kill {k + 1}: the job had finished")
      break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    landed += 1
    ckpts = sorted(int(n) for n in os.listdir(os.path.join(soaked, "checkpoints")) if n.isdigit()) \
        if os.path.isdir(os.path.join(soaked, "checkpoints")) else []
    log(f"kill {k + 1}: SIGKILL after {seen} progress lines + {extra:.2f} s; "
        f"newest checkpoint {ckpts[-1] if ckpts else None}")
  subprocess.run(command(soaked, rounds), cwd=REPO, check=True, capture_output=True)
  diffs = compare(reference, soaked)
  log(f"{landed} SIGKILLs landed; final state and datasets "
      + ("IDENTICAL to the uninterrupted run" if not diffs else f"DIFFER: {diffs}"))
  return landed, diffs


def main(argv):
  del argv
  _, diffs = soak(FLAGS.kills, FLAGS.workdir, FLAGS.seed, FLAGS.rounds)
  sys.exit(1 if diffs else 0)


if __name__ == "__main__":
  app.run(main)
