#!/bin/sh
# Entrypoint of drillbook/postgres: the official image's contract, from
# Debian's packages. Honours POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB,
# POSTGRES_INITDB_ARGS (and POSTGRES_HOST_AUTH_METHOD=trust), runs the server as the unprivileged
# `postgres` user, passes its arguments to postgres (e.g. -c fsync=off), and
# "database system is ready to accept connections" appears on stderr and on
# stdout once the server really answers (there is no temporary server).
#
# POSTGRES_STANDBY_OF=<host> makes a hot standby instead of a new cluster: a
# pg_basebackup of that primary (port POSTGRES_STANDBY_PORT, default 5432,
# as POSTGRES_USER with POSTGRES_PASSWORD) with -R, so it streams from it.
set -eu
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGDATA=${PGDATA:-/var/lib/postgresql/data}
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
AUTH=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ] && [ -n "${POSTGRES_STANDBY_OF:-}" ]; then
    # -R writes standby.signal and primary_conninfo (with the password) into
    # the standby's own postgresql.auto.conf (mode 600, inside the container).
    PGPASSWORD=${POSTGRES_PASSWORD:-} "$PGBIN/pg_basebackup" --host="$POSTGRES_STANDBY_OF" \
        --port="${POSTGRES_STANDBY_PORT:-5432}" --username="$POSTGRES_USER" --no-password \
        --pgdata="$PGDATA" --write-recovery-conf --wal-method=stream --checkpoint=fast
    chmod 700 "$PGDATA"
elif [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$AUTH" != trust ]; then
        echo "error: set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-unused}" > "$pwfile"
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS holds several words.
    "$PGBIN/initdb" -D "$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host="$AUTH" --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    # "all" does not cover replication connections: standbys need their own line.
    printf 'host all all all %s\nhost replication all all %s\n' "$AUTH" "$AUTH" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\"" | "$PGBIN/postgres" --single -D "$PGDATA" -j postgres >/dev/null
    fi
fi
"$PGBIN/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@" &
pid=$!
# `docker stop` sends SIGTERM: a fast shutdown (SIGINT), not a smart one.
trap 'kill -INT "$pid" 2>/dev/null' INT TERM
until "$PGBIN/pg_isready" -q -h /var/run/postgresql; do
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid"
        exit $?
    fi
    sleep 0.1
done
# testcontainers-modules' Postgres waits for this line on stderr (where the
# server logs it, but a hot standby says "ready to accept read-only
# connections") and on stdout (where the official image's temporary server
# logs it): both get it once the server really answers.
echo "database system is ready to accept connections"
echo "database system is ready to accept connections" >&2
status=0
wait "$pid" || status=$?
while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" || status=$?
done
exit "$status"
