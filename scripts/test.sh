#!/usr/bin/env bash
# The one command that runs every test: starts PostgreSQL and the Kafka-compatible broker
# (installing tansu once per machine), checks the alert rules and routes (promtool, amtool) and
# the deployment artefacts (Compose, the Helm chart), builds and runs the container image, runs
# the whole workspace's tests, a short load test against the performance budgets and the API fuzz
# check (schemathesis), stops the broker it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The alerting and deployment artefacts (promtool, amtool, docker-compose, helm,
# kubernetes-validate, the chart's policies): seconds, so first.
if [ $# -eq 0 ]; then
  scripts/check-observability.sh
  scripts/check-deploy.sh
fi
scripts/services.sh up
trap 'scripts/services.sh down' EXIT
# The outage test starts a broker of its own from this binary.
TANSU_BIN=$(command -v tansu)
export TANSU_BIN
cargo test --workspace --locked "$@"
# A short load test held to the CI tier of the performance budgets (docs/benchmarks.md): the
# mixed scenario at a modest rate on the binary the tests just built; non-zero on a breach.
if [ $# -eq 0 ]; then
  APP__LOG__FILTER=warn target/debug/answers loadtest --rate 40 --duration 20 \
    --budgets perf/budgets.toml --tier ci --report target/loadtest/ci.json
fi
# The container image, built from the Dockerfile with podman and run (scripts/image.sh).
if [ $# -eq 0 ]; then
  scripts/image.sh target/debug/answers
fi
# The served OpenAPI document against the server, with schemathesis (scripts/api-fuzz.sh).
if [ -z "${SKIP_API_FUZZ:-}" ] && [ $# -eq 0 ]; then
  scripts/api-fuzz.sh
fi
