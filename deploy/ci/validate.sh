#!/usr/bin/env bash
# Validates the deploy artefacts; CI calls it (test.sh runs it after pytest).
#
#   deploy/ci/validate.sh                 install what is missing, then run every check
#   deploy/ci/validate.sh --install-only  only install (run before pytest, so that the
#                                         real-Prometheus test finds the binary)
#
# Installs, once (a second run skips them): Debian's `prometheus` package (prometheus +
# promtool), @asyncapi/cli (npm, pinned) and kubernetes-validate + jsonschema + PyYAML
# (PyPI, pinned) into a tools folder outside the work tree ($GRIDBUS_TOOLS, default
# ~/.cache/gridbus-ci). Checks:
#   promtool check config / check rules / test rules; the dashboard's queries parse
#   docker-compose.yml against the vendored compose-spec schema (deploy/ci/compose-spec.json)
#   deploy/k8s/*.yaml with kubernetes-validate --strict, plus structural checks of the
#     custom resources (RabbitmqCluster, ScaledObject, TriggerAuthentication)
#   docs/asyncapi.yaml with the AsyncAPI CLI
# Exits non-zero if any check fails (all checks run; failures are listed at the end).
# GRIDBUS_SKIP_ASYNCAPI=1 leaves out the AsyncAPI CLI (npm, ~1.5 GB, the heaviest tool)
# and its check. Long installs print a line every 15 s so that a slow download shows.
set -uo pipefail
cd "$(dirname "$0")/../.."

ASYNCAPI_CLI_VERSION=4.1.1        # 5.x and 6.x need Node.js >= 24; this machine has 20
KUBERNETES_VALIDATE_VERSION=1.37.0
JSONSCHEMA_VERSION=4.26.0
PYYAML_VERSION=6.0.4
K8S_VERSION=1.33.0                # the cluster version the manifests are checked against

TOOLS="${GRIDBUS_TOOLS:-$HOME/.cache/gridbus-ci}"
PY="$TOOLS/venv/bin/python"
ASYNCAPI="$TOOLS/npm/node_modules/.bin/asyncapi"

log() { printf '\n== %s\n' "$*"; }
SKIP_ASYNCAPI="${GRIDBUS_SKIP_ASYNCAPI:-0}"

progress() {  # progress LABEL COMMAND...: run it, saying every 15 s that it still runs
  local label="$1"; shift
  local t0=$SECONDS
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 1 15); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && echo "   … $label: $((SECONDS - t0)) s" >&2  # stderr: the command's stdout may be silenced
  done
  wait "$pid"
}

install_tools() {
  if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    log "installing Debian package prometheus (promtool)"
    export DEBIAN_FRONTEND=noninteractive
    progress "apt-get install prometheus" apt-get install -y -q --no-install-recommends prometheus >/dev/null \
      || { apt-get update -q >/dev/null \
           && progress "apt-get install prometheus" apt-get install -y -q --no-install-recommends prometheus >/dev/null; } \
      || return 1
  fi
  if [ ! -x "$PY" ] || ! "$PY" -c "import kubernetes_validate, jsonschema, yaml" 2>/dev/null \
     || [ "$("$TOOLS/venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    log "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION jsonschema PyYAML into $TOOLS/venv"
    python3 -m venv "$TOOLS/venv" || return 1
    progress "pip install into $TOOLS/venv" "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "jsonschema==$JSONSCHEMA_VERSION" \
      "PyYAML==$PYYAML_VERSION" || return 1
  fi
  if [ "$SKIP_ASYNCAPI" = 1 ]; then
    log "AsyncAPI CLI: skipped (GRIDBUS_SKIP_ASYNCAPI=1)"
  elif [ ! -x "$ASYNCAPI" ] || [ "$(node -p "require('$TOOLS/npm/node_modules/@asyncapi/cli/package.json').version" 2>/dev/null)" != "$ASYNCAPI_CLI_VERSION" ]; then
    log "installing @asyncapi/cli@$ASYNCAPI_CLI_VERSION into $TOOLS/npm (about 2 minutes, once)"
    mkdir -p "$TOOLS/npm"
    progress "npm install @asyncapi/cli (~1.5 GB)" npm install --prefix "$TOOLS/npm" --no-audit --no-fund --loglevel=error \
      "@asyncapi/cli@$ASYNCAPI_CLI_VERSION" >/dev/null || return 1
    "$ASYNCAPI" config analytics --disable >/dev/null 2>&1 || true
  fi
}

if ! install_tools; then
  echo "validate.sh: installing the tools failed" >&2
  exit 2
fi
[ "${1:-}" = "--install-only" ] && exit 0

FAILED=()
check() {  # check NAME COMMAND...
  local name="$1"; shift
  log "$name"
  local t0=$SECONDS
  if "$@"; then echo "ok: $name ($((SECONDS - t0)) s)"; else echo "FAILED: $name" >&2; FAILED+=("$name"); fi
}

dashboard_queries_parse() {
  local rules; rules="$(mktemp --suffix=.yml)"
  "$PY" - "$rules" <<'PYEOF' || return 1
import json, sys, yaml
dash = json.load(open("deploy/grafana/dashboards/gridbus.json", encoding="utf-8"))
rules = []
for panel in dash["panels"]:
    for t in panel.get("targets", []):
        expr = (t["expr"].replace("$__range", "1h").replace("$__rate_interval", "1m")
                .replace("$dept", ".*").replace("$street", ".*"))
        rules.append({"record": f"dashboard:panel{panel['id']}:{t['refId']}", "expr": expr})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
PYEOF
  promtool check rules "$rules"; local rc=$?
  rm -f "$rules"; return $rc
}

compose_schema() {
  "$PY" - <<'PYEOF'
import json, sys, yaml
from jsonschema import Draft201909Validator
schema = json.load(open("deploy/ci/compose-spec.json", encoding="utf-8"))
doc = yaml.safe_load(open("docker-compose.yml", encoding="utf-8"))
errors = sorted(Draft201909Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
for e in errors:
    print("docker-compose.yml:", "/".join(map(str, e.path)) or "(top)", "-", e.message[:300])
services = doc.get("services", {})
for name, svc in services.items():       # what the schema cannot see
    for dep in svc.get("depends_on", {}):
        if dep not in services:
            errors.append(1); print(f"docker-compose.yml: {name} depends on unknown service {dep}")
    for vol in svc.get("volumes", []):
        src = vol.split(":", 1)[0]
        if not src.startswith(("./", "/")) and src not in (doc.get("volumes") or {}):
            errors.append(1); print(f"docker-compose.yml: {name} uses undeclared volume {src}")
print(f"{len(services)} services, {len(errors)} problem(s)")
sys.exit(1 if errors else 0)
PYEOF
}

k8s_builtin() {
  "$TOOLS/venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$K8S_VERSION" deploy/k8s/*.yaml
}

k8s_custom_resources() {
  "$PY" - <<'PYEOF'
import glob, sys, yaml
problems = []
docs = [(f, d) for f in sorted(glob.glob("deploy/k8s/*.yaml")) for d in yaml.safe_load_all(open(f)) if d]
by_kind = {}
for f, d in docs:
    by_kind.setdefault(d["kind"], []).append((f, d))
def need(cond, f, d, msg):
    if not cond:
        problems.append(f"{f}: {d['kind']}/{d['metadata'].get('name')}: {msg}")
deployments = {d["metadata"]["name"] for _, d in by_kind.get("Deployment", [])}
auths = {d["metadata"]["name"] for _, d in by_kind.get("TriggerAuthentication", [])}
for f, d in by_kind.get("RabbitmqCluster", []):
    need(d["apiVersion"] == "rabbitmq.com/v1beta1", f, d, "apiVersion must be rabbitmq.com/v1beta1")
    spec = d.get("spec", {})
    need(spec.get("replicas") == 3, f, d, "spec.replicas must be 3 (quorum queues survive one node)")
    need(set(spec) <= {"replicas", "image", "imagePullSecrets", "service", "persistence", "resources",
                       "affinity", "tolerations", "rabbitmq", "tls", "override", "terminationGracePeriodSeconds",
                       "skipPostDeploySteps", "delayStartSeconds", "secretBackend"}, f, d, f"unknown spec keys {sorted(spec)}")
    need("default_queue_type = quorum" in spec.get("rabbitmq", {}).get("additionalConfig", ""), f, d,
         "additionalConfig must set default_queue_type = quorum")
for f, d in by_kind.get("ScaledObject", []):
    need(d["apiVersion"] == "keda.sh/v1alpha1", f, d, "apiVersion must be keda.sh/v1alpha1")
    spec = d.get("spec", {})
    need(spec.get("scaleTargetRef", {}).get("name") in deployments, f, d, "scaleTargetRef names no Deployment")
    need(0 < spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 0), f, d, "need 0 < min <= max replicas")
    triggers = spec.get("triggers") or []
    need(triggers, f, d, "no triggers")
    for t in triggers:
        need(t.get("type") in {"rabbitmq", "cpu", "memory", "prometheus"}, f, d, f"unexpected trigger {t.get('type')}")
        if t.get("type") == "rabbitmq":
            md = t.get("metadata", {})
            need(md.get("mode") in {"QueueLength", "MessageRate"} and md.get("queueName") and md.get("value"),
                 f, d, f"rabbitmq trigger needs mode, queueName, value: {md}")
            need(t.get("authenticationRef", {}).get("name") in auths, f, d, "authenticationRef names no TriggerAuthentication")
for f, d in by_kind.get("TriggerAuthentication", []):
    refs = d.get("spec", {}).get("secretTargetRef") or []
    need(refs and all({"parameter", "name", "key"} <= set(r) for r in refs), f, d, "secretTargetRef needs parameter, name, key")
for f, d in by_kind.get("Deployment", []):
    for c in d["spec"]["template"]["spec"]["containers"]:
        need("livenessProbe" in c and "readinessProbe" in c, f, d, f"container {c['name']} needs liveness and readiness probes")
        need("limits" in c.get("resources", {}), f, d, f"container {c['name']} needs resource limits")
for p in problems:
    print(p)
print(f"{len(docs)} resources, {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PYEOF
}

asyncapi_validate() {
  # the CLI tries to send anonymous usage metrics; analytics are disabled at install
  "$ASYNCAPI" validate docs/asyncapi.yaml --fail-severity error
}

check "promtool check config"          promtool check config deploy/prometheus/prometheus.yml
check "promtool check rules"           promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules"            promtool test rules deploy/prometheus/alerts_test.yml
check "dashboard queries parse"        dashboard_queries_parse
check "docker-compose.yml schema"      compose_schema
check "k8s built-in kinds (strict)"    k8s_builtin
check "k8s custom resources"           k8s_custom_resources
if [ "$SKIP_ASYNCAPI" = 1 ]; then
  log "asyncapi validate: skipped (GRIDBUS_SKIP_ASYNCAPI=1)"
else
  check "asyncapi validate"            asyncapi_validate
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  printf '\nvalidate.sh: %d check(s) failed:\n' "${#FAILED[@]}" >&2
  printf '  - %s\n' "${FAILED[@]}" >&2
  exit 1
fi
printf '\nvalidate.sh: all checks passed\n'
