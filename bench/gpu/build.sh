#!/usr/bin/env bash
# Builds the samlab binary for bench/gpu/bench.py (release, --features vulkan, stripped) and gathers the Vulkan
# loader it loads at run time into bench/gpu/dist/ (git-ignored): dist/samlab, dist/lib/libvulkan.so.1.
# The GPU machine brings its own driver (and the driver's Vulkan ICD); nothing else is needed there.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p samlab-cli --features "${SAMLAB_GPU_FEATURES:-vulkan}"
dist=bench/gpu/dist
rm -rf "$dist"
mkdir -p "$dist/lib"
cp "$CARGO_TARGET_DIR/release/samlab" "$dist/samlab"
strip "$dist/samlab"
loader=$(ldconfig -p | awk '/libvulkan\.so\.1 .*x86-64/ {print $NF; exit}')
if [ -z "$loader" ]; then
    echo "no libvulkan.so.1 here: apt-get install libvulkan1" >&2
    exit 1
fi
cp -L "$loader" "$dist/lib/libvulkan.so.1"
size=$(du -sb "$dist" | cut -f1)
echo "$dist: $((size / 1024 / 1024)) MiB ($size bytes); newest glibc symbol the binary needs:" \
    "$(objdump -T "$dist/samlab" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
if [ "$size" -gt $((64 * 1024 * 1024)) ]; then
    echo "over the 64 MiB a GPU machine accepts" >&2
    exit 1
fi
