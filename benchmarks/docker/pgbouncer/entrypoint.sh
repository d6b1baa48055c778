#!/bin/sh
# Write pgbouncer.ini and userlist.txt from the environment, then run PgBouncer in the foreground.
#
# Required: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB. Optional: POSTGRES_HOST (postgres),
# POSTGRES_PORT (5432), PGBOUNCER_LISTEN_ADDR (0.0.0.0), PGBOUNCER_PORT (6432), PGBOUNCER_POOL_SIZE (10),
# PGBOUNCER_CONFIG_DIR (/var/lib/pgbouncer).
# Clients authenticate with SCRAM against the same user and password PostgreSQL has; PgBouncer logs in to
# PostgreSQL with them too. The password must not contain a double quote.
set -eu

: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
: "${POSTGRES_DB:?POSTGRES_DB is required}"
host="${POSTGRES_HOST:-postgres}"
port="${POSTGRES_PORT:-5432}"
dir="${PGBOUNCER_CONFIG_DIR:-/var/lib/pgbouncer}"

umask 077
printf '"%s" "%s"\n' "$POSTGRES_USER" "$POSTGRES_PASSWORD" > "$dir/userlist.txt"
cat > "$dir/pgbouncer.ini" <<INI
[databases]
$POSTGRES_DB = host=$host port=$port dbname=$POSTGRES_DB

[pgbouncer]
listen_addr = ${PGBOUNCER_LISTEN_ADDR:-0.0.0.0}
listen_port = ${PGBOUNCER_PORT:-6432}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = ${PGBOUNCER_POOL_SIZE:-10}
max_client_conn = 2000
ignore_startup_parameters = extra_float_digits,statement_timeout
INI

exec pgbouncer "$dir/pgbouncer.ini"
