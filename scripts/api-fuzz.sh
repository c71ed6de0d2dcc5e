#!/usr/bin/env bash
# Property-based API check: schemathesis (PyPI) against the served OpenAPI document. Starts the
# service on a fresh database (no broker: the commands and their problems are what is checked),
# creates a tenant, and runs every check: no 5xx, every schema-valid request accepted, every
# response (status, content type, headers, body) as documented.
# Two phases are left out. Coverage sends the same boundary Idempotency-Key to different
# requests before any hook can make the key unique, and the server rightly refuses the reuse.
# Stateful guesses links from field names (a command's `id` fed to every `{id}`, a tenant id
# into a conversation's UUID), which the document does not claim.
# scripts/schemathesis.toml lists the rules that span parameters.
#   scripts/api-fuzz.sh [extra schemathesis options]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# schemathesis from PyPI, once per machine; run through python3 so a fresh install needs no
# shim or PATH change.
if ! python3 -c 'import schemathesis.cli' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4.32,<5'
fi
schemathesis() { python3 -c 'import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())' "$@"; }
cargo build --quiet -p answers
# A free port (the kernel picks one), unless FUZZ_PORT says which.
PORT=${FUZZ_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
DB="answers_test_fuzz_$$"
export APP__SERVER__PORT=$PORT
export APP__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$DB"
export APP__KAFKA__ENABLED=false
export APP__LOG__FILTER=warn
# Real rate limits, generous enough for the fuzzer's pace, on keys of this run only.
export APP__RATE_LIMITS__KEY_PREFIX="fuzz-$DB:"
export APP__RATE_LIMITS__PER_IP_PER_MINUTE=100000 APP__RATE_LIMITS__PER_USER_PER_MINUTE=100000
export APP__RATE_LIMITS__PER_TENANT_PER_MINUTE=100000 APP__RATE_LIMITS__SIGN_IN_PER_IP_PER_MINUTE=100000
export APP__RATE_LIMITS__QUESTIONS_PER_USER_PER_MINUTE=100000 APP__RATE_LIMITS__QUESTIONS_PER_TENANT_PER_MINUTE=100000
APP__PLATFORM__OPERATOR_TOKEN="fuzz-platform-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export APP__PLATFORM__OPERATOR_TOKEN
target/debug/answers serve >target/api-fuzz.log 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
TOKEN=$(target/debug/answers token --tenant fuzz --role admin --user fuzzer)
curl -fs -X POST "http://127.0.0.1:$PORT/v1/tenant" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -d '{"name":"Fuzz"}' >/dev/null
SCHEMATHESIS_HOOKS=api-fuzz-hooks PYTHONPATH="$PWD/scripts" schemathesis \
  --config-file scripts/schemathesis.toml run "http://127.0.0.1:$PORT/openapi.json" \
  -H "Authorization: Bearer $TOKEN" \
  --max-examples "${FUZZ_EXAMPLES:-25}" \
  --seed 1 \
  --workers 1 \
  --phases examples,fuzzing \
  "$@"
