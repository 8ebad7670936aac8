"""The PyTorch twins of samlab-deep's benchmark models (crates/samlab-deep/src/models.rs), for the speed
comparisons (bench/deep_speed.py, bench/gpu/bench.py): the small CNN, PreAct ResNet-18 at width w and WRN-28-k,
all pre-activation ResNets built from one block, BatchNorm, bias-free convolutions, 10 classes."""
import torch.nn as nn
import torch.nn.functional as F


class PreActBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, planes, 1, stride, bias=False) if stride != 1 or cin != planes else None

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + sc


class PreActNet(nn.Module):
    """A 3x3 stem to `stem` channels, then `stages` of (channels, blocks, stride), BatchNorm + ReLU, global
    average pooling and a linear head."""

    def __init__(self, stem, stages, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        layers, cin = [], stem
        for planes, count, stride in stages:
            for j in range(count):
                layers.append(PreActBlock(cin, planes, stride if j == 0 else 1))
                cin = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, classes)

    def forward(self, x):
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def preact_resnet18(w):
    return PreActNet(w, [(w, 2, 1), (2 * w, 2, 2), (4 * w, 2, 2), (8 * w, 2, 2)])


def wrn28(k):
    return PreActNet(16, [(16 * k, 4, 1), (32 * k, 4, 2), (64 * k, 4, 2)])


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))
