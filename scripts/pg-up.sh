#!/usr/bin/env bash
# A local PostgreSQL for development and tests: Debian's `postgresql` package (PostgreSQL 15).
#
#   scripts/pg-up.sh --install   install postgresql if missing, then exit (the tests start
#                                their own private clusters: crates/iiot/tests/support/postgres.rs)
#   scripts/pg-up.sh             install if needed, then start a private cluster under
#                                target/postgres/ on 127.0.0.1:${PG_PORT:-5432} (database `iiot`,
#                                user `postgres`, no password: trust on 127.0.0.1 only)
#   scripts/pg-up.sh --stop      stop that cluster
#
# Safe to run again: a running cluster is left as it is. initdb refuses to run as root, so the
# cluster belongs to the unprivileged `postgres` user the package creates.
# TimescaleDB: Debian 12 has no package of it; iiot uses plain partitions (and logs whether the
# extension is available).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${PG_PORT:-5432}"
DIR="$(pwd)/target/postgres"
DATA="${DIR}/data"

pg_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [[ -n "${dir}" ]] && echo "${dir}"
}

install_packages() {
  [[ -n "$(pg_bin)" && -x "$(pg_bin)/initdb" ]] && return 0
  command -v apt-get >/dev/null 2>&1 || {
    echo "postgresql is missing and there is no apt-get: install PostgreSQL 15 yourself" >&2
    exit 1
  }
  echo "installing system packages: postgresql"
  local sudo=""
  [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
  ${sudo} apt-get update -qq
  # The package's own cluster and service are not wanted (clusters are started per test).
  DEBIAN_FRONTEND=noninteractive ${sudo} apt-get install -y --no-install-recommends postgresql
}

# Runs a PostgreSQL tool as the unprivileged owner of the cluster.
as_owner() {
  if [[ "$(id -u)" -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

install_packages
BIN="$(pg_bin)"
case "${1:-}" in
  --install) exit 0 ;;
  --stop)
    if [[ -f "${DATA}/postmaster.pid" ]]; then as_owner "${BIN}/pg_ctl" -D "${DATA}" -m fast stop; fi
    exit 0
    ;;
esac

if [[ -f "${DATA}/postmaster.pid" ]] && as_owner "${BIN}/pg_ctl" -D "${DATA}" status >/dev/null 2>&1; then
  echo "postgresql already running on 127.0.0.1:${PORT} (${DATA})"
  exit 0
fi
mkdir -p "${DIR}"
[[ "$(id -u)" -eq 0 ]] && chown postgres:postgres "${DIR}"
if [[ ! -f "${DATA}/PG_VERSION" ]]; then
  as_owner "${BIN}/initdb" -D "${DATA}" -U postgres --auth=trust -E UTF8 >/dev/null
fi
as_owner "${BIN}/pg_ctl" -D "${DATA}" -l "${DIR}/postgres.log" -w \
  -o "-p ${PORT} -c listen_addresses=127.0.0.1 -k ${DIR}" start >/dev/null
as_owner "${BIN}/psql" -h 127.0.0.1 -p "${PORT}" -U postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = 'iiot'" | grep -q 1 \
  || as_owner "${BIN}/createdb" -h 127.0.0.1 -p "${PORT}" -U postgres iiot
echo "postgresql running: HISTORY_DATABASE_URL=postgres://postgres@127.0.0.1:${PORT}/iiot"
