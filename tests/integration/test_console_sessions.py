"""Console sessions on the real Redis: a cookie is worthless after logging out or once
its key is revoked; only ops and station keys may log in; the CSRF token is per session."""

from __future__ import annotations

import pytest
import redis

from services.intake.auth import AuthError, Role, create_key, revoke_key
from services.intake.console import sessions

pytestmark = pytest.mark.integration


@pytest.fixture()
def client(stack_env: dict[str, str]) -> redis.Redis:
    return redis.Redis.from_url(stack_env["REDIS_URL"], decode_responses=True)


def test_logout_and_revocation_end_a_session(client: redis.Redis) -> None:
    key, info = create_key(client, Role.ops, name="console test")
    first = sessions.log_in(client, key, ("ops", "station"))
    second = sessions.log_in(client, key, ("ops", "station"))
    assert sessions.current(client, first.cookie_value).principal.key_id == info.key_id
    assert first.csrf != second.csrf and sessions.csrf_ok(first, first.csrf)
    assert not sessions.csrf_ok(first, second.csrf) and not sessions.csrf_ok(first, None)
    sessions.log_out(client, first)
    with pytest.raises(sessions.NotLoggedIn):
        sessions.current(client, first.cookie_value)
    assert sessions.current(client, second.cookie_value)  # another browser stays logged in
    revoke_key(client, info.key_id)
    with pytest.raises(sessions.NotLoggedIn):
        sessions.current(client, second.cookie_value)


def test_a_cookie_of_another_key_or_a_forged_one_is_refused(client: redis.Redis) -> None:
    a, _ = create_key(client, Role.ops)
    b, _ = create_key(client, Role.ops)
    session = sessions.log_in(client, a, ("ops",))
    for forged in (f"{session.session_id}.{b}", "nosuch.session", "", None, session.session_id):
        with pytest.raises(sessions.NotLoggedIn):
            sessions.current(client, forged)


def test_only_console_roles_may_log_in(client: redis.Redis) -> None:
    key, _ = create_key(client, Role.grid_app)
    with pytest.raises(AuthError, match="cannot use the console"):
        sessions.log_in(client, key, ("ops", "station"))
    with pytest.raises(AuthError):
        sessions.log_in(client, "gbk_000000000000.notakeynotakeynotakey", ("ops",))
