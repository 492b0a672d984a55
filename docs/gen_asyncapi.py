"""Generate docs/asyncapi.yaml (AsyncAPI 3.0) from shared.models and shared.topology.

    python docs/gen_asyncapi.py            # rewrite docs/asyncapi.yaml
    python docs/gen_asyncapi.py --check    # exit 1 if the file is not what would be written

Channels are the AMQP routing keys on gridbus' exchanges (and the department queues);
message payloads are the JSON Schemas of the pydantic models, so the document cannot
drift from the code without tests/unit/test_deploy_artifacts.py failing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared import models, topology  # noqa: E402
from shared.departments import load_departments  # noqa: E402

OUTPUT = ROOT / "docs" / "asyncapi.yaml"
REF = "#/components/schemas/{model}"

EVENT_DOCS = {
    "case_registered": "intake registered a new case (router routes it).",
    "case_dispatched": "router sent dispatch orders to department(s).",
    "case_unroutable": "No routing rule matched: the case went to the street's grid station (triage).",
    "case_updated": "A case changed state (acknowledged, in progress, suspended, rejected, resolved, closed, "
    "reopened, a dispatch by hand, …); the router's dispatch is told by `case_dispatched` alone. "
    "The routing key names the new status (`case.updated.resolved`).",
    "case_escalated": "A breached deadline escalated the case one grid level up.",
    "deadline_warning": "A deadline is close (a fraction of it has elapsed).",
    "deadline_breached": "A deadline passed without the matching reply.",
    "notification_failed": "A notification could not be delivered after its last retry.",
    "case_recorded": "The record (archive): intake stored a case; the whole document as stored, per version.",
    "clocks_recorded": "The record (archive): sla committed a case's clocks, with the ledger entries and "
    "indicator counts of that commit.",
    "notification_sent": "The record (archive): notifier finished a delivery (recipient id, channel, outcome).",
    "apikey_recorded": "The record (archive): an API key was created or revoked (its hash, never the secret).",
    "dispatch_withdrawn": "A department's order was withdrawn (a dispatch by hand or a take-over relieved it, "
    "or a crossed round superseded it); router passes it on to the department's queue.",
}


def _schemas() -> dict[str, Any]:
    """JSON Schemas of every message model, their nested models under components."""
    out: dict[str, Any] = {}
    roots = [models.Report, models.Reply, models.DispatchOrder, *models.EVENT_MODELS.values()]
    for model in roots:
        schema = model.model_json_schema(
            ref_template=REF,
            mode="serialization" if model is not models.Report and model is not models.Reply else "validation",
        )
        for name, sub in schema.pop("$defs", {}).items():
            out.setdefault(name, sub)
        out[model.__name__] = schema
    return dict(sorted(out.items()))


def _amqp_exchange(name: str) -> dict[str, Any]:
    ex = next(e for e in topology.default_topology().exchanges if e.name == name)
    return {"name": ex.name, "type": ex.type, "durable": True, "autoDelete": False, "vhost": "/"}


def _channel(
    address: str, exchange: str, description: str, messages: dict[str, str], parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    ch: dict[str, Any] = {
        "address": address,
        "description": description,
        "messages": {k: {"$ref": f"#/components/messages/{v}"} for k, v in messages.items()},
        "bindings": {"amqp": {"is": "routingKey", "exchange": _amqp_exchange(exchange), "bindingVersion": "0.3.0"}},
    }
    if parameters:
        ch["parameters"] = parameters
    return ch


def _message(model: type, title: str, summary: str, correlation: bool = True) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "name": model.__name__,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
        "bindings": {"amqp": {"messageType": model.__name__, "bindingVersion": "0.3.0"}},
    }
    if correlation:
        msg["correlationId"] = {"$ref": "#/components/correlationIds/caseCorrelation"}
    return msg


#: persistent messages, published with confirms (send) / manual acks (receive)
SEND_BINDINGS = {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}}
RECEIVE_BINDINGS = {"amqp": {"ack": True, "bindingVersion": "0.3.0"}}


def build() -> dict[str, Any]:
    depts = load_departments()
    codes = [d.code for d in depts]
    dept_param = {
        "description": "Department code (config/departments.yaml): " + ", ".join(f"`{d.code}` {d.name}" for d in depts),
        "enum": codes,
    }
    street_param = {"description": "9-digit street code of the case's grid (e.g. `450305003`)."}

    channels: dict[str, Any] = {
        "reports": _channel(
            topology.RK_REPORT,
            topology.EX_REPORTS,
            "The grid app submits reports (same body as `POST /v1/reports`). Queue "
            f"`{topology.Q_INTAKE_REPORTS}`. Publish persistent, with publisher confirms and "
            "`message_id` = `report_id`; a repeated `report_id` is idempotent.",
            {"report": "Report"},
        ),
        "replies": _channel(
            "reply.{dept}",
            topology.EX_REPLIES,
            "A department replies to a dispatch order (acknowledge, progress, suspend, reject, "
            f"resolve). Queue `{topology.Q_INTAKE_REPLIES}`. The AMQP `user_id` property must be "
            "the department's RabbitMQ user (RabbitMQ checks it) and the routing key its own "
            "code (topic permission).",
            {"reply": "Reply"},
            {"dept": dept_param},
        ),
        "dispatch": _channel(
            "dept.{dept}.{street}",
            topology.EX_DISPATCH,
            "router publishes one dispatch order per department and case. Each department's "
            "queue `dept.<code>` is bound with `dept.<code>.#`; a department may bind narrower "
            "queues (one street). When a commander dispatches the case elsewhere by hand, the "
            "department's order is withdrawn: a `DispatchWithdrawn` (`kind` `dispatch_withdrawn`, "
            "the order's `order_id`) on the same routing key. Tell the two apart by `kind`.",
            {"dispatchOrder": "DispatchOrder", "dispatchWithdrawn": "DispatchWithdrawn"},
            {"dept": dept_param, "street": street_param},
        ),
        "departmentQueue": {
            "address": "dept.{dept}",
            "description": "The department's own quorum queue of dispatch orders (delivery limit "
            f"{topology.DELIVERY_LIMIT}, then dead-lettered to `dept.<code>.dead`). It is what a "
            "department consumes: read permission on this queue only.",
            "parameters": {"dept": dept_param},
            "messages": {
                "dispatchOrder": {"$ref": "#/components/messages/DispatchOrder"},
                "dispatchWithdrawn": {"$ref": "#/components/messages/DispatchWithdrawn"},
            },
            "bindings": {
                "amqp": {
                    "is": "queue",
                    "queue": {
                        "name": "dept.{dept}",
                        "durable": True,
                        "exclusive": False,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        },
    }
    operations: dict[str, Any] = {
        "receiveReport": {
            "action": "receive",
            "channel": {"$ref": "#/channels/reports"},
            "summary": "intake takes reports from the grid app.",
            "bindings": RECEIVE_BINDINGS,
            "messages": [{"$ref": "#/channels/reports/messages/report"}],
        },
        "receiveReply": {
            "action": "receive",
            "channel": {"$ref": "#/channels/replies"},
            "summary": "intake takes department replies.",
            "bindings": RECEIVE_BINDINGS,
            "messages": [{"$ref": "#/channels/replies/messages/reply"}],
        },
        "sendDispatchOrder": {
            "action": "send",
            "channel": {"$ref": "#/channels/dispatch"},
            "summary": "router sends a dispatch order to a department.",
            "bindings": SEND_BINDINGS,
            "messages": [{"$ref": "#/channels/dispatch/messages/dispatchOrder"}],
        },
        "sendDispatchWithdrawn": {
            "action": "send",
            "channel": {"$ref": "#/channels/dispatch"},
            "summary": "router tells a department that its order was withdrawn.",
            "bindings": SEND_BINDINGS,
            "messages": [{"$ref": "#/channels/dispatch/messages/dispatchWithdrawn"}],
        },
    }
    messages: dict[str, Any] = {
        "Report": _message(models.Report, "Report", "A report from the grid app.", correlation=False),
        "Reply": _message(
            models.Reply, "Department reply", "A department's reply; on AMQP `case_id` is required.", correlation=False
        ),
        "DispatchOrder": _message(models.DispatchOrder, "Dispatch order", "What a department liaison receives."),
    }
    for event, model in models.EVENT_MODELS.items():
        key = topology.EVENT_ROUTING_KEYS[event]
        parameters = None
        if event == "case_updated":  # the key names the status: bind `case.updated.*` for all
            key = topology.case_updated_routing_key("{to_status}")
            parameters = {
                "to_status": {
                    "description": "The status the case moved to (`to_status` in the body); bind "
                    f"`{topology.RK_CASE_UPDATED_ANY}` for every update.",
                    "enum": [s.value for s in models.CaseStatus],
                }
            }
        cid = "".join(p.capitalize() for p in event.split("_"))
        channels[f"event{cid}"] = _channel(
            key,
            topology.EX_EVENTS,
            f"Event `{event}`: {EVENT_DOCS.get(event, '')} Every event is also kept in the stream "
            f"`{topology.Q_AUDIT}` (binding `#`), readable for audit and replay, which the archiver "
            "writes to PostgreSQL.",
            {event: model.__name__},
            parameters,
        )
        operations[f"send{cid}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/event{cid}"},
            "summary": f"gridbus publishes `{event}`.",
            "bindings": {"amqp": {"deliveryMode": 2, "bindingVersion": "0.3.0"}},
            "messages": [{"$ref": f"#/channels/event{cid}/messages/{event}"}],
        }
        messages[model.__name__] = _message(model, event, EVENT_DOCS.get(event, event))
    # Internal exchanges, listed so that every exchange is named here; not for partners.
    channels["notifierDeliveries"] = {
        "address": topology.RK_DELIVERY,
        "description": f"Internal to the notifier (`{topology.EX_NOTIFY}`): deliveries and their "
        "retry delay queues `notifier.retry.<n>s`. Not for partners.",
        "bindings": {
            "amqp": {"is": "routingKey", "exchange": _amqp_exchange(topology.EX_NOTIFY), "bindingVersion": "0.3.0"}
        },
    }
    channels["deadLetters"] = {
        "address": "{queue}",
        "description": f"Dead letters (`{topology.EX_DEAD}`), keyed by the name of the queue they "
        "left, into `<queue>.dead`. Operators only.",
        "parameters": {"queue": {"description": "Name of the queue the message was dead-lettered from."}},
        "bindings": {
            "amqp": {"is": "routingKey", "exchange": _amqp_exchange(topology.EX_DEAD), "bindingVersion": "0.3.0"}
        },
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "gridbus messaging contract",
            "version": f"{models.SCHEMA_VERSION}.0.0",
            "description": "Real-time dispatch for grid-based urban management (Qixing District, "
            "Guilin). What the grid app and partner departments send to and receive from gridbus "
            "over RabbitMQ. Generated by `docs/gen_asyncapi.py` from `shared/models.py` and "
            "`shared/topology.py`; do not edit by hand. Every message carries `message_id`, "
            "`schema_version`, `case_id` and `correlation_id` (except the grid app's report, "
            "whose `report_id` becomes the correlation id). Delivery is at-least-once: "
            "consumers must be idempotent (by `message_id` / `order_id` / `reply_id`). "
            "See docs/integrating.md.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {
                "host": "rabbitmq:5672",
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "pathname": "/",
                "description": "RabbitMQ (vhost `/`); each department logs in with its own user.",
                "security": [{"$ref": "#/components/securitySchemes/userPassword"}],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": _schemas(),
            "securitySchemes": {
                "userPassword": {"type": "userPassword", "description": "One RabbitMQ user per department."}
            },
            "correlationIds": {
                "caseCorrelation": {
                    "description": "Carried from the report through every message of the case.",
                    "location": "$message.payload#/correlation_id",
                }
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """No `&id001` anchors: shared parameter objects are written out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    header = "# Generated by docs/gen_asyncapi.py from shared/models.py and shared/topology.py. Do not edit.\n"
    return header + yaml.dump(build(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run python docs/gen_asyncapi.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
