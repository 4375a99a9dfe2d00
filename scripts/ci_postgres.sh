#!/usr/bin/env bash
# Install (if needed) and start a local PostgreSQL server for the tests that need a real one
# (e.g. two `pneumocxr tune` workers sharing one Optuna study), and create a role and database.
#
# Debian/Ubuntu, as root (CI machines, containers without systemd). Idempotent: safe to run twice.
# Progress goes to stderr; stdout is one line for the caller to eval:
#
#   eval "$(scripts/ci_postgres.sh)"      # exports PNEUMOCXR_TEST_POSTGRES_URL
#   .venv/bin/pytest tests/training/test_tune.py
#
# Settings (environment): PG_ROLE, PG_PASSWORD, PG_DB (defaults below). The server listens on
# localhost only; the role is a throw-away test role, not for production use.
set -euo pipefail

PG_ROLE="${PG_ROLE:-pneumocxr}"
PG_PASSWORD="${PG_PASSWORD:-pneumocxr}"
PG_DB="${PG_DB:-pneumocxr_test}"

log() { echo "ci_postgres: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "run as root (installs packages and starts a system service), e.g. sudo $0"
  exit 2
fi

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
  log "installing postgresql (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi

# The newest installed server version, and its "main" cluster (the package creates it; a slim
# image may not have).
version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
  log "creating cluster $version/main"
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  log "starting cluster $version/main"
  pg_ctlcluster "$version" main start >&2 || service postgresql start >&2
fi
port="$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')"

for _ in $(seq 1 30); do  # the server accepts connections a moment after "start" returns
  if runuser -u postgres -- pg_isready -q -p "$port"; then break; fi
  sleep 1
done
runuser -u postgres -- pg_isready -q -p "$port" || { log "server on port $port is not ready"; exit 1; }

psql_admin() { runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE'")" != "1" ]; then
  log "creating role $PG_ROLE"
  psql_admin -c "CREATE ROLE \"$PG_ROLE\" LOGIN PASSWORD '$PG_PASSWORD'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != "1" ]; then
  log "creating database $PG_DB"
  psql_admin -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_ROLE\""
fi

url="postgresql://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$port/$PG_DB"
# Fail here, not in the tests, when password login over TCP does not work.
PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$port" -U "$PG_ROLE" -d "$PG_DB" -qtAc "SELECT 1" >/dev/null
log "PostgreSQL $version ready at $url"
echo "export PNEUMOCXR_TEST_POSTGRES_URL=$url"
