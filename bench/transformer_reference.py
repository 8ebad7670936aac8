#!/usr/bin/env python3
"""PyTorch float64 reference of samlab's ViT and MLP-Mixer: bench/transformer_reference.json.

For each case, the PyTorch twin of the model (bench/torch_models.py `Transformer`, timm's parameter names) gets
seeded random weights (PyTorch's init, then LayerNorm scales, shifts and Linear biases drawn away from 1 and 0 so
that every parameter's gradient is exercised), rounded to float32; the forward pass and the gradient of the mean
cross-entropy over a batch of random images are then computed in float64 from those float32 values. The fixture
holds the state_dict (PyTorch's names and shapes), the images, labels, logits, loss and gradients.
crates/samlab-deep/tests/transformer_reference.rs imports the weights through samlab's state_dict reader and
compares samlab's f32 forward and backward pass with these numbers.

Before writing, the script checks its own gradients against central differences of its float64 loss (40
coordinates per case, relative error below 1e-7). Run with the venv's Python:
    ~/.cache/samlab-venv/bin/python bench/transformer_reference.py
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from torch_models import Transformer  # noqa: E402

CASES = [
    dict(name="vit_cls", arch="vit", width=8, depth=2, patch=4, heads=2, mlp_ratio=2, pool="cls",
         input=[1, 8, 8], classes=3, batch=5),
    dict(name="vit_mean", arch="vit", width=6, depth=1, patch=2, heads=3, mlp_ratio=3, pool="mean",
         input=[3, 4, 6], classes=4, batch=3),
    dict(name="mixer", arch="mixer", width=8, depth=2, patch=2, heads=1, mlp_ratio=2, pool="mean",
         input=[1, 8, 8], classes=3, batch=4),
]


def case(spec, seed):
    torch.manual_seed(seed)
    model = Transformer(spec["arch"] == "mixer", spec["width"], spec["depth"], spec["patch"], spec["heads"],
                        spec["mlp_ratio"], spec["pool"], tuple(spec["input"]), spec["classes"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") or ".norm" in name or name.startswith("norm"):
                base = 1.0 if (name.endswith("weight") and "norm" in name) else 0.0
                p.copy_(base + 0.2 * torch.randn_like(p))
    state = {k: v.float().double() for k, v in model.state_dict().items()}
    model = model.double()
    model.load_state_dict(state)
    x = torch.randn(spec["batch"], *spec["input"]).float().double()
    labels = torch.randint(0, spec["classes"], (spec["batch"],))
    logits = model(x)
    loss = F.cross_entropy(logits, labels)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    names = [n for n, _ in model.named_parameters()]

    # The reference checks itself: central differences of the float64 loss on random coordinates.
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gflat = torch.cat([g.reshape(-1) for g in grads])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for i in torch.randint(0, flat.numel(), (40,), generator=gen).tolist():
        h = 1e-6
        vals = []
        for s in (1, -1):
            f2 = flat.clone()
            f2[i] += s * h
            torch.nn.utils.vector_to_parameters(f2, model.parameters())
            with torch.no_grad():
                vals.append(F.cross_entropy(model(x), labels).item())
        fd = (vals[0] - vals[1]) / (2 * h)
        worst = max(worst, abs(fd - gflat[i].item()) / max(gflat.abs().max().item(), 1e-12))
    torch.nn.utils.vector_to_parameters(flat, model.parameters())
    assert worst < 1e-7, f"{spec['name']}: finite differences vs autograd {worst:.2e}"
    print(f"{spec['name']}: {flat.numel()} parameters, loss {loss.item():.6f}, "
          f"finite differences vs autograd {worst:.1e}")

    return dict(
        spec,
        x=x.reshape(-1).tolist(),
        labels=labels.tolist(),
        state_dict={k: dict(shape=list(v.shape), values=v.reshape(-1).tolist()) for k, v in state.items()},
        logits=logits.detach().reshape(-1).tolist(),
        loss=loss.item(),
        grads={n: g.reshape(-1).tolist() for n, g in zip(names, grads)},
    )


def main():
    out = dict(
        generator="bench/transformer_reference.py",
        torch=torch.__version__,
        cases=[case(spec, seed) for seed, spec in enumerate(CASES)],
    )
    path = os.path.join(os.path.dirname(__file__), "transformer_reference.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
