#!/usr/bin/env bash
# Builds the static, stripped acrpull binary for x86_64-unknown-linux-musl and checks its size budget.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
# 2.5 MiB. Beside our own code, the bulk is rustls, ring (its P-256 table alone is 148 KiB), std
# (165 KiB of it the panic backtrace printer, which stable Rust cannot leave out) and the 300 KiB of
# unwind tables that rustc emits even with panic=abort.
budget=$((5 * 1024 * 1024 / 2))

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "installing the $target target" >&2
    rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
    echo "musl-gcc not found: install musl-tools (apt-get install musl-tools)" >&2
    exit 1
fi

# Relative relocations packed as DT_RELR (-z pack-relative-relocs): the static-PIE binary keeps its
# randomised load address, and the 87 KiB of .rela.dyn shrink to 1 KiB. musl applies DT_RELR at
# startup since 1.2.4 (Rust's bundled musl is 1.2.5); the --version run below would crash otherwise.
# Passed to the final link only (`cargo rustc`), so the dependencies' build cache is shared.
CC_x86_64_unknown_linux_musl=musl-gcc cargo rustc --release --locked --target "$target" --bin acrpull \
    -- -C link-arg=-Wl,-z,pack-relative-relocs
bin="target/$target/release/acrpull"
size=$(stat -c %s "$bin")
awk -v b="$bin" -v s="$size" -v max="$budget" 'BEGIN { printf "binary: %s\nsize: %d bytes (%.2f MiB), budget %d bytes (%.2f MiB)\n", b, s, s / 1048576, max, max / 1048576 }'
if command -v file >/dev/null && file "$bin" | grep -q "dynamically linked"; then
    echo "error: $bin is dynamically linked" >&2
    exit 1
fi
if ! "$bin" --version >/dev/null; then
    echo "error: $bin does not run" >&2
    exit 1
fi
if [ "$size" -gt "$budget" ]; then
    echo "error: binary is over its size budget" >&2
    exit 1
fi
