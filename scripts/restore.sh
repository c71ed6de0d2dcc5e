#!/usr/bin/env bash
# Restores a backup made by scripts/backup.sh into a NEW database (docs/disaster-recovery.md):
# checks the file's checksum, creates the database, restores, checks the event count against
# the one recorded at backup time. Never restores over an existing database.
#
# Usage: scripts/restore.sh BACKUP_FILE DATABASE_URL   (the database must not exist yet)
set -euo pipefail
file=${1:?the backup file}
url=${2:?the database URL to restore into}
if [ -f "$file.sha256" ] && [ "$(sha256sum "$file" | awk '{print $1}')" != "$(cat "$file.sha256")" ]; then
  echo "the backup's checksum does not match $file.sha256: refusing to restore" >&2
  exit 1
fi
db=${url##*/}
db=${db%%\?*}
server=${url%/*}
if [ -n "$(psql "$server/postgres" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
  echo "database $db exists: restore into a new one, then switch the service to it" >&2
  exit 1
fi
psql "$server/postgres" -qc "CREATE DATABASE \"$db\""
# The migrations' roles (answers_api, answers_system) are cluster-wide: they exist on a server
# that ran the migrations; on a new server, run `answers migrate` first against an empty
# database (it creates them), or restore the roles from `pg_dumpall --roles-only`.
pg_restore --exit-on-error --no-owner --dbname="$url" "$file"
events=$(psql "$url" -Atqc "SELECT count(*) FROM events")
if [ -f "$file.events" ] && [ "$events" != "$(cat "$file.events")" ]; then
  echo "restored $events events, the backup recorded $(cat "$file.events")" >&2
  exit 1
fi
# The commit order of the store is (transaction_id, position), and transaction ids are the
# server's: on a server whose transaction counter is behind the restored events', new events
# would sort before old ones and the relay and projections would skip them. Refuse to declare
# such a restore usable (docs/disaster-recovery.md says how to advance the counter).
behind=$(psql "$url" -Atqc "SELECT coalesce(max(transaction_id) >= pg_current_xact_id(), false) FROM events")
if [ "$behind" = t ]; then
  echo "this server's transaction counter is behind the restored events: advance it before" \
    "serving (docs/disaster-recovery.md, 'Restoring on a new server')" >&2
  exit 1
fi
echo "restored $events events into $db" >&2
