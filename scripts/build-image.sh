#!/usr/bin/env bash
# Builds the FROM-scratch image with buildah (offline) and runs `acrpull --version` inside it.
# Usage: scripts/build-image.sh [image-name]   (default acrpull:dev)
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-acrpull:dev}
bin=target/x86_64-unknown-linux-musl/release/acrpull
scripts/build-static.sh
command -v buildah >/dev/null || { echo "buildah not found: apt-get install buildah" >&2; exit 1; }

buildah --storage-driver vfs bud --quiet -f Containerfile -t "$image" .
ctr=$(buildah --storage-driver vfs from "$image")
trap 'buildah --storage-driver vfs rm "$ctr" >/dev/null' EXIT
out=$(buildah --storage-driver vfs run --isolation chroot "$ctr" -- /acrpull --version)
echo "image $image runs: $out"
case "$out" in acrpull*) ;; *) echo "error: unexpected --version output" >&2; exit 1 ;; esac
user=$(buildah --storage-driver vfs inspect --format '{{.OCIv1.Config.User}}' "$image")
[ "$user" = "65532:65532" ] || { echo "error: image user is '$user', want 65532:65532" >&2; exit 1; }
echo "image user: $user"
