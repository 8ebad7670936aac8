"""Loads a samlab checkpoint (SafeTensors, version 2) into the PyTorch twin of its pre-activation ResNet
(bench/torch_models.py, the authors' module names) and checks that PyTorch's logits match samlab's.

    cargo build --release --example checkpoint_logits
    target/release/examples/checkpoint_logits RUN_DIR logits.json 8
    python3 bench/checkpoint_to_torch.py RUN_DIR/checkpoint/last.ckpt logits.json

The first command writes samlab's logits on the run's first N test images, with the images themselves
(crates/samlab-deep/examples/checkpoint_logits.rs); this script feeds the same images to PyTorch in eval mode.
It also checks the checkpoint's metadata and recomputes its payload checksum (every tensor's bytes, in byte order
of the names: SHA-256 in version 2, XXH3-128 in version 3). The state_dict is the file's tensors without the `optimizer.` ones; it loads with strict=True
(samlab writes no `num_batches_tracked`; PyTorch's BatchNorm fills in a missing one itself). Needs torch,
safetensors, numpy (and xxhash for version-3 checkpoints); not part of CI. Exit status 0 if the largest logit difference is within --tol of the largest logit."""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("logits", help="JSON from the checkpoint_logits example")
    ap.add_argument("--tol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    args = ap.parse_args()

    with safe_open(args.checkpoint, framework="pt") as f:
        meta = f.metadata()
    assert meta.get("format") == "samlab-checkpoint" and meta.get("version") in ("2", "3"), meta
    spec = json.loads(meta["model"])
    tensors = load_file(args.checkpoint)
    if meta["version"] == "2":
        digest, key = hashlib.sha256(), "payload_sha256"
    else:  # version 3: XXH3-128 (pip install xxhash)
        import xxhash

        digest, key = xxhash.xxh3_128(), "payload_xxh3_128"
    for name in sorted(tensors, key=lambda n: n.encode()):
        digest.update(tensors[name].contiguous().numpy().tobytes())
    assert digest.hexdigest() == meta[key], "payload checksum mismatch"

    builders = {"preact_resnet18": torch_models.preact_resnet18, "preact_resnet34": torch_models.preact_resnet34,
                "wrn28": torch_models.wrn28}
    if spec["arch"] not in builders or spec["norm"] != "batch":
        sys.exit(f"this script handles BatchNorm {sorted(builders)}, not {spec['arch']} with {spec['norm']} norm")
    model = builders[spec["arch"]](spec["width"], classes=spec["classes"], in_channels=spec["input"][0])
    state = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    model.load_state_dict(state, strict=True)
    model.eval()

    with open(args.logits) as f:
        ref = json.load(f)
    n, c, h, w = ref["shape"]
    x = torch.from_numpy(np.asarray(ref["input"], dtype=np.float32).reshape(n, c, h, w))
    want = np.asarray(ref["logits"], dtype=np.float32).reshape(n, -1)
    with torch.no_grad():
        got = model(x).numpy()
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    agree = int((got.argmax(1) == want.argmax(1)).sum())
    print(json.dumps({"model": spec, "tensors": len(tensors), "state_dict_keys": len(state), "examples": n,
                      "max_abs_logit": scale, "max_abs_diff": diff, "rel_diff": diff / max(scale, 1e-30),
                      "argmax_agree": agree, "torch": torch.__version__}))
    sys.exit(0 if diff <= args.tol * max(scale, 1.0) else 1)


if __name__ == "__main__":
    main()
