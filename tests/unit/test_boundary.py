"""intake's HTTP boundary without a server: the mapped-errors table and the bounded
body read (the running server is tests/e2e/test_hostile.py)."""

from __future__ import annotations

import io
import json

import pytest
import redis

from services.intake import open311
from services.intake.auth import Forbidden, Unauthorized
from services.intake.boundary import BodyTooLarge, RateLimited, error_response, problem_of, read_body
from services.intake.replies import NoSuspensionRequested, NotAssigned
from services.intake.store import CaseNotFound, VersionConflict
from services.intake.validation import FieldError, InvalidInput
from shared.lifecycle import Action, IllegalTransition
from shared.models import CaseStatus
from shared.resilience import DependencyUnavailable


@pytest.mark.parametrize(
    "exc, status, field",
    [
        (InvalidInput([FieldError("location.lat", "too big")]), 422, "location.lat"),
        (Unauthorized("no key"), 401, "Authorization"),
        (Forbidden("wrong role"), 403, "Authorization"),
        (CaseNotFound("x"), 404, "case_id"),
        (NotAssigned("not yours"), 403, "case_id"),
        (BodyTooLarge("too big"), 413, ""),
        (RateLimited("slow down", "Authorization", {"Retry-After": "3"}), 429, "Authorization"),
        (redis.ConnectionError("refused"), 503, ""),
        (redis.TimeoutError("slow"), 503, ""),
        (redis.BusyLoadingError("loading"), 503, ""),
        (DependencyUnavailable("broker", "publish refused"), 503, ""),
        (VersionConflict("x"), 503, ""),
    ],
)
def test_every_known_error_has_its_answer(exc: Exception, status: int, field: str) -> None:
    resp = error_response(exc)
    body = json.loads(resp.get_data())
    assert resp.status_code == status and resp.mimetype == "application/json"
    assert body["errors"][0]["field"] == field
    if status in (429, 503):
        assert int(resp.headers["Retry-After"]) >= 1
    if status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_conflicts_keep_their_shape() -> None:
    body = json.loads(error_response(IllegalTransition(CaseStatus.closed, Action.verify_pass)).get_data())
    assert body["error"] == "illegal_transition" and body["current"] == "closed"
    assert json.loads(error_response(NoSuspensionRequested("none")).get_data())["error"] == "no_suspension_requested"


def test_open311_errors_are_its_own_shape() -> None:
    resp = error_response(Unauthorized("bad key"), style="open311")
    assert resp.status_code == 403 and json.loads(resp.get_data())[0]["code"] == 403
    resp = error_response(open311.Open311Error(404, "service_code 1 not found"), style="open311")
    assert json.loads(resp.get_data()) == [{"code": 404, "description": "service_code 1 not found"}]


def test_an_unexpected_error_is_a_500_with_a_logged_id(capsys: pytest.CaptureFixture[str]) -> None:
    p = problem_of(ZeroDivisionError("a bug"))
    assert p.status == 500
    error_id = p.message.split()[2].rstrip(";")
    err = capsys.readouterr()
    assert error_id in err.out + err.err and "ZeroDivisionError" in err.out + err.err


class Chunks(io.RawIOBase):
    """What eventlet's chunked input does: pieces of the decoded body, then b''."""

    def __init__(self, data: bytes, piece: int = 3) -> None:
        self.data, self.piece = data, piece

    def read(self, n: int = -1) -> bytes:
        out, self.data = self.data[: min(n, self.piece)], self.data[min(n, self.piece) :]
        return out


def test_chunked_and_sized_bodies_are_read_to_the_limit() -> None:
    body = b'{"a": 1}'
    assert read_body({"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}, 100) == body
    assert read_body({"wsgi.input": Chunks(body), "HTTP_TRANSFER_ENCODING": "chunked"}, 100) == body
    assert read_body({"wsgi.input": Chunks(b"x" * 100), "HTTP_TRANSFER_ENCODING": "chunked"}, 100) == b"x" * 100
    with pytest.raises(BodyTooLarge):
        read_body({"wsgi.input": Chunks(b"x" * 101, 50), "HTTP_TRANSFER_ENCODING": "chunked"}, 100)
    with pytest.raises(BodyTooLarge):  # refused from the announced length, nothing read
        read_body({"wsgi.input": io.BytesIO(b""), "CONTENT_LENGTH": "101"}, 100)
