#!/usr/bin/env bash
# Regenerates the committed seed corpora under fuzz/corpus/<target>/seed-*: the binary formats by make_seeds.py,
# checkpoints and run configs by the ignored `write_fuzz_seeds` tests of samlab-deep (so they are what samlab
# itself writes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/make_seeds.py"
cd "$here/.."
SAMLAB_FUZZ_SEEDS="$here/corpus/checkpoint" cargo test --workspace --test checkpoint -- --ignored --exact write_fuzz_seeds
SAMLAB_FUZZ_SEEDS="$here/corpus/config" cargo test --workspace --test run -- --ignored --exact write_fuzz_seeds
