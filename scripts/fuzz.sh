#!/usr/bin/env bash
# Fuzzes every target in fuzz/ for a few seconds each (default 20): libFuzzer via cargo-fuzz on
# the nightly toolchain, starting from the committed corpus in fuzz/corpus/<target>/. New inputs go
# to a scratch copy, so the committed corpus only grows by hand. Without nightly it skips (exit 0):
# the stable `cargo test` already replays every corpus file (tests/e2e/fuzz_corpus.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: $0 [seconds-per-target]" >&2
    exit 2
    ;;
esac

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: SKIPPED - no nightly toolchain installed (cargo-fuzz needs one; 'rustup toolchain install nightly')"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets=$(cargo +nightly fuzz list --fuzz-dir fuzz)
scratch="fuzz/target/corpus-scratch"
failed=()
for t in $targets; do
    echo "=== fuzz $t (${seconds}s)"
    rm -rf "$scratch/$t"
    mkdir -p "$scratch/$t"
    # The first corpus dir receives new inputs; the committed one is only read.
    if ! cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
echo "fuzz: all targets ran ${seconds}s without a crash"
