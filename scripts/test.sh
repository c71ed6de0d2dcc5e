#!/usr/bin/env bash
# The one command that runs every test: starts what the tests need, then runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh up
cargo test --workspace --locked "$@"
