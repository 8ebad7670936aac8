#!/usr/bin/env python3
"""torch.optim.AdamW on fixed gradients, float64: the pinned numbers of crates/samlab-deep/tests/optim.rs.

Three steps from w0 with the gradients G[t] (not the gradient of any loss: the update rule alone is compared),
lr 0.01, betas (0.8, 0.95), eps 1e-3 (large enough to matter), weight decay 0.1. Prints the weights after each
step. Run with ~/.cache/samlab-venv/bin/python."""
import torch

W0 = [0.5, -1.25, 2.0, 0.0]
G = [[0.1, -2.0, 0.003, 1.0], [-0.3, 1.5, 0.002, 0.0], [0.2, 0.25, -0.004, -1.0]]

w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
opt = torch.optim.AdamW([w], lr=0.01, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.1)
for g in G:
    w.grad = torch.tensor(g, dtype=torch.float64)
    opt.step()
    print("[" + ", ".join(repr(x) for x in w.detach().tolist()) + "],")
