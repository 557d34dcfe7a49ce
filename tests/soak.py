r"""Kill soak for any job: stop it at random moments (SIGKILL, or SIGTERM: graceful preemption),
resume it each time with the same command, and compare the result with an uninterrupted run.

  python tests/soak.py --kills=10 --workdir=/tmp/soak [--seed=0]      # IRP (default)
  python tests/soak.py --config=configs/pai_sweep.py:lenet_digits --kills=10 --terms=3 \
    --set=config.train.epochs=3 --set=config.sweep.criteria="('snip','random')" --workdir=/tmp/soak_sweep

Runs the job once without interruption (reference), then again in another
workdir, stopping it K + T times after a random number of progress lines plus a
random fraction of a second (SIGKILLs and SIGTERMs interleaved; a SIGTERMed job
must exit with the preemption code 75 after writing its checkpoint), and lets
the last attempt finish. The results (results.json without timings, a sweep's
rows) must be identical; for IRP also the final Orbax states and the score
datasets. Exit code 1 if anything differs. About 3 minutes for the default.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
  """The CLI's flags: defined only when run as a program (tests import soak() beside main's flags)."""
  flags.DEFINE_integer("kills", 10, "Number of SIGKILLs.")
  flags.DEFINE_integer("terms", 0, "Number of SIGTERMs (graceful preemption), interleaved with the kills.")
  flags.DEFINE_enum("signal", "KILL", ["KILL", "TERM"], "The signal of the --kills stops (TERM: all graceful).")
  flags.DEFINE_string("config", "", "The job's --config (default: IRP on digits, --rounds rounds).")
  flags.DEFINE_multi_string("set", [], "--config.FIELD=VALUE overrides for the job (repeat the flag).")
  flags.DEFINE_string("workdir", "/tmp/autosparse_soak", "Where the two runs go (must not exist).")
  flags.DEFINE_integer("seed", 0, "Seed of the kill times.")
  flags.DEFINE_integer("rounds", 4, "IRP rounds of the soaked job.")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


ENV = dict(os.environ, AUTOSPARSE_PLAIN_OUTPUT="0")  # Progress lines of every chunk: kill points.


def command(workdir, rounds, config="", overrides=()):
  if config:
    return [sys.executable, "-m", "autosparse_jax.lab.main", f"--config={config}", f"--workdir={workdir}",
            "--config.checkpoint_min_seconds=0", *overrides]
  return [sys.executable, "-m", "autosparse_jax.lab.main", "--config=irp:lenet_digits",
          f"--workdir={workdir}", f"--config.irp.rounds={rounds}", "--config.train.epochs=2",
          "--config.train.log_every_steps=2", "--config.irp.checkpoint_every_steps=2", "--config.width=0.5",
          "--config.checkpoint_min_seconds=0"]


def deterministic(obj):
  """results.json / rows without the fields that measure time or name files."""
  if isinstance(obj, dict):
    return {k: deterministic(v) for k, v in obj.items()
            if "seconds" not in k and k not in ("files", "figure", "stage_workdirs", "scorer_dir",
                                                  "score_dataset_dir", "datasets")}
  if isinstance(obj, list):
    return [deterministic(v) for v in obj]
  return obj


def final_state(workdir):
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
  manager.close()
  return restored.state


def compare(reference, soaked):
  """[differences] between the two workdirs' results (and, for IRP, final states and score datasets)."""
  import jax
  from autosparse_jax.score_dataset import FIELDS, load_score_dataset
  from autosparse_jax.lab.workdir import read_jsonl
  results = [json.load(open(os.path.join(w, "results.json"))) for w in (reference, soaked)]
  diffs = [] if deterministic(results[0]) == deterministic(results[1]) else ["results.json"]
  rows = [sorted(map(json.dumps, deterministic(read_jsonl(os.path.join(w, "results.jsonl"))))) for w in
          (reference, soaked)]
  diffs += [] if rows[0] == rows[1] else ["results.jsonl"]
  if results[0].get("job") != "irp":
    return diffs
  a, b = final_state(reference), final_state(soaked)
  for (path, x), (_, y) in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)):
    if not np.array_equal(np.asarray(x), np.asarray(y)):
      diffs.append(f"state {jax.tree_util.keystr(path)}")
  dirs = [json.load(open(os.path.join(w, "results.json")))["score_dataset_dir"] for w in (reference, soaked)]
  da, db = load_score_dataset(dirs[0])[0], load_score_dataset(dirs[1])[0]
  diffs += [f"dataset {f}" for f in FIELDS if not np.array_equal(da[f], db[f])]
  return diffs


def torn_files(workdir):
  """Files of `workdir` a kill left unreadable: a JSON file that does not parse, a JSON-lines file
  with a bad line before its last (a torn LAST line is the expected state after a kill mid-append)."""
  from autosparse_jax import artefacts
  torn = []
  for root, dirs, files in os.walk(workdir):
    dirs[:] = [d for d in dirs if not d.startswith("checkpoints")]  # Orbax's own, checked on restore.
    for name in files:
      path = os.path.join(root, name)
      if name.startswith(".") or ".tmp" in name:
        continue  # A writer's temporary file (never read).
      try:
        if name.endswith(".json") and name not in ("dataset_info.json", "features.json"):
          artefacts.read_json(path, "")
        elif name.endswith(".jsonl"):
          artefacts.read_jsonl(path, quiet=True)
        elif name.endswith(".png"):
          with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
              raise artefacts.DamagedFile(f"{path}: not a PNG")
      except artefacts.DamagedFile as e:
        torn.append(str(e).split(";")[0])
  return torn


def soak(kills, workdir, seed=0, rounds=4, log=print, terms=0, config="", overrides=()):
  """Returns (number of stops that landed before the job ended, [differences])."""
  command_of = lambda w: command(w, rounds, config, overrides)
  if os.path.exists(workdir):
    raise SystemExit(f"--workdir={workdir} exists: choose a new one (the soak never reuses results).")
  reference, soaked = os.path.join(workdir, "reference"), os.path.join(workdir, "soaked")
  start = time.time()
  subprocess.run(command_of(reference), cwd=REPO, check=True, capture_output=True, env=ENV)
  duration = time.time() - start
  log(f"reference run: {duration:.1f} s")
  rng = np.random.default_rng(seed)
  # Progress lines (one per 2-step chunk) of a whole run: spread the kills over them.
  ref_lines = sum(1 for _ in open(os.path.join(reference, "metrics.jsonl"))) * 11
  landed = 0
  stops = [str(x) for x in rng.permutation(["KILL"] * kills + ["TERM"] * terms)]
  torn = []
  for k, how in enumerate(stops):
    # Kill after a random number of progress lines, then a random fraction of a second, so
    # kills land inside chunks, between chunks and during checkpoint saves.
    lines_before_kill = int(rng.integers(1, max(2, ref_lines // (len(stops) + 1))))
    extra = float(rng.uniform(0.0, 0.5))
    proc = subprocess.Popen(command_of(soaked), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    seen = 0
    for line in proc.stdout:
      seen += "step" in line or "epoch" in line
      if seen >= lines_before_kill:
        time.sleep(extra)
        break
    if proc.poll() is not None:
      log(f"kill {k + 1}: the job had finished")
      break
    if how == "KILL":
      proc.kill()
    else:
      proc.terminate()
    for _ in proc.stdout:  # Drain: a SIGTERMed job writes its checkpoint and says so.
      pass
    code = proc.wait()
    proc.stdout.close()
    if how == "TERM" and code not in (75, 0):
      raise SystemExit(f"stop {k + 1}: SIGTERM ended the job with exit code {code}, not 75 (preempted).")
    landed += 1
    torn += [f"after stop {k + 1}: {t}" for t in torn_files(soaked)]  # Every file that exists parses.
    log(f"stop {k + 1}: SIG{how} after {seen} progress lines + {extra:.2f} s; exit code {code}")
  subprocess.run(command_of(soaked), cwd=REPO, check=True, capture_output=True, env=ENV)
  diffs = compare(reference, soaked) + torn
  log(f"{landed} stops landed; the results "
      + ("are IDENTICAL to the uninterrupted run's" if not diffs else f"DIFFER: {diffs}"))
  return landed, diffs


def main(argv):
  del argv
  kills, terms = (FLAGS.kills, FLAGS.terms) if FLAGS.signal == "KILL" else (0, FLAGS.kills + FLAGS.terms)
  _, diffs = soak(kills, FLAGS.workdir, FLAGS.seed, FLAGS.rounds, terms=terms, config=FLAGS.config,
                  overrides=[s if s.startswith("--") else f"--{s}" for s in FLAGS.set])
  sys.exit(1 if diffs else 0)


if __name__ == "__main__":
  define_flags()
  app.run(main)
