#!/usr/bin/env bash
# Builds the static, stripped acrpull binary for x86_64-unknown-linux-musl and checks its size budget.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
budget=$((4 * 1024 * 1024))

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "installing the $target target" >&2
    rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
    echo "musl-gcc not found: install musl-tools (apt-get install musl-tools)" >&2
    exit 1
fi

CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$target" --bin acrpull
bin="target/$target/release/acrpull"
size=$(stat -c %s "$bin")
awk -v b="$bin" -v s="$size" -v max="$budget" 'BEGIN { printf "binary: %s\nsize: %d bytes (%.2f MiB), budget %d bytes (4 MiB)\n", b, s, s / 1048576, max }'
if command -v file >/dev/null && file "$bin" | grep -q "dynamically linked"; then
    echo "error: $bin is dynamically linked" >&2
    exit 1
fi
if [ "$size" -gt "$budget" ]; then
    echo "error: binary is over its size budget" >&2
    exit 1
fi
