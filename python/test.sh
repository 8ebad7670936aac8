#!/usr/bin/env bash
# Builds the samlab Python package (release wheel) and runs its checks: ruff, then pytest.
#
# The virtual environment (SAMLAB_VENV, default ~/.cache/samlab-venv) is created on first use and reused; packages
# are installed only when missing (torch==2.9.0 included, for samlab.torch). The Rust build goes to
# SAMLAB_PY_TARGET_DIR (default ~/.cache/samlab-py-target).
# Needs python3 (with venv) and cargo. Works from any directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SAMLAB_VENV:-$HOME/.cache/samlab-venv}"
# samlab.runs runs deep runs, sweeps and reproduce through the samlab binary (SAMLAB_BIN, else the PATH): its tests
# use the debug binary that the README's `cargo test --workspace` builds, in the target directory that command used
# (CARGO_TARGET_DIR as this script inherits it, as .ci/run sets it, else the workspace's target/), and skip without.
if [ -z "${SAMLAB_BIN:-}" ]; then
    bin="${CARGO_TARGET_DIR:-$here/../target}/debug/samlab"
    if [ -x "$bin" ]; then
        SAMLAB_BIN="$(cd "$(dirname "$bin")" && pwd)/samlab"
        export SAMLAB_BIN
    fi
fi
export CARGO_TARGET_DIR="${SAMLAB_PY_TARGET_DIR:-$HOME/.cache/samlab-py-target}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
missing=()
for pkg in maturin numpy pytest ruff; do
    "$py" -m pip show --quiet "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    "$py" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
fi
# samlab.torch's tests need PyTorch: about 7 GB from PyPI with its CUDA libraries, which it runs without (CPU).
# Installed once into the cached environment, skipped whenever torch imports.
if ! "$py" -c "import torch" >/dev/null 2>&1; then
    "$py" -m pip install --quiet --disable-pip-version-check "torch==2.9.0"
fi

wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
"$venv/bin/maturin" build --release --quiet --manifest-path "$here/Cargo.toml" --out "$wheels" --interpreter "$py"
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/*.whl

"$venv/bin/ruff" check "$here"
"$venv/bin/ruff" format --check "$here"
# From the tests' directory, so that `import samlab` finds the installed package, not the source tree.
cd "$here/tests"
"$py" -m pytest -q "$here/tests"
