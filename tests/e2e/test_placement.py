"""Every location in the district is accepted, through the real services: an Open311
request with only lat/long outside the mapped patches is placed in its street and routed;
a point in no street outline goes to the district's triage; outside the district the
answer names the neighbouring district."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis

from services.intake import auth
from tests.e2e.conftest import get_from_queue, report, wait_for
from tests.e2e.test_lifecycle import case_of

pytestmark = pytest.mark.e2e


def test_open311_lat_long_only_outside_the_patches_is_placed(stack: dict[str, Any], stack_redis: redis.Redis) -> None:
    key = auth.create_key(stack_redis, "open311")[0]
    # 穿山街道, in no mapped patch (羊角山's patches are further east)
    form = {
        "api_key": key,
        "service_code": "01037",
        "lat": "25.2420",
        "long": "110.3210",
        "description": "路灯不亮",
        "address_string": "穿山路口",
    }
    r = httpx.post(f"{stack['base']}/open311/v2/requests.json", data=form, timeout=5)
    assert r.status_code == 201, r.text
    case_id = r.json()[0]["service_request_id"]
    case = wait_for(lambda: (c := case_of(stack, case_id))["status"] == "dispatched" and c, 10)
    assert case, case_of(stack, case_id)
    assert (case["grid"], case["street"], case["location_resolution"]) == ("450305003", "450305003", "street")
    assert "placed in the street" in case["timeline"][1]["note"]
    assert [a["dept"] for a in case["assignments"]] == ["lighting"]  # the tree still routes it by category

    outside = httpx.post(
        f"{stack['base']}/open311/v2/requests.json", timeout=5, data={**form, "lat": "25.2000", "long": "110.2500"}
    )
    assert outside.status_code == 400 and "象山区" in outside.json()[0]["description"]


def test_point_in_no_street_goes_to_district_triage(stack: dict[str, Any]) -> None:
    body = report(
        location={"lat": 25.1760, "lon": 110.4010, "address": "七星区南部"}, category="03005", filing_condition=None
    )
    r = httpx.post(f"{stack['base']}/v1/reports", json=body, headers=stack["auth"], timeout=5)
    assert r.status_code == 202, r.text
    case_id = r.json()["case_id"]
    order = get_from_queue(stack["channel"], "dept.station", case_id, timeout=10)
    assert order is not None and (order["body"]["route"], order["body"]["level"]) == ("district_triage", 2)
    case = case_of(stack, case_id)
    assert (case["grid"], case["street"], case["location_resolution"]) == ("450305", "450305", "district")

    far = report(location={"lat": 25.2000, "lon": 110.2500, "address": "象山区"})
    r = httpx.post(f"{stack['base']}/v1/reports", json=far, headers=stack["auth"], timeout=5)
    assert r.status_code == 422
    err = r.json()["errors"][0]
    assert err["field"] == "location" and "象山区 (450304)" in err["message"]
