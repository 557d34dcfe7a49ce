r"""PyTorch side of benchmarks/conv_cpu.py: eager channels-last CPU train steps, on demand.

Run by conv_cpu.py under a PyTorch interpreter (--torch_python; torch is never a
dependency of autosparse_jax). Builds the same architectures as
autosparse_jax/models: ResNet-18 (CIFAR: 3x3 stride-1 stem, no max-pool, BasicBlocks,
1x1 conv + BN shortcuts) and VGG-16 with BN (3x3 convs with bias, 2x2 max-pool after
each stage but the last, global average pool, one Linear head), in
torch.channels_last, with SGD + Nesterov as the recipes. Then reads commands from
stdin, one a line, so the parent can interleave them with its JAX steps:

  <model> <width> <batch>   one train step (the first call for a model builds it
                            and runs one untimed warm-up step); prints its seconds
  quit

Prints "ready" when it can take commands.
"""
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F

STAGES = {"vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))}
WEIGHT_DECAY = {"resnet18": 5e-4, "vgg16": 1e-4}
LR = {"resnet18": 0.01, "vgg16": 0.1}


class BasicBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.shortcut = None
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nn.Module):
  def __init__(self, classes=10, width=64):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
    blocks, cin = [], width
    for stage in range(4):
      cout = width * 2**stage
      for block in range(2):
        blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and block == 0 else 1))
        cin = cout
    self.blocks = nn.Sequential(*blocks)
    self.head = nn.Linear(cin, classes)

  def forward(self, x):
    return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class VGG(nn.Module):
  def __init__(self, stages, classes=10, width_scale=1.0):
    super().__init__()
    layers, cin = [], 3
    for s, widths in enumerate(stages):
      if s > 0:
        layers.append(nn.MaxPool2d(2))
      for w in widths:
        w = max(1, int(w * width_scale))
        layers += [nn.Conv2d(cin, w, 3, 1, 1), nn.BatchNorm2d(w), nn.ReLU()]
        cin = w
    self.features = nn.Sequential(*layers)
    self.head = nn.Linear(cin, classes)

  def forward(self, x):
    return self.head(self.features(x).mean((2, 3)))


def build(model, width):
  if model == "resnet18":
    return ResNet18(10, max(1, int(64 * width)))
  return VGG(STAGES[model], 10, width)


class Stepper:
  def __init__(self, model, width, batch):
    torch.manual_seed(0)
    self.net = build(model, width).to(memory_format=torch.channels_last).train()
    self.opt = torch.optim.SGD(self.net.parameters(), lr=LR[model], momentum=0.9, nesterov=True,
                               weight_decay=WEIGHT_DECAY[model])
    self.x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    self.y = torch.randint(0, 10, (batch,))
    self.step()  # Warm-up.

  def step(self):
    t = time.perf_counter()
    self.opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(self.net(self.x), self.y)
    loss.backward()
    self.opt.step()
    return time.perf_counter() - t


def main():
  steppers = {}
  print("ready", torch.__version__, torch.get_num_threads(), flush=True)
  for line in sys.stdin:
    words = line.split()
    if not words or words[0] == "quit":
      break
    key = (words[0], float(words[1]), int(words[2]))
    if key not in steppers:
      steppers[key] = Stepper(*key)
    print(f"{steppers[key].step():.6f}", flush=True)


if __name__ == "__main__":
  main()
