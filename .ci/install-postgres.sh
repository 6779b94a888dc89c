#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries the tests start a throwaway cluster with are installed.
# Idempotent: does nothing when initdb is already there. Debian/Ubuntu (apt-get); run as root.
set -euo pipefail
have_initdb() {
    command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if have_initdb; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-postgres: no initdb and no apt-get: install the PostgreSQL 15 server yourself" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql-15 >/dev/null || apt-get install -y -qq postgresql >/dev/null
have_initdb || { echo "install-postgres: initdb still missing after apt-get" >&2; exit 1; }
# The package's own cluster is not used by the tests (they start their own); stop it if it started.
if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
fi
