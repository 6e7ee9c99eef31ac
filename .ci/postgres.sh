#!/usr/bin/env bash
# Starts a throw-away PostgreSQL server on loopback for the multi-worker tests and prints its URL.
# Usage: source .ci/postgres.sh   (exports BCAUTO_TEST_POSTGRES_URL)
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
PG_BIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
PG_DIR=$(mktemp -d /tmp/bcauto-pg.XXXXXX)
chown postgres "$PG_DIR"
PG_PORT=${PG_PORT:-55432}
su postgres -c "$PG_BIN/initdb -D $PG_DIR/data -A trust -U postgres" >/dev/null
su postgres -c "$PG_BIN/pg_ctl -D $PG_DIR/data -o '-c listen_addresses=127.0.0.1 -p $PG_PORT -c max_connections=200 -k $PG_DIR' -l $PG_DIR/log -w start" >/dev/null
for db in optuna mlflow; do
  su postgres -c "$PG_BIN/createdb -h 127.0.0.1 -p $PG_PORT $db"
done
export BCAUTO_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT"
echo "PostgreSQL for tests at $BCAUTO_TEST_POSTGRES_URL (data in $PG_DIR)"
