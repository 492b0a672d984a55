"""The city-platform bridge through the real services: a 12345 hotline task published as
a CloudEvent is taken in as a report (source and external id kept); the case's events go
out as valid CloudEvents 1.0 (checked with the official SDK) to a real local HTTP server,
carrying the city's task id and grid code for status sync back."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import redis
from cloudevents.core.v1.event import CloudEvent

from services.bridge import cloud
from services.intake.auth import Role, create_key
from services.intake.store import CaseStore
from services.runner import start_all, stop_all
from shared import topology
from shared.amqpclient import body_bytes, channel, connect, connection, message, props, queue_info
from tests.e2e.conftest import free_port, wait_for
from tests.e2e.test_lifecycle import case_of, new_case, reply
from tests.localhttp import LocalHTTP, Reply, Request

pytestmark = pytest.mark.e2e


class CitySink:
    """The city platform's event endpoint: records what it is sent; the first POST fails
    with 503 so that the bridge has to retry."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.failures_left = 1
        self.http = LocalHTTP(self._answer).start()
        self.port = self.http.server.server_address[1]

    def _answer(self, request: Request) -> Reply:
        if self.failures_left:
            self.failures_left -= 1
            return 503, {}, b""
        self.received.append({"headers": request.headers, "body": request.body})
        return 202, {}, b""

    def close(self) -> None:
        self.http.stop()


def test_bridge_takes_a_city_task_in_and_sends_cloudevents_out(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    sink = CitySink()
    env = {
        **stack["env"],
        "BRIDGE_HTTP_URL": f"http://127.0.0.1:{sink.port}/gridbus/events",
        "BRIDGE_AMQP_EXCHANGE": "city.events",
        "BRIDGE_METRICS_PORT": str(free_port()),
    }
    with connection(stack["env"]["AMQP_URI"]) as setup:  # the city's side of AMQP
        sch = channel(setup)
        sch.exchange_declare("city.events", "topic", durable=True, auto_delete=False)
        sch.queue_declare("city.inbox", durable=True, auto_delete=False)
        sch.queue_bind("city.inbox", "city.events", routing_key="cn.gridbus.case.#")
    log = open(stack["log"].parent / "bridge.log", "w")
    procs = start_all(["bridge"], env=env, stdout=log.fileno())
    try:
        conn = connect(stack["env"]["AMQP_URI"])  # our own: passive

        def consuming() -> bool:
            infos = [queue_info(conn, q) for q in (topology.Q_BRIDGE_EVENTS, topology.Q_BRIDGE_INBOUND)]
            return all(info is not None and info[1] > 0 for info in infos)  # None: not declared yet

        assert wait_for(consuming, 60, interval=0.5), (stack["log"].parent / "bridge.log").read_text()[-3000:]
        ch = channel(conn)
        task = CloudEvent(
            {"type": "cn.gov.guilin.12345.task.created", "source": "urn:guilin:12345", "id": "gl12345-evt-0042"},
            {
                "task_id": "GL20261201-0042",
                "system": "12345",
                "category": "03005",
                "description": "市民来电：辰山路垃圾箱破损",
                "lat": 25.2833,
                "lon": 110.3128,
                "address": "七星区辰山路88号",
                "grid": "GL-QX-01-0101",
                "citizen": {"name": "李女士", "phone": "13907730042"},
            },
        )
        headers, body = cloud.http_message(task)
        ch.basic_publish_confirm(
            message(body, content_type=headers["content-type"], delivery_mode=2),
            topology.EX_REPORTS,
            topology.RK_CITY_TASK,
            mandatory=True,
        )

        store = CaseStore(stack_redis, "450305")
        case_id = wait_for(lambda: store.existing_case_for("12345:GL20261201-0042"), 15)
        if not case_id:  # say where it went
            dead = ch.basic_get(topology.dead_queue(topology.Q_BRIDGE_INBOUND), no_ack=True)
            raise AssertionError(f"the city task never became a case: {props(dead)['headers'] if dead else ''}")
        case = wait_for(lambda: (c := case_of(stack, case_id))["status"] == "dispatched" and c, 10)
        assert case, case_of(stack, case_id)
        assert case["source"] == {"system": "12345", "external_id": "GL20261201-0042"}
        assert case["grid"] == "450305001001001" and case["reporter_role"] == "citizen"  # crosswalked back

        def delivered() -> list[CloudEvent]:
            events = [
                cloud.parse(r["body"])
                for r in sink.received
                if r["headers"].get("Content-Type", r["headers"].get("content-type")) == "application/cloudevents+json"
            ]
            mine = [e for e in events if e.get_subject() == case_id]
            return (
                mine
                if {e.get_type() for e in mine} >= {"cn.gridbus.case.registered", "cn.gridbus.case.dispatched"}
                else []
            )

        events = wait_for(delivered, 20)
        assert events, [r["body"][:300] for r in sink.received]
        for e in events:  # valid CloudEvents 1.0 carrying the city's identity of the case
            assert e.get_specversion() == "1.0" and e.get_source() == "urn:gridbus:450305"
            assert e.get_extension("externalid") == "GL20261201-0042"
            assert e.get_extension("externalsystem") == "12345"
            assert e.get_data()["citygrid"] == "GL-QX-01-0101"

        # the same events on the city's AMQP exchange, structured mode, routing key = type
        def on_amqp() -> list[Any]:
            msg = ch.basic_get("city.inbox", no_ack=True)
            if msg is not None:
                got.append((msg.delivery_info["routing_key"], props(msg)["content_type"], cloud.parse(body_bytes(msg))))
            return [g for g in got if g[2].get_subject() == case_id and g[0] == "cn.gridbus.case.dispatched"]

        got: list[Any] = []
        amqp = wait_for(on_amqp, 10)
        assert amqp and amqp[0][1] == "application/cloudevents+json", got
        assert amqp[0][2].get_extension("externalid") == "GL20261201-0042"
        registered = next(r for r in sink.received if case_id.encode() in r["body"] and b"case.registered" in r["body"])
        print("CloudEvent as delivered:", json.dumps(json.loads(registered["body"]), ensure_ascii=False, indent=2))
        # a task that is not valid is dead-lettered with the reason, not lost
        ch.basic_publish_confirm(
            message(b'{"specversion": "1.0"}', content_type="application/cloudevents+json", delivery_mode=2),
            topology.EX_REPORTS,
            topology.RK_CITY_TASK,
            mandatory=True,
        )
        dead = wait_for(lambda: ch.basic_get(topology.dead_queue(topology.Q_BRIDGE_INBOUND), no_ack=True), 10)
        assert dead is not None and "CloudEvents" in str(props(dead)["headers"])
        assert httpx.get(f"http://127.0.0.1:{env['BRIDGE_METRICS_PORT']}/metrics", timeout=5).status_code == 200

        # over HTTP: POST /v1/city/tasks with a city key, and status sync back on every event
        city = {
            "Authorization": f"Bearer {create_key(stack_redis, Role.city)[0]}",
            "Content-Type": "application/cloudevents+json",
        }
        url = f"{stack['base']}/v1/city/tasks"
        task = CloudEvent(
            {"type": "cn.gov.guilin.12345.task.created", "source": "urn:guilin:12345", "id": "gl12345-evt-0043"},
            {
                "task_id": "GL20261201-0043",
                "system": "12345",
                "category": "01037",
                "description": "市民来电：辰山路路灯不亮",
                "lat": 25.2841,
                "lon": 110.3139,
                "address": "七星区辰山路90号",
                "grid": "GL-QX-01-0101",
            },
        )
        _, raw = cloud.http_message(task)
        first = httpx.post(url, content=raw, headers=city, timeout=5)
        assert first.status_code == 202, first.text
        again = httpx.post(url, content=raw, headers=city, timeout=5)
        assert again.status_code == 200 and again.json() == first.json()  # the same task: the same case
        http_case = first.json()["case_id"]
        bad = json.loads(raw)
        bad["data"]["category"] = "abc"
        r = httpx.post(url, content=json.dumps(bad), headers=city, timeout=5)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "data.category", r.text
        r = httpx.post(url, content=b'{"specversion": "1.0"}', headers=city, timeout=5)
        assert r.status_code == 422 and "CloudEvents" in r.json()["errors"][0]["message"], r.text
        assert (
            httpx.post(url, content=raw, headers={**city, "Content-Type": "text/plain"}, timeout=5).status_code == 415
        )
        assert (
            httpx.post(
                url, content=raw, timeout=5, headers={**stack["auth"], "Content-Type": "application/cloudevents+json"}
            ).status_code
            == 403
        )
        # the city key reads what it handed over, and nothing else
        seen = httpx.get(f"{stack['base']}/v1/cases/{http_case}", headers=city, timeout=5)
        assert seen.status_code == 200 and seen.json()["source"]["external_id"] == "GL20261201-0043"
        other = new_case(stack)
        assert httpx.get(f"{stack['base']}/v1/cases/{other}", headers=city, timeout=5).status_code == 404

        dispatched = wait_for(lambda: (c := case_of(stack, http_case))["status"] == "dispatched" and c, 10)
        assert dispatched, case_of(stack, http_case)
        dept = next(a["dept"] for a in dispatched["assignments"] if a["active"])
        dept_key = create_key(stack_redis, Role.department, dept)[0]
        assert reply(stack, dept_key, http_case, "acknowledge", note="已派人").status_code == 200

        def synced() -> list[CloudEvent]:
            mine = [cloud.parse(r["body"]) for r in sink.received if http_case.encode() in r["body"]]
            mine = [e for e in mine if e.get_subject() == http_case]
            return (
                mine
                if any(
                    e.get_type() == "cn.gridbus.case.updated" and e.get_data().get("to_status") == "acknowledged"
                    for e in mine
                )
                else []
            )

        events = wait_for(synced, 20)
        assert events, [r["body"][:200] for r in sink.received][-5:]
        kinds = {e.get_type() for e in events}
        assert {"cn.gridbus.case.registered", "cn.gridbus.case.dispatched", "cn.gridbus.case.updated"} <= kinds
        for e in events:  # every status the city sees names its own task
            assert (e.get_extension("externalsystem"), e.get_extension("externalid")) == ("12345", "GL20261201-0043")
        conn.close()
    finally:
        stop_all(procs)
        log.close()
        sink.close()
