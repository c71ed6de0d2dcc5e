#!/usr/bin/env bash
# Builds the container image from ./Dockerfile and checks it by running it (docs/deployment.md,
# "Container image"): `answers --version`, a non-root user, `serve` on a read-only root
# filesystem answering /health/live and `answers probe ready` inside the container, and a
# SIGTERM that ends in exit code 0 after the drain.
#
# No registry is reachable here, so the Dockerfile's two bases are stood in for: the runtime
# base is a Debian bookworm root filesystem made by debootstrap from Debian's packages and
# imported into podman once per machine; the compile stage (rust image) is replaced by
# BINARY=prebuilt with the binary given (default target/debug/answers, which the tests build).
# Where a registry is reachable, `docker build .` or `podman build .` builds it all.
#
# Usage: scripts/image.sh [path/to/answers]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[image] %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

binary=${1:-target/debug/answers}
[ -x "$binary" ] || { log "building $binary"; cargo build --locked -q -p answers; }

missing=()
for tool in podman buildah runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends podman buildah runc debootstrap uidmap \
    fuse-overlayfs slirp4netns >/dev/null
fi

# This machine's cgroups are hybrid (v1 controllers) and its hard limits lower than podman's
# defaults: runc with cgroupfs, and explicit limits.
podman=(podman --runtime runc --cgroup-manager cgroupfs)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
base=localhost/debian:bookworm-slim
image=localhost/answers:check

if ! "${podman[@]}" image exists "$base"; then
  cache=${XDG_CACHE_HOME:-$HOME/.cache}/answers-image
  rootfs="$cache/rootfs"
  if [ ! -x "$rootfs/usr/bin/apt-get" ]; then
    log "making the runtime base: debootstrap bookworm (minbase), once per machine"
    rm -rf "$rootfs"
    mkdir -p "$cache"
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  fi
  log "importing the base as $base"
  tar -C "$rootfs" -c . | "${podman[@]}" import - "$base" >/dev/null
fi

context=$(mktemp -d)
name="answers-image-check-$$"
db="answers_image_check_$$"
cleanup() {
  "${podman[@]}" rm -f "$name" >/dev/null 2>&1 || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$context"
}
trap cleanup EXIT
cp Dockerfile "$context/"
cp "$binary" "$context/answers"

log "building $image"
"${podman[@]}" build --quiet --no-cache --format docker --isolation chroot --network host "${limits[@]}" \
  --build-arg BINARY=prebuilt --build-arg RUNTIME_IMAGE="$base" --target runtime \
  -t "$image" "$context" >/dev/null

version=$("${podman[@]}" run --rm --no-healthcheck "${limits[@]}" "$image" --version)
expected="answers $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
[ "$version" = "$expected" ] || fail "--version printed '$version', expected '$expected'"
log "$version"

user=$("${podman[@]}" run --rm --no-healthcheck "${limits[@]}" --entrypoint id "$image" -u)
[ "$user" != 0 ] || fail "the image runs as root"
healthcheck=$("${podman[@]}" inspect "$image" --format '{{json .HealthCheck}}')
grep -q '"probe"' <<<"$healthcheck" || fail "no health check in the image: $healthcheck"
log "runs as uid $user, health check: answers probe live"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${podman[@]}" run -d --no-healthcheck --name "$name" --network host --read-only "${limits[@]}" \
  -e APP__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$db" \
  -e APP__SERVER__PORT="$port" -e APP__KAFKA__ENABLED=false -e APP__EMBEDDED__ENABLED=true \
  -e APP__SHUTDOWN__DRAIN_MS=1000 "$image" >/dev/null
live=""
for _ in $(seq 1 60); do
  live=$(curl -sf "http://127.0.0.1:$port/health/live" || true)
  [ -n "$live" ] && break
  sleep 1
done
[ "$live" = '{"status":"ok"}' ] || fail "/health/live: '$live'; logs: $("${podman[@]}" logs "$name" 2>&1 | tail -5)"
"${podman[@]}" exec "$name" answers probe ready || fail "answers probe ready failed inside the container"
log "serving on a read-only root filesystem: /health/live and probe ready answer"

"${podman[@]}" stop -t 30 "$name" >/dev/null
code=$("${podman[@]}" inspect "$name" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
"${podman[@]}" logs "$name" 2>&1 | grep -q '"message":"stopped"' || fail "no graceful stop in the logs"
log "SIGTERM: drained and stopped, exit code 0"
