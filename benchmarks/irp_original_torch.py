r"""The original AutoSparse code's IRP (SNIP-iter) on LeNet-300-100 / MNIST, timed per round.

  /work/torch-venv/bin/python benchmarks/irp_original_torch.py \
      --original_dir=/path/to/AutoSparse-checkout [--mnist_dir=DIR] [--rounds=20] \
      [--epochs_per_round=2] [--threads=2] [--seed=0] [--json=out.json] [--workdir=DIR]

Runs the original's own driver for `--experiment dataset` (what its
scripts/dataset/*.sh run): `run_tools.runner_prune.run(cfgs)`, imported from
--original_dir (a checkout of github.com/ChengYaofeng/AutoSparse; nothing of
it is copied here). Its IRP loop, SNIP pruner, masking/rewind, training and
evaluation loops run unchanged. What is replaced:

  * data path: `utils.loader.dataloader` (torchvision MNIST, PIL images,
    ToTensor + Normalize per image) is swapped for DataLoaders over in-memory
    tensors built once from the raw IDX files with numpy, normalised exactly as
    its transform does ((x / 255 - 0.1307) / 0.3081, shape N x 1 x 28 x 28).
    Same batch sizes, same shuffling (shuffle=train, RandomSampler from
    torch's global generator), partial last batch kept; each batch is one
    tensor index instead of 128 per-image fetches + collate; no workers (the
    original uses workers only on CUDA).
  * torchvision: utils/loader.py imports it at module level but nothing of it
    runs once the data path is replaced; when it is not installed a stub module
    stands in (any use of it raises).
  * the config: the original ships no MNIST / LeNet config; `original_cfgs`
    below builds the one the paper gives (Appendix A: Adam, lr 1.2e-3,
    batch 128, wd 5e-4, drops 0.2 at 60/120) on top of the repo's
    cfgs/dataset/cifar10_res18/snip_prune.yaml (prune batch 256, test batch
    256, global scope, ...), with schedule `num` (equal count per round: the
    repo's default `pct` is the `s ** 1/N` bug that prunes 99.95% in round 0;
    REFERENCE.md) and post_epochs = --epochs_per_round.
  * tqdm progress bars are turned off (TQDM_DISABLE=1) and the run writes its
    logs, state dicts and pickles (as the original does) under --workdir.

Timing: the original's functions are wrapped (module / class attributes
replaced by timing wrappers that call them unchanged): utils.train.train
(train), utils.train.eval (eval), Pruner.init_p_grad + SNIP.score (score:
g_0 once in round 0, then SNIP over the whole training set each round),
Pruner.mask (mask_rewind: threshold, masks, the rewind to theta_0 of the
surviving weights, apply_mask, survival count: one function, not separable),
metrics.flop + metrics.summary (summary). A round runs from its prune_loop
call to its "FLOP Sparsity" log line; "other" is the round's rest (optimizer
re-creation, pandas, logging). Prints one JSON object (also --json).
"""
import time

T0 = time.time()  # Before torch's import: the JSON's "import_seconds" counts it.

import argparse
import gzip
import json
import os
import sys
import tempfile
import types

import numpy as np

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # utils/loader.py
# Raw MNIST as the tests find it: $AUTOSPARSE_SHARED_DATA/mnist or ../shared/data/mnist beside the repo.
DEFAULT_MNIST = os.path.join(os.environ.get("AUTOSPARSE_SHARED_DATA", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "data")), "mnist")


def original_cfgs(rounds=20, epochs_per_round=2, seed=0, final_density=0.01):
  """The original's cfgs dict for SNIP-iter on LeNet-300-100 / MNIST (see the module docstring)."""
  return {
      "train": {
          "dataset": "mnist", "model": "fc1", "model_class": "default",  # fc1 = LeNet-300-100
          "dense_classifier": False, "pretrained": False,
          "optimizer": "adam", "train_batchsize": 128, "test_batchsize": 256,
          "pre_epochs": 0, "post_epochs": int(epochs_per_round),
          "lr": 1.2e-3, "lr_drops": [60, 120], "lr_drop_rate": 0.2, "weight_decay": 5e-4,
      },
      "prune": {
          "pruner": "snip", "compression": float(final_density), "schedule": "num",
          "prune_epochs": int(rounds), "mask_scope": "global", "prune_dataset_ratio": 10,
          "prune_batchsize": 256, "prune_bias": False, "prune_batchnorm": False,
          "prune_residual": False, "prune_train_mode": False, "reinitialize": False,
          # False as in the yaml; runner_prune passes it positionally into prune_loop's
          # `params` argument, so prune_loop's rewind=True default applies regardless.
          "rewind": False, "shuffle": False, "invert": False,
          "pruner_list": [], "prune_epoch_list": [], "compression_list": [], "level_list": [],
      },
      "policy": {
          "experiment": "dataset", "expid": "irp_bench", "result_dir": "experiment/irp_bench",
          "gpu": 0, "workers": 4, "seed": int(seed), "verbose": False, "prediction_network": None,
          "save_important": None, "run_choice": "prune_iterative", "save": True, "times": 0,
          "autos_model": None,
      },
  }


def read_idx(path):
  """An IDX file (gzipped or not) as a numpy array."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  magic = int.from_bytes(data[0:4], "big")
  ndim = magic & 0xFF
  if magic >> 8 != 0x08:
    raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x}).")
  shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find(mnist_dir, stem):
  for name in (stem + ".gz", stem):
    if os.path.exists(os.path.join(mnist_dir, name)):
      return os.path.join(mnist_dir, name)
  raise FileNotFoundError(f"{stem}[.gz] not in {mnist_dir}")


def mnist_tensors(torch, mnist_dir):
  """{train: (x, y), test: (x, y)}: float32 N x 1 x 28 x 28 normalised as the original's transform."""
  out = {}
  for split, prefix in (("train", "train"), ("test", "t10k")):
    images = read_idx(find(mnist_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(mnist_dir, f"{prefix}-labels-idx1-ubyte"))
    x = (images.astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD  # ToTensor then Normalize
    out[split] = (torch.from_numpy(np.ascontiguousarray(x[:, None])),
                  torch.from_numpy(labels.astype(np.int64)))
  return out


def make_dataloader(torch, tensors):
  """Drop-in for utils.loader.dataloader(dataset, batch_size, train, workers, length=None)."""
  from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, Subset, TensorDataset

  def dataloader(dataset, batch_size, train, workers, length=None):
    if dataset != "mnist":
      raise ValueError(f"this benchmark feeds MNIST only, not {dataset!r}")
    ds = TensorDataset(*tensors["train" if train else "test"])
    if length is not None:  # As the original: a random subset.
      ds = Subset(ds, torch.randperm(len(ds))[:length])
    sampler = RandomSampler(ds) if train is True else SequentialSampler(ds)
    # batch_size=None + a BatchSampler: TensorDataset is indexed once per batch with the
    # batch's index list (no per-image fetch, no collate). len(loader.dataset) is still
    # the number of images, which the original's train/eval divide by.
    return DataLoader(ds, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)

  return dataloader


def stub_torchvision():
  """utils/loader.py imports torchvision at module level; the replaced data path never uses it."""
  try:
    import torchvision  # noqa: F401
    return False
  except ImportError:
    pass

  class Unavailable(types.ModuleType):
    def __getattr__(self, name):
      if name.startswith("__"):  # Introspection (inspect, hasattr) must see a plain module.
        raise AttributeError(name)
      raise RuntimeError(f"torchvision.{self.__name__.split('.')[-1]}.{name}: torchvision is stubbed "
                         "by irp_original_torch.py (the benchmark feeds in-memory tensors)")

  tv = types.ModuleType("torchvision")
  for sub in ("datasets", "transforms"):
    mod = Unavailable(f"torchvision.{sub}")
    setattr(tv, sub, mod)
    sys.modules[f"torchvision.{sub}"] = mod
  sys.modules["torchvision"] = tv
  return True


class Timer:
  """Accumulates wrapped-call seconds per (round, phase); round -1 = before round 0."""

  def __init__(self):
    self.round = -1
    self.phases = {}
    self.round_start = {}
    self.round_end = {}
    self.rounds_info = {}

  def add(self, phase, seconds):
    key = (self.round, phase)
    self.phases[key] = self.phases.get(key, 0.0) + seconds

  def wrap(self, fn, phase):
    def wrapped(*args, **kwargs):
      t = time.time()
      try:
        return fn(*args, **kwargs)
      finally:
        self.add(phase, time.time() - t)
    wrapped.__wrapped__ = fn
    return wrapped


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--original_dir", required=True, help="checkout of github.com/ChengYaofeng/AutoSparse")
  p.add_argument("--mnist_dir", default=DEFAULT_MNIST, help="raw MNIST IDX files (.gz or not)")
  p.add_argument("--rounds", type=int, default=20)
  p.add_argument("--epochs_per_round", type=int, default=2)
  p.add_argument("--final_density", type=float, default=0.01)
  p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--workdir", default="", help="where the original writes its logs/results (default: a temp dir)")
  p.add_argument("--json", default="", help="also write the JSON here")
  args = p.parse_args(argv)

  os.environ.setdefault("TQDM_DISABLE", "1")
  original_dir = os.path.abspath(args.original_dir)
  if not os.path.isfile(os.path.join(original_dir, "run_tools", "runner_prune.py")):
    sys.exit(f"--original_dir={original_dir}: no run_tools/runner_prune.py (not an AutoSparse checkout)")
  import torch
  torch.set_num_threads(args.threads)
  stubbed = stub_torchvision()
  sys.path.insert(0, original_dir)
  from pruners import pruners
  from run_tools import runner_prune
  from utils import loader, metrics
  from utils import prune as prune_mod
  from utils import train as train_mod
  t_imported = time.time()

  tensors = mnist_tensors(torch, args.mnist_dir)
  t_data = time.time()

  timer = Timer()
  loader.dataloader = make_dataloader(torch, tensors)
  train_mod.train = timer.wrap(train_mod.train, "train")
  train_mod.eval = timer.wrap(train_mod.eval, "eval")
  pruners.Pruner.init_p_grad = timer.wrap(pruners.Pruner.init_p_grad, "score")
  pruners.SNIP.score = timer.wrap(pruners.SNIP.score, "score")
  pruners.Pruner.mask = timer.wrap(pruners.Pruner.mask, "mask_rewind")
  metrics.summary = timer.wrap(metrics.summary, "summary")
  metrics.flop = timer.wrap(metrics.flop, "summary")

  original_prune_loop = prune_mod.prune_loop

  def prune_loop(model, loss, pruner, *a, **kw):  # Marks a round's start.
    timer.round += 1
    timer.round_start[timer.round] = time.time()
    out = original_prune_loop(model, loss, pruner, *a, **kw)
    remaining, total = pruner.stats()  # Microseconds: 3 mask sums.
    timer.rounds_info[timer.round] = {"kept": int(remaining), "density": float(remaining) / float(total)}
    return out
  prune_mod.prune_loop = prune_loop

  original_loop = train_mod.train_eval_loop

  def train_eval_loop(*a, **kw):  # Records the round's final test accuracy.
    result = original_loop(*a, **kw)
    if timer.round >= 0:
      timer.rounds_info.setdefault(timer.round, {})["test_accuracy"] = float(result["top1_accuracy"].iloc[-1])
    return result
  train_mod.train_eval_loop = train_eval_loop

  original_print_log = runner_prune.print_log

  def print_log(msg, *a, **kw):  # The round's last line marks its end.
    out = original_print_log(msg, *a, **kw)
    if isinstance(msg, str) and msg.startswith("FLOP Sparsity"):
      timer.round_end[timer.round] = time.time()
    return out
  runner_prune.print_log = print_log

  workdir = args.workdir or tempfile.mkdtemp(prefix="irp_original_")
  os.makedirs(workdir, exist_ok=True)
  cwd = os.getcwd()
  os.chdir(workdir)
  cfgs = original_cfgs(args.rounds, args.epochs_per_round, args.seed, args.final_density)
  try:
    t_run = time.time()
    runner_prune.run(cfgs)
    t_done = time.time()
  finally:
    os.chdir(cwd)

  rounds = []
  for r in range(timer.round + 1):
    wall = timer.round_end[r] - timer.round_start[r]
    ph = {k: timer.phases.get((r, k), 0.0) for k in ("train", "eval", "score", "mask_rewind", "summary")}
    rounds.append(dict(round=r, wall=wall, **ph, other=wall - sum(ph.values()), **timer.rounds_info.get(r, {})))
  before = timer.round_start[0] - T0 if rounds else t_done - T0
  result = {
      "side": "original_torch", "torch": torch.__version__, "threads": torch.get_num_threads(),
      "torchvision_stubbed": stubbed, "rounds_requested": args.rounds,
      "epochs_per_round": args.epochs_per_round, "seed": args.seed,
      "wall_seconds": t_done - T0,
      "import_seconds": t_imported - T0, "data_seconds": t_data - t_imported,
      # Process start (this script's first line) to round 0's prune_loop: imports, data,
      # model, the original's pre-training eval (pre_epochs=0), pruner and state-dict save.
      "before_round0_seconds": before,
      "setup_in_run_seconds": (timer.round_start[0] - t_run) if rounds else None,
      "after_last_round_seconds": t_done - timer.round_end[timer.round] if rounds else None,
      "rounds": rounds,
      "final_density": rounds[-1]["density"] if rounds else None,
      "final_test_accuracy": rounds[-1].get("test_accuracy") if rounds else None,
      "workdir": workdir,
  }
  text = json.dumps(result)
  if args.json:
    with open(args.json, "w") as f:
      f.write(text + "\n")
  print(text)
  return result


if __name__ == "__main__":
  main()
