#!/usr/bin/env python3
"""Writes the seed corpora of the binary-format fuzz targets (npy, idx, cifar): tiny valid files of each kind.

The checkpoint and config seeds come from the Rust tests (see make_seeds.sh). Standard library only.
"""
import gzip
import os
import struct
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(root, target), exist_ok=True)
    with open(os.path.join(root, target, "seed-" + name), "wb") as f:
        f.write(data)


def npy(shape, values, version=1, fortran=False, descr="<f8"):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    order = "True" if fortran else "False"
    head = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (descr, order, dims)
    prefix = 10 if version == 1 else 12
    head += " " * ((64 - (prefix + len(head) + 1) % 64) % 64) + "\n"
    out = b"\x93NUMPY" + bytes([version, 0])
    out += struct.pack("<H" if version == 1 else "<I", len(head)) + head.encode("latin1")
    return out + struct.pack("<%dd" % len(values), *values)


put("npy", "2d-c.npy", npy((2, 3), [0.5, -1.0, 2.0, 0.0, 1e-300, 3.25]))
put("npy", "2d-fortran.npy", npy((3, 2), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], fortran=True))
put("npy", "1d.npy", npy((4,), [1.0, -2.0, 3.0, -4.0]))
put("npy", "1d-v2.npy", npy((2,), [7.0, 8.0], version=2))
put("npy", "empty.npy", npy((0, 3), []))
put("npy", "big-endian.npy", npy((1,), [1.0], descr=">f8")[:-8] + struct.pack(">d", 1.0))


def idx_pair(n, rows, cols, seed):
    images = struct.pack(">IIII", 2051, n, rows, cols) + bytes((seed + i * 37) % 256 for i in range(n * rows * cols))
    labels = struct.pack(">II", 2049, n) + bytes((seed + i) % 10 for i in range(n))
    return images, labels


def idx_input(gz, images, labels):
    """The idx target's input: mode byte (bit 0: gzip), little-endian u16 length of the image file, the files."""
    if gz:
        images, labels = gzip.compress(images, mtime=0), gzip.compress(labels, mtime=0)
    return bytes([1 if gz else 0]) + struct.pack("<H", len(images)) + images + labels


put("idx", "plain-3x4x4", idx_input(False, *idx_pair(3, 4, 4, 1)))
put("idx", "gzip-2x3x2", idx_input(True, *idx_pair(2, 3, 2, 5)))
images, labels = idx_pair(2, 2, 2, 9)
# Two gzip members (files joined with `cat`) are one stream.
half = len(images) // 2
joined = gzip.compress(images[:half], mtime=0) + gzip.compress(images[half:], mtime=0)
put("idx", "gzip-two-members", bytes([1]) + struct.pack("<H", len(joined)) + joined + gzip.compress(labels, mtime=0))


def cifar(hundred, n):
    out = bytes([1 if hundred else 0])
    for r in range(n):
        label = bytes([r % 20, (r * 7) % 100]) if hundred else bytes([r % 10])
        out += label + bytes((r * 31 + i) % 256 for i in range(3072))
    return out


put("cifar", "cifar10-2", cifar(False, 2))
put("cifar", "cifar100-1", cifar(True, 1))
print("seeds written under", root, file=sys.stderr)
