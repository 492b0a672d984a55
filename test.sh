#!/usr/bin/env bash
# The test command: installs gridbus with its test extras into .venv (once), then runs
# every test against the RabbitMQ and Redis given by AMQP_URI / REDIS_URL
# (default: localhost), plus the deploy artefacts' validators.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
deploy_checks=0
if [ -x deploy/ci/validate.sh ] && [ "${GRIDBUS_SKIP_DEPLOY_CHECKS:-0}" != 1 ]; then
  deploy_checks=1
  # promtool/prometheus first: the real-Prometheus test needs the binary
  deploy/ci/validate.sh --install-only
fi
.venv/bin/python -m pytest -q "$@"
if [ "$deploy_checks" = 1 ]; then
  deploy/ci/validate.sh
fi
