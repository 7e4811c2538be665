#!/usr/bin/env bash
# Makes sure a PostgreSQL server for the tests runs on 127.0.0.1 and holds the test role and
# database, then prints their DSN on stdout (everything else goes to stderr):
#
#   export CHRONICLE_TEST_PG_DSN=$(bash scripts/start-postgres.sh)
#
# For a Debian machine, run as root (as CI does). Idempotent: installs PostgreSQL only when it
# is missing, creates and starts the packaged cluster only when no server answers on the port,
# and creates the role and database only when they do not exist. Each test run makes its own
# schema inside the database and drops it afterwards, so runs do not interfere.
#
# Settings (environment): CHRONICLE_PG_PORT (5432), CHRONICLE_PG_USER (chronicle),
# CHRONICLE_PG_PASSWORD (chronicle), CHRONICLE_PG_DATABASE (chronicle_test).
set -euo pipefail

port=${CHRONICLE_PG_PORT:-5432}
user=${CHRONICLE_PG_USER:-chronicle}
password=${CHRONICLE_PG_PASSWORD:-chronicle}
database=${CHRONICLE_PG_DATABASE:-chronicle_test}
dsn="postgres://$user:$password@127.0.0.1:$port/$database"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'start-postgres: %s\n' "$*" >&2; exit 1; }

ready() { pg_isready -q -h 127.0.0.1 -p "$port"; }
# Whether the test role can already log in to the test database over TCP.
usable() { PGPASSWORD=$password PGCONNECT_TIMEOUT=5 psql -X -q -h 127.0.0.1 -p "$port" -U "$user" -d "$database" -c 'SELECT 1' >/dev/null 2>&1; }
# psql as the superuser through the local socket (peer authentication).
as_postgres() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$port" "$@"; }

[[ $(id -u) == 0 ]] || die "run as root (it may install packages and start the server as the postgres user)"

if ! command -v pg_ctlcluster >/dev/null || ! command -v psql >/dev/null; then
    log "installing postgresql"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

if ready; then
    log "a PostgreSQL server already answers on 127.0.0.1:$port"
else
    version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -1)
    [[ -n $version ]] || die "postgresql is installed but /usr/lib/postgresql has no server version"
    if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
        log "creating cluster $version/main on port $port"
        pg_createcluster -p "$port" "$version" main >/dev/null
    fi
    cluster_port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')
    [[ $cluster_port == "$port" ]] ||
        die "cluster $version/main is set up for port $cluster_port, not $port; set CHRONICLE_PG_PORT=$cluster_port"
    log "starting cluster $version/main"
    # Already running but not yet answering counts as started; wait for it below either way.
    pg_ctlcluster "$version" main start 2>&1 | grep -v 'already running' >&2 || true
    for _ in $(seq 1 60); do
        ready && break
        sleep 0.5
    done
    ready || die "PostgreSQL did not come up on 127.0.0.1:$port; see /var/log/postgresql/postgresql-$version-main.log"
fi

if usable; then
    log "role $user can use database $database"
else
    log "creating role $user and database $database"
    as_postgres -c "DO \$\$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') THEN
                CREATE ROLE \"$user\" LOGIN;
            END IF;
        END \$\$;" \
        -c "ALTER ROLE \"$user\" LOGIN PASSWORD '$password'" ||
        die "cannot create role $user as the postgres superuser; is the server on port $port the packaged one?"
    if ! as_postgres -tA -c "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
        as_postgres -c "CREATE DATABASE \"$database\" OWNER \"$user\""
    fi
    usable || die "role $user still cannot log in to $database on 127.0.0.1:$port (check pg_hba.conf allows password logins from 127.0.0.1)"
fi

echo "$dsn"
