"""Extract the shipped Fashion-MNIST subset from Debian's `dataset-fashion-mnist` package.

Usage: python3 extract.py [SOURCE_DIR]   (default /usr/share/datasets/fashion-mnist)
Writes the first 10,000 training and the first 2,000 test images and labels, as gzipped IDX files with the
original headers (counts adjusted), into this script's directory. Output is byte-for-byte reproducible (gzip mtime 0).
"""
import gzip
import os
import struct
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
DST = os.path.dirname(os.path.abspath(__file__))
PARTS = [("train", 10_000), ("t10k", 2_000)]

for prefix, n in PARTS:
    for kind, magic, item in (("images-idx3-ubyte", 2051, 28 * 28), ("labels-idx1-ubyte", 2049, 1)):
        name = f"{prefix}-{kind}.gz"
        with gzip.open(os.path.join(SRC, name), "rb") as f:
            raw = f.read()
        got_magic, total = struct.unpack(">II", raw[:8])
        assert got_magic == magic, (name, got_magic)
        header = 16 if magic == 2051 else 8
        assert total >= n, (name, total)
        out = bytearray(raw[:header])
        out[4:8] = struct.pack(">I", n)
        out += raw[header:header + n * item]
        with open(os.path.join(DST, name), "wb") as f:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as g:
                g.write(bytes(out))
        print(name, n, len(out))
