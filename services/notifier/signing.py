"""Webhook signatures: what gridbus sends and how a receiver checks it.

Headers of every webhook delivery:

    X-Gridbus-Timestamp: 1795765800                 (unix seconds when signed)
    X-Gridbus-Delivery:  <delivery id>             (same id on every resend)
    X-Gridbus-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

The timestamp is inside the signed string so a captured request cannot be replayed
with a fresh timestamp; receivers refuse timestamps more than `tolerance` seconds
away from their clock. This module depends on the standard library only, so a
receiver may copy it as is (docs/webhooks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

TIMESTAMP_HEADER = "X-Gridbus-Timestamp"
DELIVERY_HEADER = "X-Gridbus-Delivery"
SIGNATURE_HEADER = "X-Gridbus-Signature"
SCHEME = "sha256"
DEFAULT_TOLERANCE = 300


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """`sha256=<hex>` over `timestamp + "." + body`."""
    signed = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"{SCHEME}={digest}"


def sign_headers(secret: str, delivery_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three gridbus headers for one attempt (signed at send time, not at enqueue)."""
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Frameworks differ in header case (WSGI upper-cases, http.server keeps it).
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def verify(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> bool:
    """True when `body` was signed by a holder of `secret` less than `tolerance` s ago.

    `secret` may be several secrets, so a receiver can accept the old and the new one
    while a secret is being rotated. Timestamps too far in the future are refused as
    well: a clock that far off is as unsafe as a replay.
    """
    raw_ts = _header(headers, TIMESTAMP_HEADER)
    raw_sig = _header(headers, SIGNATURE_HEADER)
    if not raw_ts or not raw_sig or not raw_ts.strip().isdigit():
        return False
    timestamp = int(raw_ts.strip())
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    secrets = [secret] if isinstance(secret, str) else list(secret)
    presented = raw_sig.strip().encode("ascii", "replace")
    ok = False
    for candidate in secrets:
        if not candidate:
            continue
        expected = signature(candidate, timestamp, body).encode("ascii")
        # No early exit: the time taken must not tell which secret matched.
        ok |= hmac.compare_digest(expected, presented)
    return ok
