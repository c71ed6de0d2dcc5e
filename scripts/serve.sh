#!/usr/bin/env bash
# The one command that runs the service locally: starts PostgreSQL and the broker when they are
# down, then serves on http://127.0.0.1:8080 with the relay and projections inside (migrations
# run at start-up). Extra arguments go to `answers`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh up
exec cargo run --release -p answers -- "$@"
