#!/usr/bin/env bash
# The real backend the metadata work builds on, started the way its suite will start it:
# PostgreSQL (Debian's server). This checks the server, not Berth, so it is not part of
# `make test`; run it by hand after `apt-get install postgresql`. (MinIO: tests/s3.sh.)
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/tools.sh"
set +e

require_commands psql runuser
WORK=$(mktemp -d)
on_exit "rm -rf $WORK"

echo "== PostgreSQL"
pg_round_trip() {
  "${PSQL[@]}" -c "CREATE TABLE tags (repository text, name text, digest text, PRIMARY KEY (repository, name))" &&
    "${PSQL[@]}" -c "INSERT INTO tags VALUES ('library/alpine', '3.20', 'sha256:aa')
                     ON CONFLICT (repository, name) DO UPDATE SET digest = excluded.digest" &&
    equal "$("${PSQL[@]}" -c "SELECT digest FROM tags WHERE name = '3.20'")" "sha256:aa" &&
    "${PSQL[@]}" -c "SELECT version()" | grep -q '^PostgreSQL'
}
start_postgres || exit 1
check "PostgreSQL accepts connections" "${PSQL[@]}" -c "SELECT 1"
check "schema, upsert and query through psql" pg_round_trip
finish
