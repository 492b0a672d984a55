"""Each service exports only its own metrics, with known label sets at 0 and no `_created`."""

from __future__ import annotations

from prometheus_client import generate_latest

from shared import metrics
from shared.metrics import Known

KNOWN = dict(
    depts=("gas", "water"),
    streets=("450305001", "450305003"),
    category_classes=("01", "06"),
    channels=("webhook", "sms"),
)


def _exposed(service: str, entrypoints: tuple[str, ...] = ("on_event",)) -> str:
    registry = metrics.registry_for(Known(service, entrypoints=entrypoints, **KNOWN))
    return generate_latest(registry).decode()


def _families(service: str) -> set[str]:
    registry = metrics.registry_for(Known(service, **KNOWN))
    return {family.name for family in registry.collect()}


def test_routes_validity_only_on_router():
    assert "gridbus_routes_config_valid" in _families("router")
    for service in ("intake", "sla", "notifier"):
        assert "gridbus_routes_config_valid" not in _families(service)


def test_each_service_has_its_own_and_the_shared_metrics():
    owners = {m._name: owner for m, owner in metrics.declared()}
    for service in ("intake", "router", "sla", "notifier"):
        families = _families(service)
        for name, owner in owners.items():
            assert (name in families) == (metrics.EVERY in owner or service in owner), (service, name)


def test_known_label_sets_start_at_zero():
    router = _exposed("router", ("route_case",))
    for dept in KNOWN["depts"]:
        for street in KNOWN["streets"]:
            assert f'gridbus_cases_dispatched_total{{dept="{dept}",street="{street}"}} 0.0' in router
    assert 'gridbus_messages_in_total{entrypoint="route_case",service="router"} 0.0' in router
    assert 'gridbus_messages_rejected_total{entrypoint="route_case",service="router"} 0.0' in router
    notifier = _exposed("notifier")
    assert 'gridbus_notification_deliveries_total{channel="sms",outcome="dead"} 0.0' in notifier
    assert 'gridbus_notifications_total{channel="webhook",outcome="transient"} 0.0' in notifier
    intake = _exposed("intake")
    assert 'gridbus_replies_total{action="acknowledge",dept="gas",on_time="yes"} 0.0' in intake
    assert 'gridbus_cases_registered_total{category_class="06",street="450305003"} 0.0' in intake


def test_no_created_series():
    for service in ("intake", "router", "sla", "notifier"):
        assert "_created" not in _exposed(service)


def test_every_metric_has_an_owner_that_runs():
    from services.runner import SERVICE_CLASSES

    services = {*SERVICE_CLASSES, metrics.EVERY}
    for metric, owner in metrics.declared():
        assert owner and set(owner) <= services, (metric._name, owner)


def test_docs_list_each_metric_under_the_service_that_exports_it():
    """docs/metrics.md has a section per service ("Every service" for the shared ones)."""
    import re
    from pathlib import Path

    from prometheus_client import Counter

    text = (Path(__file__).resolve().parents[2] / "docs/metrics.md").read_text(encoding="utf-8")
    section_of: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("### "):
            section = line[4:].strip()
        m = re.match(r"\| `(gridbus_[a-z0-9_]+)` \|", line)
        if m and section:
            section_of.setdefault(m.group(1), section)
    wrong = []
    for metric, owner in metrics.declared():
        name = metric._name + ("_total" if isinstance(metric, Counter) else "")
        # a metric of several services (not all) may sit with the shared ones or with any owner
        expected = (
            {"Every service"}
            if metrics.EVERY in owner
            else set(owner) | ({"Every service"} if len(owner) > 1 else set())
        )
        if section_of.get(name) not in expected:
            wrong.append((name, section_of.get(name), sorted(expected)))
    assert not wrong, f"docs/metrics.md: metric listed under another service's section (or missing): {wrong}"


def test_work_queue_panels_and_alert_count_only_the_services_work_queues():
    """Not dept.* (departments' inboxes), not the notifier's retry delay queues, not the audit stream."""
    import json
    import re
    from pathlib import Path

    import yaml

    from shared import topology

    root = Path(__file__).resolve().parents[2]
    work = {
        q.name
        for q in topology.build_topology(["gas", "water"]).queues
        if q.kind == "work" and not q.name.startswith("dept.")
    }
    every = {q.name for q in topology.build_topology(["gas", "water"]).queues}
    dash = json.loads((root / "deploy/grafana/dashboards/gridbus.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dash["panels"] if p["title"].startswith("Work queues") for t in p["targets"]]
    rules = yaml.safe_load((root / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8"))
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == "GridbusQueueDepthGrowing"]
    assert len(exprs) >= 3
    for expr in exprs:
        for pattern in re.findall(r'queue=~"([^"]+)"', expr):
            regex = re.compile(pattern.replace("\\\\", "\\"))
            assert {q for q in every if regex.fullmatch(q)} == work, expr


def test_every_alert_rule_is_described_in_the_catalogue():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    rules = yaml.safe_load((root / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8"))
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    text = (root / "docs/metrics.md").read_text(encoding="utf-8")
    missing = [a for a in alerts if f"| `{a}` |" not in text]
    assert alerts and not missing, f"add a row for {missing} to the Alerts table of docs/metrics.md"


def test_each_real_service_starts_with_its_entrypoints_and_known_labels_at_zero():
    """What `gridbus run <service>` serves before its consumers start (no broker needed:
    the container is built, not started)."""
    import importlib

    from nameko.containers import ServiceContainer

    from services.runner import SERVICE_CLASSES, known_labels

    for name, path in SERVICE_CLASSES.items():
        module, cls = path.split(":")
        container = ServiceContainer(getattr(importlib.import_module(module), cls), {"AMQP_URI": "memory://"})
        known = known_labels(name, container)
        assert known.entrypoints and known.depts and known.streets, name
        text = generate_latest(metrics.registry_for(known)).decode()
        for entrypoint in known.entrypoints:
            assert f'gridbus_messages_in_total{{entrypoint="{entrypoint}",service="{name}"}} 0.0' in text
