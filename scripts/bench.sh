#!/usr/bin/env bash
# Builds acrpull and the scale benchmark in release mode and runs the benchmark.
#
# Usage: scripts/bench.sh [extra bench flags]
#   BENCH_SIZES=0,1000,10000   binding counts (default 0,1000,10000,50000; at the default
#                              --kube-api-qps 50 every write is rate-limited, so 10 000 takes ~14 min
#                              and 50 000 ~70 min; `--qps 0` lifts the limit: 10 000 in ~20 s,
#                              50 000 in ~70 s on 2 cores)
#   BENCH_UNRELATED=50000      unrelated Secrets + ServiceAccounts in the extra scenario (0 skips it)
#   BENCH_REFRESH=1            run the refresh-cycle scenario (0 skips it)
#   BENCH_STATIC=1             measure the shipped static musl binary (scripts/build-static.sh) instead
#                              of the host's glibc build; allocators differ, so RSS figures differ
# Other flags (see `bench --help`) pass through, e.g. --qps 100 --burst 200 --identities 20.
# Tables go to stdout, progress to stderr.
set -euo pipefail

cd "$(dirname "$0")/.."

sizes="${BENCH_SIZES:-0,1000,10000,50000}"
unrelated="${BENCH_UNRELATED:-50000}"
refresh="${BENCH_REFRESH:-1}"

if [ "${BENCH_STATIC:-0}" = "1" ]; then
    echo "building acrpull (static musl release)..." >&2
    scripts/build-static.sh >&2
    acrpull=target/x86_64-unknown-linux-musl/release/acrpull
else
    echo "building acrpull (release)..." >&2
    cargo build --release --bin acrpull
    acrpull=target/release/acrpull
fi
echo "building the benchmark (release)..." >&2
cargo build --release -p acrpull-testkit --bin bench

flags=(--acrpull "$acrpull" --sizes "$sizes" --unrelated "$unrelated")
if [ "$refresh" != "0" ]; then
    flags+=(--refresh)
fi

exec target/release/bench "${flags[@]}" "$@"
