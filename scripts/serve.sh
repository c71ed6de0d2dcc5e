#!/usr/bin/env bash
# The one command that runs the service locally: starts PostgreSQL and Redis when they are down,
# then serves on http://127.0.0.1:8080 (migrations run at start-up). Extra arguments go to
# `answers`.
#   ANSWERS_TRANSPORT=embedded (default)  projections follow the event store inside the service:
#                                         no broker to install or run (docs/streaming.md)
#   ANSWERS_TRANSPORT=kafka               the relay and the projections over the Kafka-compatible
#                                         broker (tansu, installed once per machine: ~13 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${ANSWERS_TRANSPORT:-embedded}" in
  embedded)
    scripts/services.sh up --no-broker
    export APP__KAFKA__ENABLED=false APP__EMBEDDED__ENABLED=true
    ;;
  kafka)
    scripts/services.sh up
    export APP__KAFKA__ENABLED=true APP__EMBEDDED__ENABLED=false
    ;;
  *)
    echo "ANSWERS_TRANSPORT must be embedded or kafka" >&2
    exit 2
    ;;
esac
exec cargo run --release -p answers -- "$@"
