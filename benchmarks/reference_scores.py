"""Reference scores from the criteria's original implementations -> tests/reference/*.npz.

    python benchmarks/reference_scores.py --repo synaptic_flow=/work/refs/Synaptic-Flow \
        --repo grasp=/work/refs/GraSP --repo px=/work/refs/px-ntk-pruning ... \
        [--out tests/reference] [--shared_data ../shared/data]

Each NAME=DIR is a checkout of an authors' repository (fetch it; check it out outside this
repository). Its scoring code is imported from DIR and run unmodified under CPU PyTorch, in
a virtualenv of its own (torch is not a dependency of autosparse_jax):

    python3 -m venv /work/refvenv && /work/refvenv/bin/pip install torch==2.13.0 numpy scipy tqdm cvxpy

The networks (tests/reference_nets.py: LeNet-300-100 on MNIST, a small conv net with
BatchNorm on the CIFAR-10 subset) take fixed weights regenerated from seeds; the inputs are
a fixed batch of real images (tests/reference/inputs.npz, read from the raw files through
autosparse_jax/data/raw.py). Each fixture holds the authors' scores per layer (all of them,
or a fixed sample of a layer's entries above SAMPLE_ABOVE), the zero pattern and the masks
their own masking code keeps at 90% and 98% sparsity, and metadata: repository, commit,
torch version, settings, tolerance, what had to be done to run the code.

A checkout whose commit is not the one recorded in REPOS below, or whose tracked Python
files are modified, is refused before torch is imported: a fixture is never silently
regenerated from other code. To move to another commit, change REPOS (a reviewed edit) and
regenerate.

Random draws are fed to both sides: NTK-SAP's re-initialised weights, random inputs and
perturbations come from seeded numpy streams (tests/reference_nets.py) that the tests
regenerate; the GraSP authors' re-drawn classifier weights are recorded; the samples of
GraSP, PX, ProsPr and FORCE are the fixture's batch itself.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

# name: (url, the commit fixtures are made from, criteria it gives reference scores for)
REPOS = {
    "synaptic_flow": ("https://github.com/ganguli-lab/Synaptic-Flow",
                      "9dfa57aa4012c34028ee646d367f18e32f0e3bc7", ("magnitude", "snip", "grasp", "synflow")),
    "grasp": ("https://github.com/alecwangcq/GraSP", "f17d87ac537bfce476ac2424171a8b6eb56499db", ("grasp",)),
    "px": ("https://github.com/iurada/px-ntk-pruning", "ed6c40ea576e4651d6665b3a45741f6eb67ceef8",
           ("px", "synflow_l2")),
    "ntk_sap": ("https://github.com/YiteWang/NTK-SAP", "e23682bc8798795107961af1afb236d349bf5c00", ("ntk_sap",)),
    "prospr": ("https://github.com/mil-ad/prospr", "a92177989f4480f1f2b43a48b3e18a6597ebba6d", ("prospr",)),
    "force": ("https://github.com/naver/force", "7494eed332b0494c283d6f3a2ed7a033895a6ccb", ("force",)),
    "npb": ("https://github.com/pvh1602/NPB", "090830c388bcbf7fa62260343e76e5a2eb55f41d", ("npb",)),
    "autosparse": ("https://github.com/ChengYaofeng/AutoSparse", "18350e58e5e4f1ef7b752e22f2510bfd4b915c81",
                   ("autos",)),
}
SPARSITIES = (0.9, 0.98)
SAMPLE_ABOVE, SAMPLE_SIZE = 16384, 8192  # Layers larger than this store a fixed sample of their scores.
RTOL = 1e-5
TOLERANCE_NOTE = ("float32 on both sides, different summation orders (PyTorch vs XLA): agreement to "
                  "1e-5 of the layer's largest |score| (a few float32 ulps of the largest terms, "
                  "accumulated over the batch and the layers).")
NTK_DRAW_SEED = 7001  # Seeded stream replacing torch.randn_like in NTK-SAP (tests/reference_nets.normal_draw).
NTK_FRESH_SEED = 8001  # theta0(net, NTK_FRESH_SEED + j, fresh=True) is NTK-SAP's j-th re-initialisation.
FORCE_MASK_SEED = 9001  # A fixed 30%-density mask at which FORCE's saliencies are also compared.


class Refused(SystemExit):
  pass


def git(directory, *args):
  return subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True)


def check_checkout(name, directory):
  """Refuses (exit 2) unless `directory` is a git checkout of REPOS[name] at the recorded commit with
  its tracked Python files unmodified. Runs before torch is imported."""
  if name not in REPOS:
    raise Refused(f"refusing --repo {name}=...: unknown repository name; known: {', '.join(REPOS)}.")
  url, commit, _ = REPOS[name]
  if not os.path.isdir(directory):
    raise Refused(f"refusing --repo {name}={directory}: not a directory.")
  head = git(directory, "rev-parse", "HEAD")
  if head.returncode != 0:
    raise Refused(f"refusing --repo {name}={directory}: not a git checkout, so its commit cannot be checked "
                  f"(check out {url} at {commit}).")
  head = head.stdout.strip()
  if head != commit:
    raise Refused(f"refusing --repo {name}={directory}: it is at commit {head}, the fixtures are recorded "
                  f"from {commit} ({url}). Check out that commit, or change REPOS in this script (and "
                  "regenerate every fixture of this repository) to move to another.")
  dirty = git(directory, "status", "--porcelain", "--untracked-files=no", "--", "*.py")
  if dirty.returncode != 0 or dirty.stdout.strip():
    raise Refused(f"refusing --repo {name}={directory}: its tracked Python files differ from commit "
                  f"{commit}:\n{dirty.stdout}{dirty.stderr}The authors' code must run unmodified.")
  return commit


# ------------------------------------------------------------------------------------ inputs

def load_raw_module():
  """autosparse_jax/data/raw.py (pure numpy) without importing the package (which needs JAX)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("_raw", os.path.join(REPO_ROOT, "autosparse_jax", "data", "raw.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def write_inputs(path, shared_data):
  """tests/reference/inputs.npz: the first PER_CLASS images of each class (data order) of the MNIST
  training set and of the CIFAR-10 subset's data_batch_1, read by autosparse_jax/data/raw.py."""
  import numpy as np
  import reference_nets as rn
  raw = load_raw_module()
  sums = {}
  for sub in ("mnist", "cifar10-subset"):
    for line in open(os.path.join(shared_data, sub, "SHA256SUMS")) if os.path.exists(
        os.path.join(shared_data, sub, "SHA256SUMS")) else []:
      digest, fname = line.split()
      sums[f"{sub}/{fname.lstrip('*')}"] = digest
  # The official files' sha256 (the shared copies' SHA256SUMS; TFDS's own list when installed).
  for key, digest in sums.items():
    got = raw.sha256_of(os.path.join(shared_data, key))
    if got != digest:
      raise SystemExit(f"{key}: sha256 {got} differs from its SHA256SUMS entry {digest}.")
  mnist = raw.read_mnist(os.path.join(shared_data, "mnist"), verify=False)["train"]
  cifar = raw.read_cifar(os.path.join(shared_data, "cifar10-subset"), "cifar10", verify=False,
                         log=lambda *_: None)["train"]
  out = {}
  for net, (images, labels) in (("lenet", mnist), ("conv", cifar)):
    idx = rn.first_per_class(labels, rn.PER_CLASS[net])
    out[f"{net}/images"] = np.asarray(images[idx], np.uint8)
    out[f"{net}/labels"] = np.asarray(labels[idx], np.int32)
    out[f"{net}/source_index"] = idx.astype(np.int32)
  meta = {"what": "first PER_CLASS training images of each class in data order (tests/reference_nets.py)",
          "per_class": rn.PER_CLASS, "read_by": "autosparse_jax/data/raw.py (read_mnist, read_cifar)",
          "sources": {"lenet": "mnist train-images-idx3-ubyte.gz", "conv": "cifar10-subset data_batch_1.bin"},
          "source_sha256": sums}
  np.savez_compressed(path, meta=json.dumps(meta), **out)


# ---------------------------------------------------------------------- torch side (worker)

def torch_setup():
  import numpy as np
  import torch
  np.random.seed(0)  # NPB places kept entries inside a kernel with np.random.shuffle.
  torch.manual_seed(0)
  torch.use_deterministic_algorithms(True)
  torch.set_num_threads(1)
  return torch


def build_net(net, L, log_softmax=False):
  """The fixed network `net` in PyTorch with layer classes from module L (nn or an authors' masked
  layers), loaded with tests/reference_nets.theta0(net)."""
  import torch
  import torch.nn as nn
  import torch.nn.functional as F
  import reference_nets as rn

  class LeNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.lin1, self.lin2, self.fc = L.Linear(784, 300), L.Linear(300, 100), L.Linear(100, 10)

    def forward(self, x):
      x = x.reshape(x.shape[0], -1)
      x = self.fc(F.relu(self.lin2(F.relu(self.lin1(x)))))
      return F.log_softmax(x, dim=1) if log_softmax else x

  class ConvNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.conv1, self.bn1 = L.Conv2d(3, 16, 3, padding=1), L.BatchNorm2d(16)
      self.conv2, self.bn2 = L.Conv2d(16, 32, 3, padding=1), L.BatchNorm2d(32)
      self.conv3, self.bn3 = L.Conv2d(32, 64, 3, padding=1), L.BatchNorm2d(64)
      self.fc = L.Linear(64, 10)

    def forward(self, x):
      x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
      x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
      x = F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2).mean(dim=(2, 3))
      x = self.fc(x)
      return F.log_softmax(x, dim=1) if log_softmax else x

  model = {"lenet": LeNet, "conv": ConvNet}[net]()
  load(model, rn.theta0(net))
  return model


def load(model, weights):
  import torch
  state = model.state_dict()
  with torch.no_grad():
    for key, value in weights.items():
      state[key].copy_(torch.from_numpy(value))


def batch(inputs, net):
  import torch
  import reference_nets as rn
  x = rn.normalised_nchw(inputs[f"{net}/images"], rn.NETS[net]["dataset"])
  return torch.from_numpy(x), torch.from_numpy(inputs[f"{net}/labels"].astype("int64"))


def layer_arrays(model, net):
  """[(layer name, torch weight Parameter)] of the prunable layers in forward order."""
  import reference_nets as rn
  modules = dict(model.named_modules())
  return [(name, modules[name].weight) for name, _ in rn.prunable(net)]


def numpy32(t):
  return t.detach().cpu().numpy().astype("float32")


def save_fixture(out_dir, repo, criterion, meta, results):
  """results: {key: {"scores": {layer: array}, "masks": {sparsity: {layer: bool array}}, "extra": {...}}};
  key: a net of reference_nets.NETS, or NET_VARIANT (the same network and weights, other settings)."""
  import numpy as np
  import reference_nets as rn
  import torch
  arrays = {}
  for net, res in results.items():
    names = [n for n, _ in rn.prunable(net.split("_")[0])]
    scores = res["scores"]
    for layer in names:
      s = np.asarray(scores[layer], np.float32)
      arrays[f"{net}/{layer}/zero"] = rn.pack_bits(s == 0)
      arrays[f"{net}/{layer}/abs_sum"] = np.float64(np.abs(s.astype(np.float64)).sum())
      arrays[f"{net}/{layer}/abs_max"] = np.float64(np.abs(s).max())
      if s.size > SAMPLE_ABOVE:
        idx = np.sort(np.random.default_rng([len(layer), s.size]).choice(s.size, SAMPLE_SIZE, replace=False))
        arrays[f"{net}/{layer}/idx"] = idx.astype(np.int32)
        arrays[f"{net}/{layer}/scores"] = s.reshape(-1)[idx]
      else:
        arrays[f"{net}/{layer}/scores"] = s
    for sparsity, masks in res.get("masks", {}).items():
      flat = np.concatenate([np.asarray(masks[layer], bool).reshape(-1) for layer in names])
      arrays[f"{net}/mask{int(round(sparsity * 100))}"] = rn.pack_bits(flat)
    for key, value in res.get("extra", {}).items():
      arrays[f"{net}/{key}"] = np.asarray(value)
  meta = dict(meta, repo=repo, url=REPOS[repo][0], commit=REPOS[repo][1], criterion=criterion,
              torch=torch.__version__, python=sys.version.split()[0], rtol_vs_layer_max=meta.get("rtol", RTOL),
              tolerance_note=meta.get("tolerance_note", TOLERANCE_NOTE),
              weights_sha256={net: rn.sha256(rn.theta0(net.split("_")[0])) for net in results},
              generated=time.strftime("%Y-%m-%d"), sample_above=SAMPLE_ABOVE, sample_size=SAMPLE_SIZE)
  path = os.path.join(out_dir, f"{repo}__{criterion}.npz")
  np.savez_compressed(path, meta=json.dumps(meta, sort_keys=True), **arrays)
  print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)")


def reset_masks(model):
  import torch
  with torch.no_grad():
    for name, buf in model.named_buffers():
      if "mask" in name:
        buf.fill_(1.0)


def counting(mask_fn, kept, out):
  """mask_fn, recording the kept count after each call into `out` (their per-round counts: a tie at a
  round's threshold prunes every tied weight, so a count can fall short of the schedule's)."""
  def wrapped(*a, **kw):
    result = mask_fn(*a, **kw)
    out.append(int(kept()))
    return result
  return wrapped


def round_counts(counts):
  return {f"round_counts{int(round(s * 100))}": __import__("numpy").asarray(c, "int64") for s, c in counts.items()}


def read_masks(model, net):
  import reference_nets as rn
  modules = dict(model.named_modules())
  return {name: numpy32(modules[name].weight_mask) > 0.5 for name, _ in rn.prunable(net)}


# ------------------------------------------------------------------- the repositories

def run_synaptic_flow(directory, inputs, out_dir):
  """Synaptic-Flow's Pruners.pruners (Mag, SNIP, GraSP, SynFlow) and prune.prune_loop, eval mode
  (prune_loop's default train_mode=False), their masked layers (Layers.layers)."""
  torch = torch_setup()
  import numpy as np
  import torch.nn as nn
  import reference_nets as rn
  from Layers import layers
  from Pruners import pruners
  from Utils import generator
  import prune as sf_prune

  settings = {"magnitude": {}, "snip": {"batches": 2}, "grasp": {"batches": 1, "temperature": 200},
              "synflow": {"rounds": 100, "schedule": "exponential"}}
  classes = {"magnitude": pruners.Mag, "snip": pruners.SNIP, "grasp": pruners.GraSP, "synflow": pruners.SynFlow}
  for criterion, cls in classes.items():
    results = {}
    for net in ("lenet", "conv"):
      x, y = batch(inputs, net)
      counts, oneshots = {}, {}
      nb = settings[criterion].get("batches", 1)
      loader = list(zip(x.chunk(nb), y.chunk(nb)))
      model = build_net(net, layers).eval()
      pruner = cls(generator.masked_parameters(model, False, False, False))
      pruner.score(model, nn.CrossEntropyLoss(), loader, "cpu")
      scores = {name: numpy32(pruner.scores[id(p)]) for name, p in layer_arrays(model, net)}
      masks = {}
      for sparsity in SPARSITIES:
        reset_masks(model)
        pruner.mask(1 - sparsity, "global")  # Their `sparsity` argument is the kept fraction.
        oneshot = read_masks(model, net)
        if criterion == "synflow":  # Their whole loop: 100 rounds, exponential schedule, global.
          m2 = build_net(net, layers)
          p2 = cls(generator.masked_parameters(m2, False, False, False))
          p2.mask = counting(p2.mask, lambda: p2.stats()[0], counts.setdefault(sparsity, []))
          sf_prune.prune_loop(m2, nn.CrossEntropyLoss(), p2, loader, "cpu", 1 - sparsity, "exponential",
                              "global", 100)
          masks[sparsity] = read_masks(m2, net)
          oneshots[f"oneshot_mask{int(round(sparsity * 100))}"] = rn.pack_bits(
              np.concatenate([oneshot[n].reshape(-1) for n, _ in rn.prunable(net)]))
        else:
          masks[sparsity] = oneshot
      results[net] = {"scores": scores, "masks": masks, "extra": {**round_counts(counts), **oneshots}}
    meta = {"settings": settings[criterion], "mode": "eval (prune_loop train_mode=False)",
            "data": "loader = the fixture batch in `batches` equal chunks",
            "normalised": criterion in ("snip", "grasp"),
            "masks_by": ("mask90/98: prune.prune_loop(..., 'exponential', 'global', 100); oneshot_mask90/98: "
                         "Pruner.mask(1 - sparsity, 'global') on the one-round scores" if criterion == "synflow"
                         else "Pruner.mask(1 - sparsity, 'global') on the one-shot scores"),
            "entry_points": f"Pruners.pruners.{cls.__name__}.score, Pruner.mask" +
                            (", prune.prune_loop" if criterion == "synflow" else ""),
            "instrumentation": ("the pruner's mask method wrapped to record the kept count after each round "
                                "(round_counts90/98); their code unchanged" if criterion == "synflow" else "none")}
    save_fixture(out_dir, "synaptic_flow", criterion, meta, results)


def run_grasp(directory, inputs, out_dir):
  """The GraSP authors' pruner.GraSP.GraSP on plain nn layers, train mode (their driver calls it on a
  freshly built network). It returns masks only: its normalised scores are recorded from its
  torch.topk call; the classifier weights it re-draws (reinit=True) are recorded from its
  nn.init.xavier_normal calls."""
  torch = torch_setup()
  import torch.nn as nn
  import reference_nets as rn
  from pruner import GraSP as grasp_module

  recorded = {}
  topk, xavier = torch.topk, nn.init.xavier_normal

  def recording_topk(t, k, *a, **kw):
    recorded.setdefault("topk", []).append((t.detach().clone(), k))
    return topk(t, k, *a, **kw)

  def recording_xavier(w, *a, **kw):
    out = xavier(w, *a, **kw)
    recorded.setdefault("xavier", []).append(w.detach().clone())
    return out

  torch.topk, nn.init.xavier_normal = recording_topk, recording_xavier
  results, extra_meta = {}, {}
  try:
    for reinit in (False, True):
      for net in ("lenet", "conv"):
        if reinit and net == "lenet":
          continue  # Every LeNet layer is Linear: reinit=True would re-draw the whole network.
        x, y = batch(inputs, net)
        per_class = rn.PER_CLASS[net]
        loader = [(x, y), (x, y)]  # GraSP_fetch_data stops once it has seen every class full once more.
        res = {"masks": {}}
        for sparsity in SPARSITIES:
          recorded.clear()
          torch.manual_seed(1234)
          model = build_net(net, nn).train()
          keep = grasp_module.GraSP(model, sparsity, loader, "cpu", num_classes=10,
                                    samples_per_class=per_class, num_iters=1, T=200, reinit=reinit)
          flat, _ = recorded["topk"][0]
          names = [n for n, _ in rn.prunable(net)]
          sizes = [int(__import__("numpy").prod(s)) for _, s in rn.prunable(net)]
          pieces = torch.split(flat, sizes)
          res["scores"] = {n: numpy32(p.reshape(s)) for n, p, (_, s) in zip(names, pieces, rn.prunable(net))}
          res["masks"][sparsity] = {n: numpy32(m) > 0.5 for n, m in zip(names, keep.values())}
          if reinit:
            res.setdefault("extra", {})["fc_reinit"] = numpy32(recorded["xavier"][0])
        results[net if not reinit else f"{net}_reinit"] = res
  finally:
    torch.topk, nn.init.xavier_normal = topk, xavier
  meta = {"settings": {"T": 200, "num_iters": 1, "samples_per_class": rn.PER_CLASS, "reinit": {"lenet": False,
                                                                                              "conv": False,
                                                                                              "conv_reinit": True}},
          "mode": "train (BatchNorm on batch statistics; their main_prune_non_imagenet.py builds the network and "
                  "calls GraSP without .eval())",
          "data": "loader = [batch, batch] (the fixture batch has exactly samples_per_class of each class)",
          "scores": "their normalised -theta * Hg (the argument of their torch.topk), lowest kept",
          "instrumentation": "torch.topk and nn.init.xavier_normal wrapped to record their arguments/results; "
                             "their code unchanged",
          "entry_points": "pruner.GraSP.GraSP",
          "rtol_by_net": {"conv": 3e-5, "conv_reinit": 3e-5},
          "normalisation_rtol": 1e-2,
          "tolerance_note": TOLERANCE_NOTE + " The conv net in train mode: Hg through batch statistics is "
                            "float32-noisy at 1e-5 of the layer max (ours in float32 vs ours in float64: up to "
                            "8.7e-6; theirs vs ours in float64: up to 1.2e-5), so 3e-5 there. Their normalisation "
                            "divides by |sum of all scores|, which cancels to ~3e-5 of sum |score| on the conv "
                            "net: float32 rounding of that sum alone moves the factor by ~0.1%, so the conv "
                            "scores are compared after fitting one common factor (within normalisation_rtol of "
                            "ours), the entries to rtol."}
  # conv_reinit: the conv net again, scored by GraSP with reinit=True (their default).
  save_fixture(out_dir, "grasp", "grasp", meta, results)


def run_px(directory, inputs, out_dir):
  """The PX authors' lib.pruners.PX and SynFlowL2 on their masked layers (lib.layers), driven as
  their train_classification.py does: model.eval(), then per round score + mask(d^(r/R), 'global')."""
  torch = torch_setup()
  import torch.nn as nn
  import reference_nets as rn
  from globals import CONFIG
  import lib.layers as layers
  from lib.generator import masked_parameters
  from lib.pruners import PX, SynFlowL2

  class Labelled(torch.utils.data.TensorDataset):
    def __init__(self, x, y):
      super().__init__(x, y)
      self.targets = [int(v) for v in y]

  settings = {"rounds": 100, "examples_per_class": dict(rn.PER_CLASS), "batch": "one batch (all examples)"}
  DTYPE_BY_NET = {"px": {"conv": torch.float64}, "synflow_l2": {}}
  for criterion, cls in (("px", PX), ("synflow_l2", SynFlowL2)):
    results = {}
    for net in ("lenet", "conv"):
      x, y = batch(inputs, net)
      counts = {}
      CONFIG.dataset = "CIFAR10"  # Their data path for a labelled dataset (get_balanced_subset).
      CONFIG.batch_size = len(y)
      CONFIG.experiment_args = {"examples_per_class": rn.PER_CLASS[net], "batch_limit": 1}
      # PX's path kernel runs train-mode BN on an all-ones batch: on the conv net the scores of the layers
      # before a BN are float32 rounding noise in their code (float32 vs float64 of their own code: 91x
      # the layer's largest score on conv1). The conv fixture is made in float64.
      dtype = DTYPE_BY_NET[criterion].get(net, torch.float32)
      x = x.to(dtype)
      loader = torch.utils.data.DataLoader(Labelled(x, y), batch_size=len(y), shuffle=False)
      model = build_net(net, layers).to(dtype).eval()
      pruner = cls(masked_parameters(model))
      pruner.score(model, nn.CrossEntropyLoss(), loader, "cpu")
      scores = {name: numpy32(pruner.scores[id(p)]) for name, p in layer_arrays(model, net)}
      masks = {}
      for sparsity in SPARSITIES:
        if criterion == "px":  # Their loop: 100 rounds.
          m2 = build_net(net, layers).to(dtype).eval()
          p2 = cls(masked_parameters(m2))
          for r in range(settings["rounds"]):
            p2.score(m2, nn.CrossEntropyLoss(), loader, "cpu")
            p2.mask((1 - sparsity) ** ((r + 1) / settings["rounds"]), "global")
            counts.setdefault(sparsity, []).append(int(p2.stats()[0]))
          masks[sparsity] = read_masks(m2, net)
        reset_masks(model)
        pruner.mask(1 - sparsity, "global")  # One-shot: their masking of the one-round scores.
        oneshot = read_masks(model, net)
        if criterion == "px":
          counts[f"oneshot_mask{int(round(sparsity * 100))}"] = rn.pack_bits(
              __import__("numpy").concatenate([oneshot[n].reshape(-1) for n, _ in rn.prunable(net)]))
        else:
          masks[sparsity] = oneshot
      extra = round_counts({k: v for k, v in counts.items() if not isinstance(k, str)})
      extra.update({k: v for k, v in counts.items() if isinstance(k, str)})
      results[net] = {"scores": scores, "masks": masks, "extra": extra}
    meta = {"settings": settings if criterion == "px" else {"rounds": 1},
            "config": "globals.CONFIG.dataset='CIFAR10' (their labelled-data path), experiment_args="
                      "{'examples_per_class': k, 'batch_limit': 1}, batch_size = all examples",
            "mode": "model.eval() as train_classification.py; PX's own copies: pk/jvf train mode, activations eval",
            "masks_by": ("mask90/98: train_classification.py's loop, 100 x (PX.score, mask(d^((r+1)/100), "
                         "'global')); oneshot_mask90/98: Pruner.mask(1 - sparsity, 'global') on the one-round scores"
                         if criterion == "px" else "Pruner.mask(1 - sparsity, 'global') on one-round scores"),
            "entry_points": f"lib.pruners.{cls.__name__}.score, Pruner.mask",
            "instrumentation": "none; round_counts90/98: pruner.stats() after each round of the driver loop",
            "dtype_by_net": {k: str(v).replace("torch.", "") for k, v in DTYPE_BY_NET[criterion].items()},
            "precision_note": ("conv in float64 (the network and the batch .double()): PX's path kernel is "
                               "train-mode BN on an all-ones batch, float32 rounding noise on conv1/conv2 "
                               "(their own code, float32 vs float64: 91x and 0.48x the layer's largest score)"
                               if criterion == "px" else "")}
    save_fixture(out_dir, "px", criterion, meta, results)


def run_ntk_sap(directory, inputs, out_dir):
  """The NTK-SAP authors' Pruners.pruners.NTKSAP on their masked layers, train mode (scripts/run.sh:
  --prune-train-mode True). model._initialize_weights is the network's own: here it loads the j-th
  seeded re-draw; torch.randn_like (the random inputs and perturbations) is replaced during the call
  by a seeded numpy stream, so the tests can feed our criterion the same draws."""
  torch = torch_setup()
  import torch.nn as nn
  import reference_nets as rn
  from Layers import layers
  from Pruners import pruners
  from Utils import generator

  settings = {"epsilon": 0.01, "R": 2, "batches": 1, "draw_seed": NTK_DRAW_SEED, "fresh_seed": NTK_FRESH_SEED}
  results, draws_meta = {}, {}
  randn_like = torch.randn_like
  for net in ("lenet", "conv"):
    x, y = batch(inputs, net)
    model = build_net(net, layers)
    # Their perturbed copy is made once, before the re-draws, and perturb() only rewrites its weights:
    # it keeps the biases and BN parameters of the network it was copied from. With their initialisers
    # (zero biases, BN 1 / 0) those equal the re-drawn ones; the network handed to them here has them too.
    load(model, rn.theta0(net, fresh=True))
    fresh = {"count": 0}

    def initialize(model=model, net=net):
      load(model, rn.theta0(net, NTK_FRESH_SEED + fresh["count"], fresh=True))
      fresh["count"] += 1

    model._initialize_weights = initialize
    calls = []

    def seeded_randn_like(t, *a, **kw):
      c = len(calls)
      calls.append({"counter": c, "shape": list(t.shape)})
      return torch.from_numpy(rn.normal_draw(NTK_DRAW_SEED, c, t.shape)).to(t.dtype)

    torch.randn_like = seeded_randn_like
    try:
      model.train()
      pruner = pruners.NTKSAP(generator.masked_parameters(model, False, False, False),
                              ntksap_epsilon=settings["epsilon"], ntksap_R=settings["R"])
      pruner.score(model, nn.MSELoss(), [(x, y)], "cpu")
    finally:
      torch.randn_like = randn_like
    scores = {name: numpy32(pruner.scores[id(p)]) for name, p in layer_arrays(model, net)}
    masks = {}
    for sparsity in SPARSITIES:
      reset_masks(model)
      pruner.mask(1 - sparsity, "global")
      masks[sparsity] = read_masks(model, net)
    results[net] = {"scores": scores, "masks": masks}
    draws_meta[net] = {"randn_like_calls": calls, "initialize_calls": fresh["count"]}
  meta = {"settings": settings, "draws": draws_meta,
          "mode": "train (scripts/run.sh --prune-train-mode True): reset BN, a train-mode pass with momentum 1, "
                  "then both networks in eval mode",
          "network": "theta0(net, fresh=True): zero biases, BN weight 1 / bias 0 / running 0, 1 (their copy "
                     "model_mod keeps the biases and BN parameters of this network while its weights are re-drawn)",
          "draw_order": "per draw j: _initialize_weights (theta0(net, fresh_seed + j, fresh=True)), then "
                        "randn_like(data) = the input, then randn_like(w) per prunable weight in forward order",
          "masks_by": "Pruner.mask(1 - sparsity, 'global') on the one-round scores (the 20-round masks re-draw "
                      "the weights every round: not compared)",
          "instrumentation": "torch.randn_like replaced by seeded numpy draws during score(); the network's "
                             "_initialize_weights loads seeded re-draws; their code unchanged",
          "entry_points": "Pruners.pruners.NTKSAP.score, Pruner.mask",
          "rtol": 2e-5,
          "tolerance_note": "float32 on both sides; T is a finite difference (eps = 0.01) of two nearly equal "
                            "outputs, so float32 loses ~2 digits: theirs vs ours in float64 differ by up to "
                            "9.2e-6 of the layer max on conv1/conv2 (ours float32 vs float64: 2.5e-6). 2e-5."}
  save_fixture(out_dir, "ntk_sap", "ntk_sap", meta, results)


def run_prospr(directory, inputs, out_dir):
  """The ProsPr authors' prospr.prune (method 'full', new_data_in_inner=False: cli.py's defaults) on
  plain nn layers; scores with return_scores=True, masks with return_scores=False."""
  torch = torch_setup()
  import reference_nets as rn
  import torch.nn as nn
  import prospr
  from prospr.utils import pruning_filter_factory

  settings = {"num_steps": 3, "inner_lr": 0.1, "inner_momentum": 0.0, "method": "full",
              "new_data_in_inner": False, "structured": False}
  results = {}
  for net in ("lenet", "conv"):
    x, y = batch(inputs, net)
    loader = [(x, y)]
    kw = dict(filter_fn=pruning_filter_factory(10, False), num_steps=settings["num_steps"],
              inner_lr=settings["inner_lr"], inner_momentum=settings["inner_momentum"], method="full",
              structured=False, new_data_in_inner=False)
    model = build_net(net, nn)
    scores = prospr.prune(model, 0.9, loader, return_scores=True, **kw)
    names = [n for n, _ in rn.prunable(net)]
    res = {"scores": {n: numpy32(s) for n, s in zip(names, scores)}, "masks": {}}
    for sparsity in SPARSITIES:
      _, keep = prospr.prune(build_net(net, nn), sparsity, loader, return_scores=False, **kw)
      res["masks"][sparsity] = {n: numpy32(m) > 0.5 for n, m in zip(names, keep)}
    results[net] = res
  meta = {"settings": settings, "mode": "train (prune() calls net.train())",
          "data": "loader = [the fixture batch]: the one batch of the inner loop and the meta-loss",
          "masks_by": "prospr.prune(..., return_scores=False): keep_mask_from_scores, ceil(n * density) kept",
          "entry_points": "prospr.prune"}
  save_fixture(out_dir, "prospr", "prospr", meta, results)


def run_force(directory, inputs, out_dir):
  """The FORCE authors' pruning.pruning_algos: get_average_saliencies (prune_method=3) at the dense
  network and at a fixed 30%-density mask, and iterative_pruning (10 steps, exp, 1 batch) for the
  masks; plain nn layers with a log-softmax output (their nll_loss), train mode (their network is
  never put in eval mode before pruning)."""
  torch = torch_setup()
  import copy
  import numpy as np
  import torch.nn as nn
  import reference_nets as rn
  from pruning import pruning_algos
  from pruning.mask_networks import apply_prune_mask

  settings = {"num_steps": 10, "mode": "exp", "num_batches": 1, "prune_method": 3, "mask_seed": FORCE_MASK_SEED,
              "mask_density": 0.3}

  results = {}
  for net in ("lenet", "conv"):
    x, y = batch(inputs, net)
    loader = [(x, y)]
    model = build_net(net, nn, log_softmax=True).train()
    names = [n for n, _ in rn.prunable(net)]
    original = [layer.weight.detach() for layer in model.modules() if isinstance(layer, (nn.Conv2d, nn.Linear))]
    sal = pruning_algos.get_average_saliencies(copy.deepcopy(model), loader, "cpu", prune_method=3,
                                               num_batches=1, original_weights=original)
    res = {"scores": {n: numpy32(s) for n, s in zip(names, sal)}, "masks": {}, "extra": {}}
    # At a fixed mask (pruned weights are zeroed without blocking their gradients, as in their rounds).
    fixed = [torch.from_numpy((np.random.default_rng([FORCE_MASK_SEED, i]).random(s) < 0.3).astype(np.float32))
             for i, (_, s) in enumerate(rn.prunable(net))]
    masked = copy.deepcopy(model)
    apply_prune_mask(masked, fixed, apply_hooks=False)
    sal_m = pruning_algos.get_average_saliencies(masked, loader, "cpu", prune_method=3, num_batches=1,
                                                 original_weights=original)
    results[f"{net}_atmask"] = {"scores": {n: numpy32(s) for n, s in zip(names, sal_m)}}
    get_mask = pruning_algos.get_mask
    for sparsity in SPARSITIES:
      kept = []

      def recording_get_mask(saliency, factor):
        out = get_mask(saliency, factor)
        kept.append(int(sum(float(m.sum()) for m in out)))
        return out

      pruning_algos.get_mask = recording_get_mask
      try:
        keep = pruning_algos.iterative_pruning(build_net(net, nn, log_softmax=True).train(), loader, "cpu",
                                               pruning_factor=1 - sparsity, prune_method=3, num_steps=10,
                                               mode="exp", num_batches=1)
      finally:
        pruning_algos.get_mask = get_mask
      res["masks"][sparsity] = {n: numpy32(m) > 0.5 for n, m in zip(names, keep)}
      res["extra"][f"round_counts{int(round(sparsity * 100))}"] = np.asarray(kept, np.int64)
    results[net] = res  # NET_atmask: the saliencies at the fixed mask.
  meta = {"settings": settings, "mode": "train (BatchNorm on batch statistics)",
          "data": "loader = [the fixture batch]: next(iter(loader)) is the same batch every round",
          "masks_by": "iterative_pruning(net, loader, 'cpu', 1 - sparsity, prune_method=3, num_steps=10, "
                      "mode='exp', num_batches=1): keeps scores >= the int(n * d_r)-th largest",
          "fixed_mask": "layer i: default_rng([mask_seed, i]).random(shape) < 0.3 (torch layout)",
          "instrumentation": "pruning_algos.get_mask wrapped to record each round's kept count (round_counts90/98)",
          "precision_note": "the conv net's 10-round masks are stored but not compared: from round 7-8 at 90% the "
                            "pruned network has (nearly) constant regions (fully pruned channels, border rows seen "
                            "only through zero padding), so 2x2 max-pool windows hold exact ties and where a tied "
                            "max's gradient goes is decided by float rounding: ours float64 eager equals theirs "
                            "float64 to 1.7e-7 at their round-7 mask, ours float64 under jit differs by 2.4% of the "
                            "layer max; FORCE's reviving rounds then amplify one round's swaps (648 of 2411 kept "
                            "differ after 10 rounds).",
          "entry_points": "pruning.pruning_algos.get_average_saliencies, iterative_pruning; "
                          "pruning.mask_networks.apply_prune_mask"}
  save_fixture(out_dir, "force", "force", meta, results)


def run_autosparse(directory, inputs, out_dir):
  """The AutoSparse authors' scorer modules (autos_model.autosnet.MLP and ResNet18) with fixed weights:
  their forward(params, grads) in eval mode (the scorer as it scores weights), and the MLP's in
  train mode (BatchNorm over the batch of weights, as in its training)."""
  torch = torch_setup()
  import numpy as np
  import reference_nets as rn
  from autos_model import autosnet

  arrays, meta_nets = {}, {}
  for name, cls, n in (("mlp", autosnet.MLP, 256), ("resnet18", autosnet.ResNet18, 8)):
    model = cls()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    weights = rn.scorer_state(shapes)
    load(model, weights)
    features = rn.scorer_features(n)
    theta, grads = torch.from_numpy(features[:, 0]), torch.from_numpy(features[:, 1])
    with torch.no_grad():
      arrays[f"{name}/eval"] = numpy32(model.eval()(theta, grads)).reshape(-1)
      if name == "mlp":
        arrays[f"{name}/train"] = numpy32(model.train()(theta, grads)).reshape(-1)
    meta_nets[name] = {"class": f"autos_model.autosnet.{cls.__name__}", "samples": n,
                       "state_shapes": {k: list(v) for k, v in shapes.items()},
                       "weights_sha256": rn.sha256(weights)}
  meta = {"repo": "autosparse", "url": REPOS["autosparse"][0], "commit": REPOS["autosparse"][1],
          "criterion": "autos", "torch": torch.__version__, "scorers": meta_nets, "rtol_vs_layer_max": RTOL,
          "rtol_by_mode": {"train": 3e-5},
          "tolerance_note": "float32 forward passes: |ours - theirs| <= 1e-5 x max |theirs| over the samples; "
                            "train mode (BatchNorm over the batch of weights) 3e-5: ours (flax's BatchNorm, batch "
                            "variance as E[x^2] - E[x]^2) is 1.0e-5 of the max from the float64 result, theirs "
                            "3.3e-6.",
          "weights": "tests/reference_nets.scorer_state(state_shapes) (seeded), features scorer_features(n)",
          "entry_points": "autos_model.autosnet.MLP / ResNet18 .forward(params, grads)",
          "generated": time.strftime("%Y-%m-%d")}
  path = os.path.join(out_dir, "autosparse__autos.npz")
  np.savez_compressed(path, meta=json.dumps(meta, sort_keys=True), **arrays)
  print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)")


def run_npb(directory, inputs, out_dir):
  """The NPB authors' Pruners.pruners.Optimization_Pruner (ERK layer budgets, then their cvxpy integer
  programme per layer, HiGHS through cvxpy) on the conv net at 90% / 98%: their layer budgets, masks,
  and per layer the input-node path values P they solved with, their solution and the programme's
  optimal value. (LeNet-300-100 cannot run: their first-layer P for an image input to a Linear layer is
  summed over the wrong axis and raises 'Wrong input dimension'.) Import-only dependencies that the
  pruning path never calls (matplotlib, seaborn, pandas; Utils.load, which imports torchvision) are
  stubbed as empty modules."""
  import importlib.machinery
  import types
  torch = torch_setup()
  for name in ("matplotlib", "matplotlib.pyplot", "seaborn", "pandas", "Utils.load"):
    try:
      if name != "Utils.load":
        __import__(name)
        continue
    except ImportError:
      pass
    stub = types.ModuleType(name)
    stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = stub
  import cvxpy as cp
  import numpy as np
  import reference_nets as rn
  from Layers import layers
  from Pruners import pruners

  settings = {"initializer": "ERK", "alpha": 0.01, "beta": 1.0, "max_param_per_kernel": None,
              "chunk_size": 32, "net": "conv", "solver": "cvxpy default MILP solver (HiGHS)"}
  calls, values = [], []
  optimize, solve = pruners.optimize_layerwise, cp.Problem.solve

  def recording_optimize(mask, inp, sparsity, **kw):
    out = optimize(mask, inp, sparsity, **kw)
    calls.append({"shape": list(mask.shape), "inp": inp.detach().double().numpy().copy(), "sparsity": float(sparsity),
                  "kw": {k: (v if isinstance(v, (int, float, bool, type(None))) else None) for k, v in kw.items()},
                  "mask": numpy32(out) > 0.5, "value": values[-1]})
    return out

  def recording_solve(self, *a, **kw):
    value = solve(self, *a, **kw)
    values.append(float(value))
    return value

  pruners.optimize_layerwise, cp.Problem.solve = recording_optimize, recording_solve
  arrays, meta_layers = {}, {}
  try:
    for sparsity in SPARSITIES:
      calls.clear()
      model = build_net("conv", layers)
      pruner = pruners.Optimization_Pruner(initializer="ERK", alpha=settings["alpha"], beta=settings["beta"],
                                           sparsity=1 - sparsity, device="cpu", max_param_per_kernel=None,
                                           chunk_size=settings["chunk_size"])
      pruner.prune(model, (3, 32, 32))
      tag = int(round(sparsity * 100))
      final = read_masks(model, "conv")
      flat = np.concatenate([final[n].reshape(-1) for n, _ in rn.prunable("conv")])
      arrays[f"conv/mask{tag}"] = rn.pack_bits(flat)
      layer_meta = []
      for i, c in enumerate(calls):
        arrays[f"conv/{tag}/call{i}/inp"] = c["inp"]
        arrays[f"conv/{tag}/call{i}/mask"] = rn.pack_bits(c["mask"])
        layer_meta.append({"shape": c["shape"], "sparsity": c["sparsity"], "kw": c["kw"], "value": c["value"]})
      meta_layers[tag] = layer_meta
  finally:
    pruners.optimize_layerwise, cp.Problem.solve = optimize, solve
  meta = {"repo": "npb", "url": REPOS["npb"][0], "commit": REPOS["npb"][1], "criterion": "npb",
          "torch": torch.__version__, "cvxpy": cp.__version__, "settings": settings, "calls": meta_layers,
          "weights_sha256": {"conv": rn.sha256(rn.theta0("conv"))},
          "instrumentation": "Pruners.pruners.optimize_layerwise and cvxpy.Problem.solve wrapped to record each "
                             "layer's arguments, solution and optimal value; import-only modules stubbed",
          "entry_points": "Pruners.pruners.Optimization_Pruner.prune (-> Pruners.utils.optimize_layerwise, "
                          "ERK_sparsify, fine_tune_mask)", "generated": time.strftime("%Y-%m-%d")}
  path = os.path.join(out_dir, "npb__npb.npz")
  np.savez_compressed(path, meta=json.dumps(meta, sort_keys=True), **arrays)
  print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)")


RUNNERS = {"synaptic_flow": run_synaptic_flow, "grasp": run_grasp, "px": run_px, "ntk_sap": run_ntk_sap,
           "prospr": run_prospr, "force": run_force, "autosparse": run_autosparse, "npb": run_npb}


def worker(name, directory, out_dir):
  import numpy as np
  check_checkout(name, directory)
  sys.path.insert(0, os.path.abspath(directory))
  os.chdir(directory)  # Some repositories read relative paths at import.
  with np.load(os.path.join(out_dir, "inputs.npz")) as f:
    inputs = {k: f[k] for k in f.files}
  if name not in RUNNERS:
    raise SystemExit(f"{name}: no generator written for this repository yet.")
  RUNNERS[name](directory, inputs, out_dir)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repo", action="append", default=[], metavar="NAME=DIR",
                      help=f"an authors' checkout; NAME one of {', '.join(REPOS)}")
  parser.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "reference"))
  parser.add_argument("--shared_data", default=os.path.join(os.path.dirname(REPO_ROOT), "shared", "data"))
  parser.add_argument("--inputs", action="store_true", help="(re)write inputs.npz from --shared_data")
  parser.add_argument("--worker", nargs=2, metavar=("NAME", "DIR"), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  out_dir = os.path.abspath(args.out)
  if args.worker:
    return worker(args.worker[0], os.path.abspath(args.worker[1]), out_dir)
  repos = []
  for item in args.repo:  # Every checkout is checked before anything runs (and before torch loads).
    if "=" not in item:
      raise Refused(f"refusing --repo {item!r}: expected NAME=DIR.")
    name, directory = item.split("=", 1)
    check_checkout(name, os.path.abspath(directory))
    repos.append((name, os.path.abspath(directory)))
  os.makedirs(out_dir, exist_ok=True)
  if args.inputs or not os.path.exists(os.path.join(out_dir, "inputs.npz")):
    write_inputs(os.path.join(out_dir, "inputs.npz"), args.shared_data)
  for name, directory in repos:  # One process per repository: several share module names (Layers, Utils).
    start = time.time()
    subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name, directory, "--out", out_dir],
                   check=True)
    print(f"{name}: {time.time() - start:.1f} s")


if __name__ == "__main__":
  main()
