#!/usr/bin/env python3
"""Starts N copies of a command as the processes of one jax.distributed job on 127.0.0.1.

  python launch/local_multiprocess.py --num_processes=2 --cpu_devices=2 -- \\
      python -m autosparse_jax.lab.main --config=configs/train.py:lenet_digits --workdir=/tmp/mp

For testing multi-process code on one machine (on a cluster use SLURM: see
launch/README.md). Each process gets AUTOSPARSE_COORDINATOR (a free port),
AUTOSPARSE_NUM_PROCESSES and AUTOSPARSE_PROCESS_ID, which config.distributed
.initialize='auto' picks up; --cpu_devices=K gives each process K CPU devices.
Process 0 prints to this terminal, the others to LOG_DIR/process_<i>.log. When a
process fails the others are stopped and its exit status is returned (124 when
--timeout passes first), with the tail of its log.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(base, coordinator, num, index, cpu_devices):
  env = dict(base, AUTOSPARSE_COORDINATOR=coordinator, AUTOSPARSE_NUM_PROCESSES=str(num),
             AUTOSPARSE_PROCESS_ID=str(index))
  if cpu_devices:
    env["JAX_PLATFORMS"] = "cpu"
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={cpu_devices}"])
  return env


def tail(path, lines=30):
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-lines:])
  except OSError:
    return ""


def stop(procs):
  for p in procs:
    if p.poll() is None:
      p.terminate()
  deadline = time.time() + 10
  for p in procs:
    try:
      p.wait(max(0.1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def launch(command, num_processes, cpu_devices=0, timeout=600, log_dir=None, env=None):
  """Runs the processes; returns 0, the first failing exit status, or 124 on timeout."""
  log_dir = log_dir or tempfile.mkdtemp(prefix="autosparse_procs_")
  os.makedirs(log_dir, exist_ok=True)
  coordinator = f"127.0.0.1:{free_port()}"
  procs, logs = [], []
  for i in range(num_processes):
    e = process_env(os.environ if env is None else env, coordinator, num_processes, i, cpu_devices)
    path = os.path.join(log_dir, f"process_{i}.log")
    out = None if i == 0 else open(path, "w")
    procs.append(subprocess.Popen(command, env=e, stdout=out, stderr=subprocess.STDOUT if out else None))
    logs.append(path if out else None)
    if out:
      out.close()
  deadline = time.time() + timeout
  try:
    while True:
      codes = [p.poll() for p in procs]
      failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i = failed[0]
        if logs[i]:
          print(f"process {i} failed (exit {codes[i]}); its log {logs[i]} ends:\n{tail(logs[i])}",
                file=sys.stderr, flush=True)
        return codes[i]
      if all(c == 0 for c in codes):
        return 0
      if time.time() > deadline:
        print(f"timeout: processes still running after {timeout} s; stopping them "
              f"(logs in {log_dir}).", file=sys.stderr, flush=True)
        return 124
      time.sleep(0.2)
  finally:
    stop(procs)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--cpu_devices", type=int, default=0,
                      help="CPU devices per process (0: leave the platform and XLA_FLAGS alone)")
  parser.add_argument("--timeout", type=float, default=3600, help="seconds before all are stopped")
  parser.add_argument("--log_dir", default=None, help="logs of processes 1..N-1 (default: a temp dir)")
  parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command every process runs")
  args = parser.parse_args()
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command or args.num_processes < 1:
    parser.error("give --num_processes >= 1 and a command after --")
  sys.exit(launch(command, args.num_processes, args.cpu_devices, args.timeout, args.log_dir))


if __name__ == "__main__":
  main()
