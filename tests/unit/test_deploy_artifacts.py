"""Drift tests between the code and the deploy/docs artifacts generated from it or naming it."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import Counter

from shared import metrics, models, topology
from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _metric_names() -> dict[str, str]:
    """Exposed name (counters with `_total`) → type, for every metric of shared/metrics.py."""
    out = {}
    for value, _owner in metrics.declared():
        name = value._name + ("_total" if isinstance(value, Counter) else "")
        out[name] = value._type
    return out


def _series_names() -> set[str]:
    """Every series name a query may use: histograms add _bucket/_sum/_count."""
    names = set()
    for name, kind in _metric_names().items():
        names.add(name)
        if kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return names


METRIC_RE = re.compile(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\s*(?=\{|\[|\)|\s|$)")


def _referenced_gridbus(expr: str) -> set[str]:
    return set(re.findall(r"\bgridbus_[a-z0-9_]+\b", expr))


def _load_gen_asyncapi():
    spec = importlib.util.spec_from_file_location("gen_asyncapi", ROOT / "docs" / "gen_asyncapi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _alert_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8"))
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in doc["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads((ROOT / "deploy/grafana/dashboards/gridbus.json").read_text(encoding="utf-8"))
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        out.append((f"variable {var['name']}", query["query"] if isinstance(query, dict) else query))
    return out


# ------------------------------------------------------------------ generated files


def test_rabbitmq_definitions_match_topology_module():
    on_disk = json.loads((ROOT / "deploy/rabbitmq/definitions.json").read_text(encoding="utf-8"))
    generated = topology.definitions(topology.default_topology())
    assert on_disk == generated, (
        "deploy/rabbitmq/definitions.json is stale: "
        "run `gridbus topology definitions > deploy/rabbitmq/definitions.json`"
    )


def test_asyncapi_document_matches_generator():
    gen = _load_gen_asyncapi()
    on_disk = (ROOT / "docs/asyncapi.yaml").read_text(encoding="utf-8")
    assert on_disk == gen.render(), "docs/asyncapi.yaml is stale: run `python docs/gen_asyncapi.py`"


def test_asyncapi_names_every_exchange_event_and_model():
    doc = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text(encoding="utf-8"))
    exchanges = {
        ch["bindings"]["amqp"]["exchange"]["name"]
        for ch in doc["channels"].values()
        if ch["bindings"]["amqp"]["is"] == "routingKey"
    }
    assert exchanges == {e.name for e in topology.default_topology().exchanges}
    addresses = {ch["address"] for ch in doc["channels"].values()}
    assert set(topology.EVENT_ROUTING_KEYS[e] for e in models.EVENT_MODELS if e != "case_updated") <= addresses
    assert topology.case_updated_routing_key("{to_status}") in addresses
    schemas = doc["components"]["schemas"]
    for model in (models.Report, models.Reply, models.DispatchOrder, *models.EVENT_MODELS.values()):
        assert model.__name__ in schemas
        assert model.__name__ in doc["components"]["messages"]


# ------------------------------------------------------------------ metrics


def test_every_metric_is_in_the_catalogue():
    catalogue = (ROOT / "docs/metrics.md").read_text(encoding="utf-8")
    missing = [name for name in _metric_names() if f"`{name}`" not in catalogue]
    assert not missing, f"add these metrics of shared/metrics.py to docs/metrics.md: {missing}"


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_queries_use_only_existing_metrics(source):
    exprs = _alert_exprs() if source == "alerts" else _dashboard_exprs()
    assert exprs
    known = _series_names()
    unknown = {(where, name) for where, expr in exprs for name in _referenced_gridbus(expr) if name not in known}
    assert not unknown, f"{source} uses metrics that shared/metrics.py does not define: {sorted(unknown)}"


def test_dashboard_references_only_gridbus_rabbitmq_and_up():
    """Any other metric family in a panel query is a typo or a metric nobody exports."""
    functions_and_keywords = {
        "sum",
        "by",
        "without",
        "rate",
        "increase",
        "irate",
        "delta",
        "deriv",
        "histogram_quantile",
        "clamp_min",
        "clamp_max",
        "or",
        "and",
        "unless",
        "on",
        "ignoring",
        "vector",
        "label_values",
        "max",
        "min",
        "avg",
        "count",
        "round",
        "scalar",
        "le",
        "topk",
        "bottomk",
        "time",
        "hour",
        "day_of_week",
        "label_replace",
        "absent",
        "offset",
        "bool",
        "group_left",
        "group_right",
    }
    bad = set()
    for where, expr in _dashboard_exprs() + _alert_exprs():
        stripped = re.sub(r'"[^"]*"', '""', expr)  # drop string literals
        stripped = re.sub(r"\{[^}]*\}", "{}", stripped)  # drop label matchers
        stripped = re.sub(r"\([^()]*\)", lambda m: m.group(0), stripped)
        stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)  # drop ranges
        for token in re.findall(r"\b[a-zA-Z_][a-zA-Z0-9_]*\b", stripped):
            if token in functions_and_keywords or token.startswith(("gridbus_", "rabbitmq_")):
                continue
            if token == "up" or token.startswith("__"):
                continue
            if re.fullmatch(
                r"(dept|street|queue|service|entrypoint|error|channel|outcome|reason|deadline|"
                r"instance|job|exchange|kind|vhost|category_class|le|key|scope|indicator|grade|level|mode)",
                token,
            ):
                continue  # a label name in `by (...)`
            bad.add((where, token))
    assert not bad, f"unexpected names in queries: {sorted(bad)}"


# ------------------------------------------------------------------ wiring


def test_prometheus_scrapes_each_service_on_its_configured_port():
    cfg = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    defaults = Settings()
    for service in ("intake", "router", "sla", "notifier"):
        targets = [t for sc in jobs[service]["static_configs"] for t in sc["targets"]]
        assert targets == [f"{service}:{defaults.metrics_port(service)}"]
    assert jobs["rabbitmq"]["static_configs"][0]["targets"] == ["rabbitmq:15692"]


def test_the_bridge_is_deployed_on_its_port_when_configured():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    bridge = compose["services"]["bridge"]
    port = Settings().bridge_metrics_port
    assert bridge["command"] == ["run", "bridge"] and bridge["profiles"] == ["bridge"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(bridge["healthcheck"]["test"])
    env = compose["x-gridbus-env"]
    assert {"BRIDGE_HTTP_URL", "BRIDGE_AMQP_EXCHANGE"} <= set(env)  # the topology job declares its queues too
    docs = [
        d
        for p in sorted((ROOT / "deploy/k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text(encoding="utf-8"))
        if d
    ]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "gridbus-config")
    assert config["data"]["BRIDGE_METRICS_PORT"] == str(port) and config["data"]["BRIDGE_HTTP_URL"]
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "bridge")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["run", "bridge"]
    assert container["ports"] == [{"name": "metrics", "containerPort": port}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_compose_runs_the_four_services_and_mounts_existing_files():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    for name in ("intake", "router", "sla", "notifier"):
        assert services[name]["command"] == ["run", name]
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert "healthcheck" in services[name]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
