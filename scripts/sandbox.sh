#!/usr/bin/env bash
# Runs acrpull against the bundled local test cluster: an emulated Kubernetes API server and fake
# Azure endpoints on 127.0.0.1, with the example bindings from manifests/examples applied.
# Extra arguments are passed to acrpull. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin acrpull
cargo build --quiet -p acrpull-testkit --bin sandbox
exec target/debug/sandbox target/debug/acrpull "$@"
