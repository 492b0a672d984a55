"""Webhook signatures: the receiver's `verify` against what the sender produces."""

from __future__ import annotations

import hashlib
import hmac

from services.notifier import signing

BODY = '{"delivery_id":"d-1","event":{"case_id":"450305-20261127-000123"}}'.encode()
NOW = 1_795_765_800


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"s3cret", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    headers = signing.sign_headers("s3cret", "d-1", BODY, now=NOW)
    assert headers == {
        "X-Gridbus-Timestamp": str(NOW),
        "X-Gridbus-Delivery": "d-1",
        "X-Gridbus-Signature": f"sha256={expected}",
    }


def test_verify_accepts_fresh_signature_with_any_header_case() -> None:
    headers = signing.sign_headers("s3cret", "d-1", BODY, now=NOW)
    assert signing.verify("s3cret", headers, BODY, now=NOW + 10)
    lowered = {k.lower(): v for k, v in headers.items()}
    assert signing.verify("s3cret", lowered, BODY, now=NOW + 10)


def test_verify_rejects_wrong_secret_and_tampered_body() -> None:
    headers = signing.sign_headers("s3cret", "d-1", BODY, now=NOW)
    assert not signing.verify("other", headers, BODY, now=NOW)
    assert not signing.verify("s3cret", headers, BODY.replace(b"000123", b"000124"), now=NOW)


def test_verify_rejects_old_and_far_future_timestamps() -> None:
    headers = signing.sign_headers("s3cret", "d-1", BODY, now=NOW)
    assert signing.verify("s3cret", headers, BODY, now=NOW + 300)
    assert not signing.verify("s3cret", headers, BODY, now=NOW + 301)
    assert not signing.verify("s3cret", headers, BODY, now=NOW - 301)
    assert signing.verify("s3cret", headers, BODY, now=NOW + 3000, tolerance=3600)


def test_verify_rejects_a_replayed_body_under_a_new_timestamp() -> None:
    headers = signing.sign_headers("s3cret", "d-1", BODY, now=NOW)
    replay = dict(headers, **{"X-Gridbus-Timestamp": str(NOW + 600)})
    assert not signing.verify("s3cret", replay, BODY, now=NOW + 600)


def test_verify_rejects_missing_or_malformed_headers() -> None:
    good = signing.sign_headers("s3cret", "d-1", BODY, now=NOW)
    for broken in (
        {},
        {k: v for k, v in good.items() if k != "X-Gridbus-Signature"},
        {k: v for k, v in good.items() if k != "X-Gridbus-Timestamp"},
        dict(good, **{"X-Gridbus-Timestamp": "-5"}),
        dict(good, **{"X-Gridbus-Timestamp": "1e9"}),
        dict(good, **{"X-Gridbus-Signature": good["X-Gridbus-Signature"].replace("sha256=", "sha1=")}),
        dict(good, **{"X-Gridbus-Signature": "sha256=é"}),
    ):
        assert not signing.verify("s3cret", broken, BODY, now=NOW)


def test_verify_accepts_either_secret_during_rotation() -> None:
    headers = signing.sign_headers("old", "d-1", BODY, now=NOW)
    assert signing.verify(["new", "old"], headers, BODY, now=NOW)
    assert not signing.verify(["new", ""], headers, BODY, now=NOW)


def test_the_snippet_in_docs_verifies_what_gridbus_signs() -> None:
    """docs/webhooks.md must stay runnable and agree with the sender."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text(encoding="utf-8")
    [snippet] = [block for block in re.findall(r"```python\n(.*?)```", doc, re.S) if "def verify" in block]
    namespace: dict = {}
    exec(compile(snippet, "docs/webhooks.md", "exec"), namespace)  # noqa: S102 (our own document)
    doc_verify = namespace["verify"]
    headers = signing.sign_headers("s3cret", "d-1", BODY, now=NOW)
    assert doc_verify("s3cret", headers, BODY, now=NOW + 60)
    assert not doc_verify("s3cret", headers, BODY, now=NOW + 301)
    assert not doc_verify("other", headers, BODY, now=NOW)
    assert not doc_verify("s3cret", headers, BODY + b" ", now=NOW)
