#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 600) with libFuzzer, one after the other.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      (all targets when none are named)
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The corpus of each target is
# fuzz/corpus/<target>/ (the committed seeds are seed-*; what libFuzzer adds there is git-ignored); crashes,
# timeouts and out-of-memory inputs go to fuzz/artifacts/<target>/, logs to fuzz/logs/<target>.log.
# -rss_limit_mb (RSS_LIMIT_MB, default 2048) makes an oversized allocation a crash, -timeout (TIMEOUT_S, default 10)
# a hang one; fuzz/dicts/<target>.dict, where present, is the target's dictionary. SANITIZER (default none: the
# parsers are safe Rust, the targets look for panics, aborts, hangs and huge allocations; `address` adds ASan, a
# much slower build) is passed to cargo fuzz. Set CARGO_TARGET_DIR to share one build directory. Exit status 1 if
# any target found a crash.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(npy idx cifar checkpoint config grid)
sanitizer=${SANITIZER:-none}
cargo +nightly fuzz build --sanitizer "$sanitizer" || exit 2
triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
bin_dir=${CARGO_TARGET_DIR:-$here/target}/$triple/release
mkdir -p logs
status=0
printf '%-11s %8s %12s %8s %8s %s\n' target seconds executions exec/s corpus result
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dict=()
    [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
    "$bin_dir/$t" "${dict[@]}" -max_total_time="$seconds" -rss_limit_mb="${RSS_LIMIT_MB:-2048}" -timeout="${TIMEOUT_S:-10}" \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "corpus/$t" > "logs/$t.log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "logs/$t.log")
    size=$(find "corpus/$t" -type f | wc -l)
    if [ $rc -eq 0 ]; then
        result=ok
    else
        result="CRASH (exit $rc): $(ls -t "artifacts/$t" | head -1)"
        status=1
    fi
    printf '%-11s %8s %12s %8s %8s %s\n' "$t" "$seconds" "${runs:-?}" "${rate:-?}" "$size" "$result"
done
exit $status
