"""End to end: the case query API, API keys and Open311 GeoReport v2 against the real
stack (the four services as processes, real RabbitMQ and Redis)."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import redis

from services.intake import auth, openapi
from shared.departments import load_departments
from tests.e2e.conftest import report, spread_location, wait_for

pytestmark = pytest.mark.e2e

# points inside the polygon of patch 450305001001001 (Open311 requests carry no grid
# code, so the cell is found by position), ~170 m apart so they are not near-duplicates
_POINTS = itertools.count()


def open311_point() -> tuple[str, str]:
    n = next(_POINTS)
    return f"{25.2765 + (n % 5) * 0.0015:.4f}", f"{110.3105 + (n // 5) * 0.0015:.4f}"


@pytest.fixture()
def keys(stack_redis: redis.Redis) -> dict[str, str]:
    made = {
        "ops": auth.create_key(stack_redis, "ops")[0],
        "grid_app": auth.create_key(stack_redis, "grid_app")[0],
        "lighting": auth.create_key(stack_redis, "department", "lighting")[0],
        "gas": auth.create_key(stack_redis, "department", "gas")[0],
        "open311": auth.create_key(stack_redis, "open311")[0],
    }
    revoked, info = auth.create_key(stack_redis, "ops")
    auth.revoke_key(stack_redis, info.key_id)
    made["revoked"] = revoked
    return made


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def get(stack: dict[str, Any], path: str, key: str | None = None, **params: Any) -> httpx.Response:
    return httpx.get(f"{stack['base']}{path}", params=params, headers=bearer(key) if key else {}, timeout=10)


def post_reports(stack: dict[str, Any], n: int, grid: str = "450305001001001") -> list[str]:
    """n reports of a dark street lamp, each at its own place (not near-duplicates)."""
    ids = []
    for _ in range(n):
        r = httpx.post(
            f"{stack['base']}/v1/reports", json=report(location=spread_location(grid)), headers=stack["auth"], timeout=5
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["case_id"])
    return ids


def all_pages(stack: dict[str, Any], key: str, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    while True:
        r = get(stack, "/v1/cases", key, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append([c["case_id"] for c in body["items"]])
        if not body.get("next_cursor"):
            return pages
        params["cursor"] = body["next_cursor"]
        assert len(pages) < 50, "the cursor does not advance"


def test_openapi_document_is_served_without_a_key(stack: dict[str, Any]) -> None:
    r = get(stack, "/openapi.json")
    assert r.status_code == 200 and r.json() == openapi.document()


def test_listing_needs_a_key_with_a_listing_role(stack: dict[str, Any], keys: dict[str, str]) -> None:
    r = get(stack, "/v1/cases")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["errors"][0]["field"] == "Authorization"
    assert get(stack, "/v1/cases", "gbk_000000000000." + "A" * 43).status_code == 401
    assert get(stack, "/v1/cases", keys["revoked"]).status_code == 401
    assert (
        httpx.get(f"{stack['base']}/v1/cases", headers={"Authorization": f"Basic {keys['ops']}"}, timeout=5).status_code
        == 401
    )
    assert get(stack, "/v1/cases", keys["open311"]).status_code == 403
    assert get(stack, "/v1/cases", keys["gas"], dept="lighting").status_code == 403
    for role in ("ops", "grid_app", "lighting"):
        assert get(stack, "/v1/cases", keys[role], limit=1).status_code == 200
    r = get(stack, "/v1/cases", keys["ops"], status="open", limit=0)
    assert r.status_code == 422 and {e["field"] for e in r.json()["errors"]} == {"status", "limit"}


def test_pages_filters_and_department_scope(stack: dict[str, Any], keys: dict[str, str]) -> None:
    since = datetime.now(timezone.utc).isoformat()
    lamps = post_reports(stack, 5)  # 01037 → lighting
    other_patch = post_reports(stack, 2, grid="450305001002001")

    pages = all_pages(stack, keys["ops"], since=since, limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == lamps + other_patch  # registration order

    assert [i for p in all_pages(stack, keys["grid_app"], since=since, grid="450305001002") for i in p] == other_patch
    assert [i for p in all_pages(stack, keys["ops"], since=since, grid="450305001001001", limit=2) for i in p] == lamps
    assert all_pages(stack, keys["ops"], since=since, category="02") == [[]]

    # router dispatches every one of them to lighting (asynchronously)
    def dispatched() -> list[str]:
        return [i for p in all_pages(stack, keys["ops"], since=since, status="dispatched", dept="lighting") for i in p]

    assert wait_for(lambda: dispatched() == lamps + other_patch, timeout=10), [
        (c["case_id"], c["status"]) for c in get(stack, "/v1/cases", keys["ops"], since=since).json()["items"]
    ]
    assert all_pages(stack, keys["ops"], since=since, status="registered") == [[]]

    # a department sees its own cases, and only those
    mine = [i for p in all_pages(stack, keys["lighting"], since=since, limit=4) for i in p]
    assert mine == lamps + other_patch
    assert all_pages(stack, keys["gas"], since=since) == [[]]
    item = get(stack, "/v1/cases", keys["lighting"], since=since, limit=1).json()["items"][0]
    assert item["case_id"] == lamps[0] and item["assignments"][0]["dept"] == "lighting"
    assert "timeline" not in item


def test_open311_round_trip(stack: dict[str, Any], keys: dict[str, str]) -> None:
    base = f"{stack['base']}/open311/v2"
    services = httpx.get(f"{base}/services.json", timeout=5).json()
    lamp = next(s for s in services if s["service_code"] == "01037")
    assert lamp["service_name"] == "路灯" and lamp["metadata"] is False
    assert httpx.get(f"{base}/services/01037.json", timeout=5).json() == {"service_code": "01037", "attributes": []}
    r = httpx.get(f"{base}/services/99999.json", timeout=5)
    assert r.status_code == 404 and r.json()[0]["code"] == 404

    lat, lon = open311_point()
    form = {
        "api_key": keys["open311"],
        "service_code": "01037",
        "lat": lat,
        "long": lon,
        "address_string": "七星区辰山路路口",
        "description": "路灯整夜不亮",
        "first_name": "李",
        "media_url": "https://img.example/lamp.jpg",
    }
    r = httpx.post(f"{base}/requests.json", data=form, timeout=5)
    assert r.status_code == 201, r.text
    [created] = r.json()
    sid = created["service_request_id"]
    assert sid.startswith("450305-") and created["service_notice"]

    def fetch() -> dict[str, Any]:
        r = httpx.get(f"{base}/requests/{sid}.json", params={"api_key": keys["open311"]}, timeout=5)
        assert r.status_code == 200, r.text
        [req] = r.json()
        return req

    req = fetch()
    assert req["status"] == "open" and req["service_code"] == "01037" and req["service_name"] == "路灯"
    assert (req["lat"], req["long"]) == (float(lat), float(lon)) and req["address"] == "七星区辰山路路口"
    assert req["description"] == "路灯整夜不亮" and req["media_url"] == "https://img.example/lamp.jpg"
    assert req["requested_datetime"].endswith("+08:00")

    lighting = next(d for d in load_departments() if d.code == "lighting")
    dispatched = wait_for(lambda: (lambda q: q if q["agency_responsible"] else None)(fetch()), timeout=10)
    assert dispatched, "the request never got an agency"
    assert dispatched["agency_responsible"] == (lighting.full_name or lighting.name)
    assert dispatched["status"] == "open" and dispatched["status_notes"]

    # the case behind it: a citizen report traced to the key
    case = httpx.get(f"{stack['base']}/v1/cases/{sid}", headers=stack["auth"], timeout=5).json()
    key_id = keys["open311"][4:].split(".", 1)[0]
    assert case["reporter_role"] == "citizen" and case["reporter_id"] == key_id

    listed = httpx.get(
        f"{base}/requests.json", params={"api_key": keys["open311"], "service_request_id": sid}, timeout=5
    ).json()
    assert [q["service_request_id"] for q in listed] == [sid]
    listed = httpx.get(
        f"{base}/requests.json",
        params={"status": "open", "service_code": "01037"},
        headers=bearer(keys["ops"]),
        timeout=5,
    ).json()
    assert sid in [q["service_request_id"] for q in listed]
    closed = httpx.get(
        f"{base}/requests.json", params={"api_key": keys["open311"], "status": "closed"}, timeout=5
    ).json()
    assert sid not in [q["service_request_id"] for q in closed]


def test_open311_idempotency_key_repeats_the_same_request(stack: dict[str, Any], keys: dict[str, str]) -> None:
    lat, lon = open311_point()
    form = {"api_key": keys["open311"], "service_code": "01037", "lat": lat, "long": lon}
    first = httpx.post(
        f"{stack['base']}/open311/v2/requests.json", data=form, headers={"Idempotency-Key": "retry-1"}, timeout=5
    )
    again = httpx.post(
        f"{stack['base']}/open311/v2/requests.json", data=form, headers={"Idempotency-Key": "retry-1"}, timeout=5
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()[0]["service_request_id"] == again.json()[0]["service_request_id"]


def test_open311_errors_are_code_description_lists(stack: dict[str, Any], keys: dict[str, str]) -> None:
    url = f"{stack['base']}/open311/v2/requests.json"
    lat, lon = open311_point()
    good = {"service_code": "01037", "lat": lat, "long": lon}

    def post(**form: str) -> httpx.Response:
        return httpx.post(url, data=form, timeout=5)

    for bad_key in ({}, {"api_key": "nope"}, {"api_key": keys["lighting"]}, {"api_key": keys["revoked"]}):
        r = post(**good, **bad_key)
        assert r.status_code == 403 and r.json()[0]["code"] == 403 and "api_key" in r.json()[0]["description"]
    r = post(api_key=keys["open311"], service_code="99999", lat=lat, long=lon)
    assert r.status_code == 404 and r.json()[0]["code"] == 404
    r = post(api_key=keys["open311"], service_code="01037", lat=lat)
    assert r.status_code == 400 and "long" in r.json()[0]["description"]
    r = post(api_key=keys["open311"], service_code="01037", lat="39.9", long="116.4")  # Beijing
    assert r.status_code == 400 and r.json()[0]["code"] == 400

    assert httpx.get(url, timeout=5).status_code == 403
    r = httpx.get(url, params={"api_key": keys["open311"], "status": "pending"}, timeout=5)
    assert r.status_code == 400 and "status" in r.json()[0]["description"]
    r = httpx.get(
        f"{stack['base']}/open311/v2/requests/450305-20000101-999999.json",
        params={"api_key": keys["open311"]},
        timeout=5,
    )
    assert r.status_code == 404 and r.json()[0]["code"] == 404
