#!/usr/bin/env bash
# The run command: installs gridbus into .venv (once), checks RabbitMQ and Redis
# (AMQP_URI / REDIS_URL, default localhost; started with Docker Compose where Docker
# exists, otherwise privately from the installed binaries under .gridbus/data, otherwise
# it says exactly what to install), creates/migrates the PostgreSQL archive, starts the services and feeds them the
# demo. Ctrl-C stops everything. Pass --exit-after-demo to stop after the demo.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e .
# the archive (DATABASE_URL): creates the database when it is missing, applies migrations
.venv/bin/gridbus db migrate >/dev/null 2>&1 \
  || echo "PostgreSQL not answering at DATABASE_URL yet: gridbus up starts and migrates one (or says what to install)" >&2
exec .venv/bin/gridbus up --demo "$@"
