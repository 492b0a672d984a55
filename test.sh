#!/usr/bin/env bash
# The test command (README "Test it" says what it installs and how long it takes).
#
#   ./test.sh [pytest args]     e.g. ./test.sh tests/unit -q
#
# Steps, each announced with its time:
#   1. .venv with gridbus and its test extras (pip, from pyproject.toml; kept between runs)
#   2. deploy tools, once, outside the work tree (deploy/ci/validate.sh --install-only):
#      Debian's prometheus/promtool (apt-get, ~100 MB), a tools venv (~150 MB) and the
#      AsyncAPI CLI (npm, ~1.5 GB, about 2 minutes the first time) in $GRIDBUS_TOOLS
#      (default ~/.cache/gridbus-ci)
#   3. lint, format and types: ruff check, ruff format --check, mypy (configured in pyproject.toml; under a minute)
#   4. pytest over tests/ (unit; integration and end-to-end against AMQP_URI / REDIS_URL)
#   5. the deploy validators (deploy/ci/validate.sh)
# Switches:
#   GRIDBUS_SKIP_DEPLOY_CHECKS=1  skip steps 2 and 5 (the tests that need a real Prometheus
#                                 then run only if `prometheus` is already installed)
#   GRIDBUS_SKIP_ASYNCAPI=1       skip only the AsyncAPI CLI (its install and its check)
set -euo pipefail
cd "$(dirname "$0")"

started=$SECONDS
step() { printf '\n== [%s] %s (%d s so far)\n' "$1" "$2" "$((SECONDS - started))"; }

step 1/5 "python environment .venv (gridbus with its test extras)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

deploy_checks=0
if [ -x deploy/ci/validate.sh ] && [ "${GRIDBUS_SKIP_DEPLOY_CHECKS:-0}" != 1 ]; then
  deploy_checks=1
  step 2/5 "deploy tools (installed once, then reused; GRIDBUS_SKIP_DEPLOY_CHECKS=1 skips them)"
  # promtool/prometheus first: the real-Prometheus tests need the binary
  deploy/ci/validate.sh --install-only
else
  step 2/5 "deploy tools: skipped (GRIDBUS_SKIP_DEPLOY_CHECKS=1)"
fi

step 3/5 "lint, format and types (ruff check, ruff format --check, mypy)"
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
.venv/bin/python -m mypy

step 4/5 "pytest"
.venv/bin/python -m pytest -q "$@"

if [ "$deploy_checks" = 1 ]; then
  step 5/5 "deploy validators (deploy/ci/validate.sh)"
  deploy/ci/validate.sh
else
  step 5/5 "deploy validators: skipped (GRIDBUS_SKIP_DEPLOY_CHECKS=1)"
fi
printf '\ntest.sh: done in %d s\n' "$((SECONDS - started))"
