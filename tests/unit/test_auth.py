"""API keys on the real Redis: only a hash is stored, 401 for anything not a live key,
403 for the wrong role or department, and the `gridbus keys` commands."""

from __future__ import annotations

import hashlib

import pytest
import redis
from click.testing import CliRunner

from services.cli import main as gridbus
from services.intake import auth
from services.intake.auth import Forbidden, Principal, Role, Unauthorized, authenticate, require
from shared import redis_keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_authenticates_as_its_role_and_department(redis_client: redis.Redis) -> None:
    key, info = auth.create_key(redis_client, "department", "gas", "燃气值班")
    p = authenticate(bearer(key), redis_client)
    assert p == Principal(Role.department, "gas", info.key_id)
    assert p.actor == f"department:gas:{info.key_id}"
    # header names are case-insensitive even in a plain dict
    assert authenticate({"authorization": f"bearer {key}"}, redis_client).key_id == info.key_id


def test_only_the_hash_of_the_secret_is_stored(stack_env: dict[str, str], redis_client: redis.Redis) -> None:
    key, info = auth.create_key(redis_client, "ops")
    secret = key.split(".", 1)[1]
    stored = redis_client.hgetall(redis_keys.api_key(info.key_id))
    assert secret not in "".join(stored.values())
    assert stored["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert redis_keys.api_key(info.key_id).startswith(stack_env["REDIS_KEY_PREFIX"] + ":")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer gbk_000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
    ],
)
def test_missing_or_malformed_or_unknown_keys_are_401(redis_client: redis.Redis, headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized) as info:
        authenticate(headers, redis_client)
    assert info.value.status == 401


def test_a_wrong_secret_for_a_real_id_is_401(redis_client: redis.Redis) -> None:
    key, _ = auth.create_key(redis_client, "grid_app")
    key_id = key.split(".", 1)[0]
    with pytest.raises(Unauthorized):
        authenticate(bearer(f"{key_id}.{'x' * 43}"), redis_client)


def test_revoked_key_is_401_at_once_and_its_hash_is_gone(redis_client: redis.Redis) -> None:
    key, info = auth.create_key(redis_client, "open311")
    assert authenticate(bearer(key), redis_client).role is Role.open311
    assert auth.revoke_key(redis_client, info.key_id)
    with pytest.raises(Unauthorized):
        authenticate(bearer(key), redis_client)
    assert "secret_sha256" not in redis_client.hgetall(redis_keys.api_key(info.key_id))
    assert not auth.revoke_key(redis_client, "ffffffffffff")


def test_use_is_recorded_as_last_used(redis_client: redis.Redis) -> None:
    key, info = auth.create_key(redis_client, "ops", name="值班")
    assert auth.list_keys(redis_client)[0].last_used_at is None
    authenticate(bearer(key), redis_client)
    listed = {k.key_id: k for k in auth.list_keys(redis_client)}
    assert listed[info.key_id].last_used_at is not None and listed[info.key_id].name == "值班"


def test_department_keys_need_a_department_and_others_must_not_have_one(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError):
        auth.create_key(redis_client, "department")
    with pytest.raises(ValueError):
        auth.create_key(redis_client, "ops", "gas")
    with pytest.raises(ValueError):
        auth.create_key(redis_client, "admin")


def test_require_checks_role_then_department() -> None:
    gas = Principal(Role.department, "gas", "k1")
    ops = Principal(Role.ops, None, "k2")
    assert require(gas, "department", dept="gas") is gas
    assert require(ops, Role.ops, Role.grid_app, dept="gas") is ops  # ops is not department-bound
    with pytest.raises(Forbidden) as info:
        require(gas, "department", dept="power")
    assert info.value.status == 403 and "gas" in info.value.message
    with pytest.raises(Forbidden):
        require(gas, "ops", "grid_app")
    with pytest.raises(Forbidden):
        require(Principal(Role.open311, None, "k3"), "ops")


def test_keys_commands_create_list_revoke(stack_env: dict[str, str], redis_client: redis.Redis) -> None:
    runner = CliRunner()
    out = runner.invoke(
        gridbus, ["keys", "create", "--role", "department", "--dept", "gas", "--name", "duty"], catch_exceptions=False
    )
    assert out.exit_code == 0, out.output
    key = out.stdout.strip()
    assert key.startswith("gbk_") and "\n" not in key
    key_id = key[4:].split(".", 1)[0]
    assert authenticate(bearer(key), redis_client).dept == "gas"

    listing = runner.invoke(gridbus, ["keys", "list"], catch_exceptions=False).stdout
    assert key_id in listing and "department" in listing and "gas" in listing and "duty" in listing
    assert key.split(".", 1)[1] not in listing

    bad = runner.invoke(gridbus, ["keys", "create", "--role", "department", "--dept", "nope"])
    assert bad.exit_code == 2 and "unknown department" in bad.output
    bad = runner.invoke(gridbus, ["keys", "create", "--role", "ops", "--dept", "gas"])
    assert bad.exit_code == 2

    assert runner.invoke(gridbus, ["keys", "revoke", key_id]).exit_code == 0
    assert "revoked" in runner.invoke(gridbus, ["keys", "list"]).stdout
    with pytest.raises(Unauthorized):
        authenticate(bearer(key), redis_client)
    assert runner.invoke(gridbus, ["keys", "revoke", "ffffffffffff"]).exit_code == 1


def test_station_keys_are_bound_to_a_street(stack_env: dict[str, str], redis_client: redis.Redis) -> None:
    runner = CliRunner()
    out = runner.invoke(
        gridbus, ["keys", "create", "--role", "station", "--street", "450305003"], catch_exceptions=False
    )
    assert out.exit_code == 0, out.output
    who = authenticate(bearer(out.stdout.strip()), redis_client)
    assert (who.role, who.street, who.dept) == (Role.station, "450305003", None)
    assert who.actor == f"station:450305003:{who.key_id}"
    assert "450305003" in runner.invoke(gridbus, ["keys", "list"]).stdout
    bad = runner.invoke(gridbus, ["keys", "create", "--role", "station"])
    assert bad.exit_code == 2 and "--street" in bad.output
    bad = runner.invoke(gridbus, ["keys", "create", "--role", "station", "--street", "450305999"])
    assert bad.exit_code == 2
    bad = runner.invoke(gridbus, ["keys", "create", "--role", "ops", "--street", "450305003"])
    assert bad.exit_code == 2 and "not bound to a street" in bad.output


@pytest.mark.parametrize("limit", ["20/100", "0"])
def test_the_http_gate_checks_key_and_rate_limit_in_one_script(redis_client: redis.Redis, limit: str) -> None:
    """intake's gate (RateLimiter.admit): the key, its role, a token of its bucket and
    last_used_at in one script (with limiting off, no bucket)."""
    from services.intake.ratelimit import RateLimiter
    from shared.config import Settings

    key, info = auth.create_key(redis_client, "grid_app")
    assert auth.list_keys(redis_client)[0].last_used_at is None
    limiter = RateLimiter(redis_client, Settings(rate_limit_grid_app=limit))
    who = limiter.admit(key, (Role.grid_app, Role.ops), auth.use_time())
    assert who == Principal(Role.grid_app, None, info.key_id)
    assert auth.list_keys(redis_client)[0].last_used_at is not None
    bucket = redis_client.hgetall(redis_keys.rate_bucket(info.key_id))
    assert (float(bucket["tokens"]) == 99.0) if limit != "0" else not bucket


def test_the_http_gate_refuses_as_authenticate_and_require_do(redis_client: redis.Redis) -> None:
    from services.intake.boundary import RateLimited
    from services.intake.ratelimit import RateLimiter
    from shared.config import Settings

    key, info = auth.create_key(redis_client, "department", "gas")
    limiter = RateLimiter(redis_client, Settings(rate_limit_department="1/2"))
    bucket = redis_keys.rate_bucket(info.key_id)
    # a wrong secret, a malformed or unknown key: 401, and nothing written (a stranger who
    # knows the public key id cannot spend its bucket or fake its last use)
    for bad in (f"gbk_{info.key_id}.{'x' * 43}", "gbk_nope", f"gbk_{'0' * 12}.{'y' * 43}", ""):
        with pytest.raises(Unauthorized):
            limiter.admit(bad, (Role.department,), auth.use_time())
    assert not redis_client.exists(bucket) and auth.list_keys(redis_client)[0].last_used_at is None
    # the wrong role: 403 naming what it needs, the use recorded, no token taken
    with pytest.raises(Forbidden, match="needs grid_app, ops"):
        limiter.admit(key, (Role.grid_app, Role.ops), auth.use_time())
    assert not redis_client.exists(bucket) and auth.list_keys(redis_client)[0].last_used_at is not None
    # the burst of 2, then 429 with Retry-After
    assert limiter.admit(key, (Role.department,), auth.use_time()).dept == "gas"
    limiter.admit(key, (Role.department,), auth.use_time())
    with pytest.raises(RateLimited) as limited:
        limiter.admit(key, (Role.department,), auth.use_time())
    assert limited.value.headers["Retry-After"] == "1"
    # a revoked key: 401
    auth.revoke_key(redis_client, info.key_id)
    with pytest.raises(Unauthorized):
        limiter.admit(key, (Role.department,), auth.use_time())
