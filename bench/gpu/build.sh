#!/usr/bin/env bash
# Builds the samlab binaries for bench/gpu/bench.py and gathers the Vulkan loader they load at run time into
# bench/gpu/dist/ (git-ignored):
#   dist/samlab.xz          --features wgpu: WGSL shaders, translated to SPIR-V by wgpu (naga)
#   dist/samlab-vulkan.xz   --features vulkan: CubeCL's own SPIR-V (bf16 needs it: WGSL has no bf16)
#   dist/lib/libvulkan.so.1
# Release builds, stripped and xz-compressed: one stripped binary is 85 MB, over the 64 MiB that travels to a GPU
# machine; both compressed are 37 MB. bench.py unpacks them (Python's lzma) on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
dist=bench/gpu/dist
rm -rf "$dist"
mkdir -p "$dist/lib"
newest_glibc=
for variant in wgpu:samlab vulkan:samlab-vulkan; do
    features=${variant%%:*}
    name=${variant#*:}
    cargo build --release -p samlab-cli --features "$features"
    cp "$CARGO_TARGET_DIR/release/samlab" "$dist/$name"
    strip "$dist/$name"
    newest_glibc=$(objdump -T "$dist/$name" | grep -o 'GLIBC_[0-9.]*' | cat - <(echo "$newest_glibc") | sort -uV | tail -1)
    xz -T2 -6 "$dist/$name"
done
loader=$(ldconfig -p | awk '/libvulkan\.so\.1 .*x86-64/ {print $NF; exit}')
if [ -z "$loader" ]; then
    echo "no libvulkan.so.1 here: apt-get install libvulkan1" >&2
    exit 1
fi
cp -L "$loader" "$dist/lib/libvulkan.so.1"
size=$(du -sb "$dist" | cut -f1)
echo "$dist: $((size / 1024 / 1024)) MiB ($size bytes); newest glibc symbol the binaries need: $newest_glibc"
if [ "$size" -gt $((64 * 1024 * 1024)) ]; then
    echo "over the 64 MiB a GPU machine accepts" >&2
    exit 1
fi
