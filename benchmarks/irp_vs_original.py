r"""IRP-SNIP (SNIP-iter) on LeNet-300-100 / MNIST: the original PyTorch code against our irp job.

  python benchmarks/irp_vs_original.py --original_dir=/path/to/AutoSparse-checkout \
      [--rounds=20] [--epochs_per_round=2] [--repeats=1] [--only=torch,jax,train] \
      [--threads=2] [--cpus=0-1] [--torch_python=/work/torch-venv/bin/python] \
      [--mnist_dir=../shared/data/mnist] [--tfds_dir=/tmp/tfds] [--jax_cache=off] [--json=out.json]

Per repeat, interleaved, each in a fresh process timed from launch to exit:
  torch  the original code's IRP loop (benchmarks/irp_original_torch.py, run with
         --torch_python; it imports the original from --original_dir, feeds MNIST as
         in-memory tensors and times each round's train / eval / SNIP score / mask+rewind),
  jax    our irp job: python -m autosparse_jax.lab.main --config=configs/irp.py:lenet_mnist
         with --config.irp.rounds, --config.train.epochs=--epochs_per_round, one seed,
         final density 1%, and --config.prune.batch_size=256 (the original's pruning batch;
         --no-match_prune_batch keeps ours, 128),
  train  our plain training job, configs/train.py:lenet_mnist for rounds x epochs_per_round
         epochs (40): same model, optimizer and batch; the yardstick of "IRP costs no more
         than 1.6x a plain training job of as many epochs".
Our jobs' per-round figures come from their workdirs (metrics.jsonl: prune_seconds, the
epochs' epoch_seconds, which include the test-set evaluation) and from the time each
"round k done" line reached this driver; "before round 0" is process launch (imports,
data load, init, g_0) to the job's "irp: ..." line. Compilation lands in round 0 (and the
train job's first epoch) unless --jax_cache points at a warm cache (default `off`: every
run compiles, as a first run does).

Prints the settings comparison (original vs our configs/irp.py:lenet_mnist) and markdown
tables of medians over repeats with the ratios original / ours and ours IRP / ours train.
The MNIST TFDS dataset is prepared in --tfds_dir first when missing (not timed).
On a machine shared with other work, torch with 2 threads can be 20x slower than with
1 (OpenMP threads waiting on each other): time on a quiet machine, and pin both sides
to the same cores with --cpus for a like-for-like comparison.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import irp_original_torch  # noqa: E402  (benchmarks/; numpy only at import)

SIDES = ("torch", "jax", "train")
DEFAULT_MNIST = irp_original_torch.DEFAULT_MNIST


def run_timed(cmd, env, cwd, log_path):
  """Runs cmd; returns (wall seconds, [(seconds since launch, line)]). Raises on failure."""
  start = time.time()
  proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1)
  lines = []
  with open(log_path, "w") as log:
    for line in proc.stdout:
      lines.append((time.time() - start, line.rstrip("\n")))
      log.write(line)
  rc = proc.wait()
  wall = time.time() - start
  if rc != 0:
    tail = "\n".join(text for _, text in lines[-25:])
    raise RuntimeError(f"exit {rc}: {' '.join(cmd)}\n(log: {log_path})\n{tail}")
  return wall, lines


def prefix(args):
  return ["taskset", "-c", args.cpus] if args.cpus else []


def jax_env(args, run_dir):
  env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  if args.jax_cache == "fresh":
    env["AUTOSPARSE_COMPILATION_CACHE"] = os.path.join(run_dir, "xla_cache")
  elif args.jax_cache != "default":
    env["AUTOSPARSE_COMPILATION_CACHE"] = args.jax_cache  # "off" or a directory
  return env


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_torch(args, run_dir):
  out = os.path.join(run_dir, "torch.json")
  cmd = prefix(args) + [args.torch_python, os.path.join(HERE, "irp_original_torch.py"),
                        f"--original_dir={args.original_dir}", f"--mnist_dir={args.mnist_dir}",
                        f"--rounds={args.rounds}", f"--epochs_per_round={args.epochs_per_round}",
                        f"--threads={args.threads}", f"--seed={args.seed}",
                        f"--workdir={os.path.join(run_dir, 'torch_workdir')}", f"--json={out}"]
  env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1")
  wall, _ = run_timed(cmd, env, ROOT, os.path.join(run_dir, "torch.log"))
  with open(out) as f:
    r = json.load(f)
  rounds = r["rounds"]
  return {
      "process_wall": wall, "before_round0": r["before_round0_seconds"] + (wall - r["wall_seconds"]),
      "round_walls": [x["wall"] for x in rounds],
      "round_train_eval": [x["train"] + x["eval"] for x in rounds],
      "round_train": [x["train"] for x in rounds], "round_eval": [x["eval"] for x in rounds],
      "round_prune": [x["score"] + x["mask_rewind"] for x in rounds],
      "round_score": [x["score"] for x in rounds], "round_mask_rewind": [x["mask_rewind"] for x in rounds],
      # Interpreter start-up and exit (wall - the script's own clock) go to "before round 0".
      "after_last_round": r["after_last_round_seconds"],
      "final_density": r["final_density"], "final_test_accuracy": r["final_test_accuracy"] / 100.0,
      "detail": r,
  }


def jax_overrides(args):
  extra = ["--config.prune.batch_size=256"] if args.match_prune_batch else []
  return extra + list(args.jax_set)


def run_jax_irp(args, run_dir):
  workdir = os.path.join(run_dir, "jax_irp")
  cmd = prefix(args) + [args.jax_python, "-m", "autosparse_jax.lab.main", "--config=configs/irp.py:lenet_mnist",
                        f"--workdir={workdir}", f"--config.irp.rounds={args.rounds}",
                        f"--config.train.epochs={args.epochs_per_round}", "--config.num_seeds=1",
                        f"--config.seed={args.seed}", f"--config.irp.final_density={args.final_density}",
                        f"--config.data.data_dir={args.tfds_dir}"] + jax_overrides(args)
  wall, lines = run_timed(cmd, jax_env(args, run_dir), ROOT, os.path.join(run_dir, "jax_irp.log"))
  loop_start = next(t for t, text in lines if text.startswith("irp: "))
  done = {int(m.group(1)): t for t, text in lines if (m := re.match(r"round (\d+) done:", text))}
  metrics = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  n = len(done)
  marks = [loop_start] + [done[r] for r in range(n)]
  walls = [marks[r + 1] - marks[r] for r in range(n)]
  prune = {m["round"]: m["prune_seconds"] for m in metrics if m.get("event") == "round_done"}
  train_eval = {}
  for m in metrics:
    if "epoch_seconds" in m and str(m.get("tag", "")).startswith("round "):
      r = int(m["tag"].split()[1])
      train_eval[r] = train_eval.get(r, 0.0) + m["epoch_seconds"]
  return {
      "process_wall": wall, "before_round0": loop_start,
      "round_walls": walls, "round_train_eval": [train_eval.get(r, 0.0) for r in range(n)],
      "round_prune": [prune.get(r, 0.0) for r in range(n)],
      "after_last_round": wall - marks[-1],
      "final_density": results["final_density"], "final_test_accuracy": results["test_accuracy"],
      "export_seconds": results.get("export_seconds"), "job_wall_seconds": results.get("wall_seconds_this_run"),
  }


def run_jax_train(args, run_dir):
  workdir = os.path.join(run_dir, "jax_train")
  epochs = args.train_epochs or args.rounds * args.epochs_per_round
  cmd = prefix(args) + [args.jax_python, "-m", "autosparse_jax.lab.main", "--config=configs/train.py:lenet_mnist",
                        f"--workdir={workdir}", f"--config.train.epochs={epochs}", "--config.num_seeds=1",
                        f"--config.seed={args.seed}", f"--config.data.data_dir={args.tfds_dir}"]
  wall, lines = run_timed(cmd, jax_env(args, run_dir), ROOT, os.path.join(run_dir, "jax_train.log"))
  start = next(t for t, text in lines if text.startswith("train: "))
  epochs_s = [m["epoch_seconds"] for m in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "epoch_seconds" in m]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  return {"process_wall": wall, "before_training": start, "epochs": epochs,
          "epoch_seconds_sum": sum(epochs_s), "first_epoch": epochs_s[0] if epochs_s else None,
          "median_epoch": statistics.median(epochs_s[1:] or epochs_s) if epochs_s else None,
          "final_test_accuracy": results["test_accuracy"], "job_wall_seconds": results.get("wall_seconds")}


def ensure_tfds(args):
  if os.path.isdir(os.path.join(args.tfds_dir, "autosparse_mnist")):
    return
  cmd = [args.jax_python, "-m", "autosparse_jax.data.prepare", "mnist", f"--raw_dir={args.mnist_dir}",
         f"--data_dir={args.tfds_dir}"]
  print("preparing MNIST (not timed):", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True, cwd=ROOT, env=jax_env(args, tempfile.gettempdir()))


# ---------------------------------------------------------------- settings


def settings_rows(args):
  """(setting, original, ours, note) for SNIP-iter on LeNet-300-100 / MNIST."""
  from autosparse_jax.lab.config_tools import module_from_path
  ours = module_from_path(os.path.join(ROOT, "configs", "irp.py")).get_config("lenet_mnist")
  orig = irp_original_torch.original_cfgs(args.rounds, args.epochs_per_round, args.seed, args.final_density)
  ot, op, tr = orig["train"], orig["prune"], ours.train
  pb = 256 if args.match_prune_batch else int(ours.prune.batch_size)

  def row(name, a, b, same, fix=""):
    return (name, str(a), str(b), "same" if same else ("**differs**" + (f": {fix}" if fix else "")))

  return [
      row("model", "fc1: Linear 784-300-100-10 + ReLU, biases", "lenet_300_100", True),
      row("optimizer", f"{ot['optimizer']} (torch.optim.Adam, coupled L2)",
          f"{tr.optimizer} (add_decayed_weights + adam)",
          ot["optimizer"] == tr.optimizer, "--config.train.optimizer"),
      row("lr", ot["lr"], tr.lr, ot["lr"] == tr.lr, f"--config.train.lr={ot['lr']}"),
      row("batch", ot["train_batchsize"], tr.batch_size, ot["train_batchsize"] == tr.batch_size,
          f"--config.train.batch_size={ot['train_batchsize']}"),
      row("weight decay", ot["weight_decay"], tr.weight_decay, ot["weight_decay"] == tr.weight_decay,
          f"--config.train.weight_decay={ot['weight_decay']}"),
      row("lr drops", f"{ot['lr_drop_rate']} at {ot['lr_drops']}", f"{tr.lr_drop_factor} at {list(tr.lr_drop_epochs)}",
          ot["lr_drop_rate"] == tr.lr_drop_factor and list(ot["lr_drops"]) == list(tr.lr_drop_epochs)),
      row("epochs per round", f"{ot['post_epochs']} (post_epochs)",
          f"{args.epochs_per_round} (--config.train.epochs; the recipe's {tr.epochs} otherwise)", True),
      row("rounds / final density", f"{op['prune_epochs']} / {op['compression']}",
          f"{args.rounds} / {args.final_density} (irp.rounds, irp.final_density)", True),
      row("schedule", f"{op['schedule']} (equal count; the repo's default pct has the s**1/N bug)",
          ours.irp.schedule, ours.irp.schedule == "count"),
      row("mask scope", op["mask_scope"], ours.prune.distribution, ours.prune.distribution == "global"),
      row("pruning batch", op["prune_batchsize"], f"{pb} (default {ours.prune.batch_size})",
          pb == op["prune_batchsize"],
          "--config.prune.batch_size=256 (this benchmark sets it unless --no-match_prune_batch)"),
      row("pruning data", "every training image: 235 batches, last one partial",
          f"whole batches only: {60000 // pb} batches of {pb} (prune.num_batches=0)", False,
          f"no knob; {60000 % pb} of 60000 images unused"),
      row("SNIP gradient", "sum of batch-mean grads", f"{ours.prune.grad_reduction} of batch means",
          ours.prune.grad_reduction == "sum"),
      row("zero scores", "pruned too (threshold over non-zero scores, prunes <= it)",
          f"irp.prune_zero_scores={ours.irp.prune_zero_scores}", bool(ours.irp.prune_zero_scores),
          "--config.irp.prune_zero_scores=True (no effect with 2 epochs/round, BENCHMARKS.md)"),
      row("rewind", "surviving weights to theta_0; biases keep their trained values "
          "(prune_loop's rewind=True default: cfg rewind is passed into `params`)",
          "all parameters (weights and biases) to theta_0", False, "no knob (semantics, not cost)"),
      row("optimizer / lr schedule per round", "re-created each round", "fresh TrainState each round", True),
      row("train batches / epoch", "469 (last partial)", "468 (remainder dropped)", False, "no knob"),
      row("evaluation", f"before each round's training + after each epoch, batch {ot['test_batchsize']}",
          f"after each epoch, batch {ours.data.eval_batch_size}", False, "cost only; --config.data.eval_batch_size"),
      row("per-round extras", "pandas summary, FLOP count, logging", "2 Orbax checkpoints, metrics.jsonl, TensorBoard",
          False, "cost only"),
      row("init", "PyTorch default (Kaiming-uniform a=sqrt 5)", "Kaiming-normal (REFERENCE.md)", False, "no knob"),
  ]


# ---------------------------------------------------------------- report


def med(values):
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


def fmt(x, digits=1):
  return "-" if x is None else f"{x:.{digits}f}"


def ratio(a, b):
  return "-" if a is None or b in (None, 0) else f"{a / b:.2f}x"


def summarize_irp(runs):
  """Medians over repeats of each figure (per-round figures: median over rounds 1.. of a run first)."""
  if not runs:
    return None

  def later(key):
    return med([med(r[key][1:] or r[key]) for r in runs])

  return {
      "process_wall": med([r["process_wall"] for r in runs]),
      "before_round0": med([r["before_round0"] for r in runs]),
      "round0": med([r["round_walls"][0] for r in runs]),
      "round_later": later("round_walls"),
      "train_eval_later": later("round_train_eval"),
      "prune_later": later("round_prune"),
      "rounds_sum": med([sum(r["round_walls"]) for r in runs]),
      "after_last_round": med([r["after_last_round"] for r in runs]),
      "final_density": med([r["final_density"] for r in runs]),
      "final_test_accuracy": med([r["final_test_accuracy"] for r in runs]),
  }


def report(args, results):
  t, j = summarize_irp(results["torch"]), summarize_irp(results["jax"])
  train = results["train"]
  n = len(results["torch"] or results["jax"] or results["train"])
  out = [f"IRP-SNIP, LeNet-300-100 / MNIST, {args.rounds} rounds x {args.epochs_per_round} epochs to "
         f"{args.final_density:g}; medians over {n} repeat(s); torch threads {args.threads}"
         + (f"; pinned to CPUs {args.cpus}" if args.cpus else "") + f"; jax cache {args.jax_cache}", ""]
  rows = [("process wall, launch to exit (s)", "process_wall", 1),
          ("before round 0 (s)", "before_round0", 1),
          ("round 0 (s)", "round0", 2),
          ("later rounds, median per round (s)", "round_later", 2),
          ("- train + eval (s)", "train_eval_later", 2),
          ("- score + mask + rewind (s)", "prune_later", 2),
          ("all rounds (s)", "rounds_sum", 1),
          ("after the last round (s)", "after_last_round", 2),
          ("final density", "final_density", 5),
          ("final test accuracy", "final_test_accuracy", 4)]
  out += ["| | original (torch) | ours (JAX irp) | original / ours |", "|---|---|---|---|"]
  for label, key, d in rows:
    a, b = (t or {}).get(key), (j or {}).get(key)
    out.append(f"| {label} | {fmt(a, d)} | {fmt(b, d)} | "
               f"{ratio(a, b) if key not in ('final_density', 'final_test_accuracy') else ''} |")
  if train:
    tw = med([r["process_wall"] for r in train])
    epochs = train[0]["epochs"]
    out += ["", f"| | ours IRP | ours train ({epochs} epochs) | IRP / train (target <= 1.6x) |", "|---|---|---|---|",
            f"| process wall (s) | {fmt((j or {}).get('process_wall'))} | {fmt(tw)} | "
            f"{ratio((j or {}).get('process_wall'), tw)} |",
            f"| before training / round 0 (s) | {fmt((j or {}).get('before_round0'))} | "
            f"{fmt(med([r['before_training'] for r in train]))} | |",
            f"| sum of epochs incl. eval (s) | "
            f"{fmt(med([sum(r['round_train_eval']) for r in results['jax']]) if j else None)} | "
            f"{fmt(med([r['epoch_seconds_sum'] for r in train]))} | |",
            f"| final test accuracy | {fmt((j or {}).get('final_test_accuracy'), 4)} | "
            f"{fmt(med([r['final_test_accuracy'] for r in train]), 4)} | |"]
  out += ["", "Settings: original vs ours (configs/irp.py:lenet_mnist as this benchmark runs it)", "",
          "| setting | original | ours | |", "|---|---|---|---|"]
  out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in settings_rows(args)]
  return "\n".join(out)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--original_dir", default="", help="checkout of github.com/ChengYaofeng/AutoSparse (torch side)")
  p.add_argument("--rounds", type=int, default=20)
  p.add_argument("--epochs_per_round", type=int, default=2)
  p.add_argument("--final_density", type=float, default=0.01)
  p.add_argument("--train_epochs", type=int, default=0,
                 help="plain training job's epochs (0: rounds x epochs_per_round)")
  p.add_argument("--repeats", type=int, default=1)
  p.add_argument("--only", default="torch,jax,train", help="comma list of torch, jax, train")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads of the original")
  p.add_argument("--cpus", default="", help="taskset CPU list for every side (e.g. 0-1); empty: no pinning")
  p.add_argument("--torch_python", default="/work/torch-venv/bin/python")
  p.add_argument("--jax_python", default=sys.executable)
  p.add_argument("--mnist_dir", default=DEFAULT_MNIST, help="raw MNIST IDX files (.gz or not)")
  p.add_argument("--tfds_dir", default=os.environ.get("TFDS_DATA_DIR", "/tmp/tfds"))
  p.add_argument("--jax_cache", default="off",
                 help="off (compile every run) | fresh (new cache per run) | default (~/.cache) | DIR")
  p.add_argument("--match_prune_batch", action=argparse.BooleanOptionalAction, default=True,
                 help="run ours with the original's pruning batch 256")
  p.add_argument("--jax_set", action="append", default=[], help="extra --config.x=y for our irp job (repeatable)")
  p.add_argument("--out_dir", default="", help="keep workdirs and logs here (default: a temp dir)")
  p.add_argument("--json", default="", help="also write every run's figures here")
  args = p.parse_args(argv)

  only = [s.strip() for s in args.only.split(",") if s.strip()]
  if bad := [s for s in only if s not in SIDES]:
    p.error(f"--only: unknown {bad}; choose from {', '.join(SIDES)}")
  if "torch" in only and not args.original_dir:
    p.error("--original_dir is required for the torch side (or --only=jax,train)")
  if args.original_dir:
    args.original_dir = os.path.abspath(args.original_dir)
  out_dir = args.out_dir or tempfile.mkdtemp(prefix="irp_vs_original_")
  if "jax" in only or "train" in only:
    ensure_tfds(args)
  runners = {"torch": run_torch, "jax": run_jax_irp, "train": run_jax_train}
  results = {s: [] for s in SIDES}
  for rep in range(args.repeats):
    for side in only:
      run_dir = os.path.join(out_dir, f"rep{rep}_{side}")
      os.makedirs(run_dir, exist_ok=False)
      r = runners[side](args, run_dir)
      results[side].append(r)
      print(f"repeat {rep} {side}: {r['process_wall']:.1f} s (logs in {run_dir})", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"args": vars(args), "results": results}, f, indent=1)
  print()
  print(report(args, results))


if __name__ == "__main__":
  main()
