#!/usr/bin/env bash
# Starts (or checks) the services the tests and a local run need. Idempotent.
#   scripts/services.sh up     PostgreSQL on 127.0.0.1:5432 (started when down)
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}

log() { printf '[services] %s\n' "$*" >&2; }

postgres_up() {
  if pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; then
    return 0
  fi
  log "PostgreSQL is not answering on $PGHOST:$PGPORT; starting it"
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "PostgreSQL is not installed; installing it from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    local conf
    conf=$(ls -d /etc/postgresql/*/main | head -1)
    # Local development and CI only: trust on loopback, as the documented machine has it.
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$conf/pg_hba.conf"
    sed -i -E 's/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$conf/pg_hba.conf"
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do
    if pg_isready -q -h "$PGHOST" -p "$PGPORT"; then
      log "PostgreSQL is up"
      return 0
    fi
    sleep 1
  done
  log "PostgreSQL did not come up on $PGHOST:$PGPORT"
  return 1
}

# Test databases are named answers_test_*; drop the ones earlier runs left behind.
drop_test_databases() {
  local dbs
  dbs=$(psql -h "$PGHOST" -p "$PGPORT" -U postgres -Atc \
    "SELECT datname FROM pg_database WHERE datname LIKE 'answers_test_%' OR datname LIKE 'answers_bench_%'" 2>/dev/null || true)
  for db in $dbs; do
    psql -h "$PGHOST" -p "$PGPORT" -U postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
}

case "${1:-up}" in
  up)
    postgres_up
    drop_test_databases
    ;;
  *)
    echo "usage: $0 up" >&2
    exit 2
    ;;
esac
