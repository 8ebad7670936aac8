"""The PyTorch twins of samlab-deep's benchmark models (crates/samlab-deep/src/models.rs), for the speed
comparisons (bench/deep_speed.py, bench/gpu/bench.py) and for loading samlab checkpoints
(bench/checkpoint_to_torch.py): the small CNN, PreAct ResNet-18/34 at width w and WRN-28-k, all pre-activation
ResNets built from one block, BatchNorm, bias-free convolutions, 10 classes by default.

The pre-activation ResNets use the authors' module names (tml-epfl/understanding-sam `models.py`, after
kuangliu/pytorch-cifar): `conv1`, `layer<s>.<j>.{bn1,conv1,bn2,conv2,shortcut.0}`, `bn`, `linear`, which are
samlab's parameter names, so a samlab checkpoint's tensors load under the same keys. `Transformer` is samlab's
`vit` and `mixer` under timm's names (the fixture of bench/transformer_reference.py)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class PreActBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False))
                         if stride != 1 or cin != planes else None)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + sc


class PreActNet(nn.Module):
    """A 3x3 stem to `stem` channels, then `stages` of (channels, blocks, stride) as `layer1`, `layer2`, ...,
    BatchNorm + ReLU, global average pooling and a linear head."""

    def __init__(self, stem, stages, classes=10, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        cin = stem
        self.stages = []
        for s, (planes, count, stride) in enumerate(stages):
            blocks = []
            for j in range(count):
                blocks.append(PreActBlock(cin, planes, stride if j == 0 else 1))
                cin = planes
            name = f"layer{s + 1}"
            setattr(self, name, nn.Sequential(*blocks))
            self.stages.append(name)
        self.bn = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, classes)

    def forward(self, x):
        out = self.conv1(x)
        for name in self.stages:
            out = getattr(self, name)(out)
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def preact_resnet18(w, classes=10, in_channels=3):
    return PreActNet(w, [(w, 2, 1), (2 * w, 2, 2), (4 * w, 2, 2), (8 * w, 2, 2)], classes, in_channels)


def preact_resnet34(w, classes=10, in_channels=3):
    return PreActNet(w, [(w, 3, 1), (2 * w, 4, 2), (4 * w, 6, 2), (8 * w, 3, 2)], classes, in_channels)


def wrn28(k, classes=10, in_channels=3):
    return PreActNet(16, [(16 * k, 4, 1), (32 * k, 4, 2), (64 * k, 4, 2)], classes, in_channels)


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))


class Mlp(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    """timm's multi-head self-attention: `qkv` features ordered (3, heads, d / heads), then `proj`."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, d))


class VitBlock(nn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = Mlp(d, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MixerBlock(nn.Module):
    def __init__(self, tokens, d, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.mlp_tokens = Mlp(tokens, max(d // 2, 1))
        self.norm2 = nn.LayerNorm(d)
        self.mlp_channels = Mlp(d, hidden)

    def forward(self, x):
        x = x + self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.mlp_channels(self.norm2(x))


class Transformer(nn.Module):
    """samlab's `vit` and `mixer` (crates/samlab-deep/src/transformer.rs) under timm's names: a p x p stride-p
    patch embedding, `depth` pre-LayerNorm blocks, a final LayerNorm, the class token or the mean over tokens,
    a linear head."""

    def __init__(self, mixer, width, depth, patch, heads, mlp_ratio, pool, input=(1, 28, 28), classes=10):
        super().__init__()
        c, h, w = input
        tokens = (h // patch) * (w // patch)
        d, hidden = width, mlp_ratio * width
        self.mixer, self.pool = mixer, pool
        embed = nn.Conv2d(c, d, patch, patch)
        if mixer:
            self.stem = nn.Module()
            self.stem.proj = embed
            self.blocks = nn.Sequential(*[MixerBlock(tokens, d, hidden) for _ in range(depth)])
        else:
            self.patch_embed = nn.Module()
            self.patch_embed.proj = embed
            if pool == "cls":
                self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, d))
                tokens += 1
            self.pos_embed = nn.Parameter(0.02 * torch.randn(1, tokens, d))
            self.blocks = nn.Sequential(*[VitBlock(d, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        embed = self.stem.proj if self.mixer else self.patch_embed.proj
        x = embed(x).flatten(2).transpose(1, 2)
        if not self.mixer:
            if self.pool == "cls":
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
            x = x + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(1))
