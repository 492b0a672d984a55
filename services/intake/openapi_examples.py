"""Examples for every operation of the OpenAPI document (request bodies and answers).

They are realistic Qixing data (the report's coordinates resolve to a patch of
config/grid.yaml) and a test validates each against the model its schema comes from, so
an example cannot drift from the code. README's "Try it" uses the same report body.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from services.intake.reports.meeting import Agenda

CASE_ID = "450305-20261127-000123"

REPORT: dict[str, Any] = {
    "report_id": "a1f3c2e8-5b7d-4e21-9c3a-2f6d8e0b1a47",
    "category": "01037",
    "description": "羊角山社区穿山路连续三盏路灯不亮",
    "severity": "normal",
    "filing_condition": "连续3盏以上不亮",
    "location": {"lat": 25.2620, "lon": 110.3350, "address": "七星区穿山路36号"},
    "media_urls": ["https://grid.example.gov.cn/media/a1f3c2e8/photo1.jpg"],
    "reporter": {"id": "w-1024", "role": "grid_officer", "name": "网格员 黄", "phone": "13900000007"},
    "observed_at": "2026-11-27T09:30:00+08:00",
}
ACCEPTED = {"case_id": CASE_ID, "status": "registered"}
REPLIES = {
    "acknowledge": {"reply_id": "lighting-7781", "action": "acknowledge", "note": "已派人赶往现场"},
    "resolve": {
        "reply_id": "lighting-7790",
        "action": "resolve",
        "note": "已更换三盏灯具，恢复照明",
        "mode": "service",
        "evidence_urls": ["https://lighting.example.gov.cn/orders/7790/after.jpg"],
    },
    "reject": {"reply_id": "lighting-7782", "action": "reject", "reason": "该路段路灯属小区物业，非市政照明"},
    "suspend": {"reply_id": "lighting-7785", "action": "suspend", "reason": "等待灯杆配件到货", "note": "预计3天"},
}
ASSIGNMENT = {
    "dept": "lighting",
    "street": "450305003",
    "level": 3,
    "route": "root/lighting",
    "sla_policy": "default",
    "mode": "service",
    "order_id": f"{CASE_ID}/1/lighting",
    "dispatched_at": "2026-11-27T01:31:02Z",
    "ack_due": "2026-11-27T02:31:02Z",
    "handle_due": "2026-11-28T01:31:02Z",
    "reason": "category 01037 → lighting",
    "active": True,
    "acknowledged_at": "2026-11-27T01:40:11Z",
    "resolved_at": None,
    "rejected_reason": None,
}
CASE: dict[str, Any] = {
    "case_id": CASE_ID,
    "report_id": REPORT["report_id"],
    "correlation_id": REPORT["report_id"],
    "status": "acknowledged",
    "version": 4,
    "category": "01037",
    "severity": "normal",
    "filing_condition": "连续3盏以上不亮",
    "description": REPORT["description"],
    "location": {**REPORT["location"], "grid": "450305003002001"},
    "grid": "450305003002001",
    "street": "450305003",
    "attributes": {},
    "media_urls": REPORT["media_urls"],
    "reporter_id": "w-1024",
    "reporter_role": "grid_officer",
    "observed_at": REPORT["observed_at"],
    "registered_at": "2026-11-27T01:31:01Z",
    "updated_at": "2026-11-27T01:40:11Z",
    "assignments": [ASSIGNMENT],
    "timeline": [
        {
            "at": "2026-11-27T01:31:01Z",
            "actor": "reporter:w-1024",
            "action": "report",
            "to_status": "reported",
            "note": REPORT["description"],
        },
        {
            "at": "2026-11-27T01:31:01Z",
            "actor": "intake",
            "action": "register",
            "from_status": "reported",
            "to_status": "registered",
            "note": "路灯 @ 穿山街道/羊角山社区/羊角山社区第一片区",
        },
        {
            "at": "2026-11-27T01:31:02Z",
            "actor": "router",
            "action": "dispatch",
            "from_status": "registered",
            "to_status": "dispatched",
            "note": "round 1: dispatched to lighting@L3 via root/lighting",
        },
        {
            "at": "2026-11-27T01:40:11Z",
            "actor": "dept:lighting",
            "action": "acknowledge",
            "from_status": "dispatched",
            "to_status": "acknowledged",
            "note": "已派人赶往现场",
        },
    ],
    "resolution": None,
    "rework_count": 0,
    "rejected_by": [],
    "disputed": False,
    "duplicate_of": None,
    "duplicates": [],
    "suspension_request": None,
}
LIST_ITEM = {
    k: CASE[k]
    for k in (
        "case_id",
        "report_id",
        "status",
        "category",
        "severity",
        "grid",
        "street",
        "location",
        "description",
        "registered_at",
        "updated_at",
        "assignments",
    )
}
CASE_PAGE = {"items": [LIST_ITEM], "next_cursor": "WzE3OTQ0NjIyNjEuMCwiNDUwMzA1LTIwMjYxMTI3LTAwMDEyMyJd", "scanned": 1}


def answer(status: str, version: int, applied: bool = True) -> dict[str, Any]:
    return {"case_id": CASE_ID, "status": status, "version": version, "applied": applied}


ERRORS_422 = {"errors": [{"field": "location.lat", "message": "Input should be less than or equal to 90"}]}
ERRORS_401 = {"errors": [{"field": "Authorization", "message": "missing Authorization: Bearer <API key>"}]}
VERIFICATION = {
    "result": "pass",
    "note": "现场复核，三盏路灯均已恢复",
    "verifier": "网格员 黄",
    "photo_urls": ["https://grid.example.gov.cn/media/check/7790.jpg"],
}
SUSPENSION = {"decision": "approve", "approver": "指挥中心 值班长 莫", "note": "同意挂起3天"}
CANCELLATION = {"reason": "重复上报，且现场无此问题"}
DISPATCH = {
    "dispatch_id": "ops-20261127-0042",
    "departments": ["municipal"],
    "level": 3,
    "note": "经现场核实为市政井盖，派市政处置",
}
EVALUATION = {"evaluation_id": "eval-w1024-000123", "rating": "satisfied", "note": "处理及时", "evaluator": "w-1024"}
CATALOG = {
    "count": 1,
    "classes": [
        {
            "class_code": "01",
            "class_name": "公用设施",
            "kind": "component",
            "categories": [{"code": "01037", "name": "路灯", "kind": "component", "local": False}],
        }
    ],
}
O311_SERVICE = {
    "service_code": "01037",
    "service_name": "路灯",
    "description": "公用设施 · 路灯",
    "metadata": False,
    "type": "realtime",
    "keywords": "",
    "group": "公用设施",
}
O311_REQUEST = {
    "service_request_id": CASE_ID,
    "status": "open",
    "status_notes": "",
    "service_name": "路灯",
    "service_code": "01037",
    "description": REPORT["description"],
    "agency_responsible": "七星区照明管理所",
    "service_notice": "",
    "requested_datetime": "2026-11-27T09:31:01+08:00",
    "updated_datetime": "2026-11-27T09:40:11+08:00",
    "expected_datetime": "2026-11-28T09:31:02+08:00",
    "address": "七星区穿山路36号",
    "lat": 25.2620,
    "long": 110.3350,
}
O311_FORM = {
    "api_key": "gbk_0123456789ab.<secret>",
    "service_code": "01037",
    "lat": 25.2620,
    "long": 110.3350,
    "address_string": "七星区穿山路36号",
    "description": "穿山路路灯不亮",
}
MEETING = Agenda(
    street="450305003",
    street_name="穿山街道",
    start=datetime.fromisoformat("2026-11-01T00:00:00+08:00"),
    end=datetime.fromisoformat("2026-11-30T23:59:59+08:00"),
    cases=42,
    hot_spot_min=3,
    merchant_min=2,
).as_dict()
LEDGER = {
    "from": "2026-11-01T00:00:00+08:00",
    "to": "2026-11-27T18:00:00+08:00",
    "count": 0,
    "entries": [],
    "departments": [],
    "liaisons": [],
}

CITY_TASK = {
    "specversion": "1.0",
    "id": "gl12345-evt-0042",
    "source": "urn:guilin:12345",
    "type": "cn.gov.guilin.12345.task.created",
    "time": "2026-12-01T09:12:00+08:00",
    "datacontenttype": "application/json",
    "data": {
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
}

# (method, path) → {"request": body example, "<status>": answer example}
EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/reports"): {
        "request": REPORT,
        "202": ACCEPTED,
        "200": ACCEPTED,
        "422": ERRORS_422,
        "401": ERRORS_401,
    },
    ("post", "/v1/city/tasks"): {
        "request": CITY_TASK,
        "202": ACCEPTED,
        "200": ACCEPTED,
        "422": {"errors": [{"field": "data.category", "message": "String should match pattern '^\\d{5}$'"}]},
        "401": ERRORS_401,
    },
    ("get", "/v1/cases"): {"200": CASE_PAGE},
    ("get", "/v1/cases/{case_id}"): {"200": CASE},
    ("post", "/v1/cases/{case_id}/replies"): {"request": REPLIES, "200": answer("acknowledged", 4)},
    ("post", "/v1/cases/{case_id}/verification"): {"request": VERIFICATION, "200": answer("closed", 7)},
    ("post", "/v1/cases/{case_id}/suspension"): {"request": SUSPENSION, "200": answer("suspended", 6)},
    ("post", "/v1/cases/{case_id}/cancellation"): {"request": CANCELLATION, "200": answer("cancelled", 3)},
    ("post", "/v1/cases/{case_id}/dispatch"): {"request": DISPATCH, "202": answer("dispatched", 5)},
    ("post", "/v1/cases/{case_id}/evaluation"): {"request": EVALUATION, "200": answer("closed", 8)},
    ("get", "/v1/accountability"): {"200": LEDGER},
    ("get", "/v1/reports/meeting"): {"200": MEETING},
    ("get", "/v1/catalog"): {"200": CATALOG},
    ("get", "/healthz"): {"200": {"status": "ok"}},
    ("get", "/openapi.json"): {"200": {"openapi": "3.1.0", "info": {"title": "gridbus intake"}, "paths": {}}},
    ("get", "/open311/v2/services.json"): {"200": [O311_SERVICE]},
    ("get", "/open311/v2/services/{service_code}.json"): {"200": {"service_code": "01037", "attributes": []}},
    ("post", "/open311/v2/requests.json"): {
        "request": O311_FORM,
        "201": [{"service_request_id": CASE_ID, "service_notice": ""}],
    },
    ("get", "/open311/v2/requests.json"): {"200": [O311_REQUEST]},
    ("get", "/open311/v2/requests/{service_request_id}.json"): {"200": [O311_REQUEST]},
}


def apply(paths: dict[str, Any]) -> dict[str, Any]:
    """`paths` with the examples set on request bodies (`examples` when there are
    several, e.g. one per reply action) and on answers that have a JSON body."""
    paths = copy.deepcopy(paths)
    for (method, path), examples in EXAMPLES.items():
        op = paths.get(path, {}).get(method)
        if op is None:
            continue  # an operation that is gone: the test names it
        for key, value in examples.items():
            # answers are shared between operations (E401 …): each gets its own copy
            if key == "request" and "requestBody" in op:
                op["requestBody"] = copy.deepcopy(op["requestBody"])
                for media in op["requestBody"].get("content", {}).values():
                    if value is REPLIES:
                        media["examples"] = {name: {"value": body} for name, body in value.items()}
                    else:
                        media["example"] = value
            elif key in op.get("responses", {}):
                op["responses"][key] = copy.deepcopy(op["responses"][key])
                media = op["responses"][key].get("content", {}).get("application/json")
                if media is not None:
                    media["example"] = value
    return paths
