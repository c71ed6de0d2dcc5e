#!/usr/bin/env bash
# Backs up the platform's database (docs/disaster-recovery.md): a consistent pg_dump in the
# custom format (one snapshot, so the event store, the read models, the checkpoints and the
# identity tables agree), then the file's checksum beside it. The event store is the source of
# truth; read models could be rebuilt from it, but are kept so that a restore serves at once.
#
# Usage: scripts/backup.sh DATABASE_URL OUT_FILE
# For point-in-time recovery use a base backup and WAL archiving instead (same page).
set -euo pipefail
url=${1:?the database URL to back up}
out=${2:?where to write the backup}
# No owner: the login that restores owns what it restores. The grants to answers_api and
# answers_system (row-level security's roles) are kept; those roles are cluster-wide.
pg_dump --format=custom --compress=6 --no-owner --file="$out" "$url"
sha256sum "$out" | awk '{print $1}' >"$out.sha256"
events=$(psql "$url" -Atqc "SELECT count(*) FROM events")
printf '%s\n' "$events" >"$out.events"
echo "backed up $events events to $out ($(du -h "$out" | cut -f1))" >&2
