"""What every channel shares: the message, the outcome, the settings, and `send`.

A channel turns one `OutgoingMessage` into one delivery attempt and reports a
`DeliveryOutcome`. It keeps no state between calls and never retries by itself: the
notifier service owns dedup, retries and dead letters, so it must see every attempt.
"""

from __future__ import annotations

import importlib
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, Field, SecretStr

from shared.logs import get_logger, redact_text

if TYPE_CHECKING:
    from shared.config import Settings

log = get_logger("gridbus.notifier.channels")

USER_AGENT = "gridbus-notifier/0.1"


class ChannelName(str, Enum):
    webhook = "webhook"
    wecom = "wecom"
    dingtalk = "dingtalk"
    email = "email"
    sms = "sms"


@dataclass(frozen=True)
class OutgoingMessage:
    delivery_id: str
    channel: ChannelName
    to: str
    subject: str
    text: str
    payload: Mapping[str, Any]
    mentions: tuple[str, ...] = ()
    secret: str | None = None
    sms_template: str | None = None
    sms_params: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # keep the secret and full phone numbers out of tracebacks
        return (
            f"OutgoingMessage(delivery_id={self.delivery_id!r}, channel={self.channel.value!r}, "
            f"to={describe_target(self.to)!r}, subject={self.subject!r})"
        )


@dataclass(frozen=True)
class DeliveryOutcome:
    ok: bool
    transient: bool
    retry_after: float | None
    status: int | None
    detail: str

    @classmethod
    def delivered(cls, status: int | None, detail: str = "delivered") -> DeliveryOutcome:
        return cls(True, False, None, status, detail)

    @classmethod
    def retry(cls, detail: str, status: int | None = None, retry_after: float | None = None) -> DeliveryOutcome:
        return cls(False, True, retry_after, status, detail)

    @classmethod
    def fail(cls, detail: str, status: int | None = None) -> DeliveryOutcome:
        return cls(False, False, None, status, detail)

    @property
    def kind(self) -> str:
        """`delivered` | `transient` | `permanent` — the metric label."""
        return "delivered" if self.ok else ("transient" if self.transient else "permanent")


class ChannelSettings(BaseModel):
    """What the channels need to connect, taken from the settings object (shared/config.py,
    where each variable is declared once). Secrets are `SecretStr` so they never print."""

    smtp_host: str = Field(
        "",
        description="Mail relay. Empty: the email channel is disabled (deliveries fall "
        "back to the next channel or count as no_address).",
    )
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_ssl: bool = False  # implicit TLS (port 465) instead of STARTTLS
    smtp_ca_file: str = ""  # extra CA bundle to trust (a private mail relay); empty: system store
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    mail_from: str = "gridbus@localhost"
    sms_url: str = Field(
        "",
        description="SMS provider endpoint. Empty: the sms channel is disabled (deliveries "
        "fall back to the next channel or count as no_address).",
    )
    sms_api_key: SecretStr = SecretStr("")
    sms_sign: str = "七星城管"
    webhook_secret: SecretStr = SecretStr("")  # used when a message carries no secret of its own
    timeout: float = 5.0

    def disabled(self) -> dict[ChannelName, str]:
        """Channels these settings cannot send on, each with the variable that enables it.
        (webhook, wecom and dingtalk take their URL from the recipient's address.)"""
        from shared.config import Settings, variable

        out: dict[ChannelName, str] = {}
        if not self.sms_url:
            out[ChannelName.sms] = variable("sms_url", Settings.model_fields["sms_url"])
        if not self.smtp_host:
            out[ChannelName.email] = variable("smtp_host", Settings.model_fields["smtp_host"])
        return out

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> ChannelSettings:
        """The channels' share of `settings` (default: the process's), then `overrides`."""
        from shared.config import get_settings

        s = settings or get_settings()
        values: dict[str, Any] = {name: getattr(s, name) for name in cls.model_fields if hasattr(s, name)}
        values["timeout"] = s.notifier_timeout_seconds
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)


# --------------------------------------------------------------------------- helpers


def describe_target(to: str) -> str:
    """A loggable form of a recipient: robot keys and tokens live in the query string."""
    if "://" in to:
        parts = urllib.parse.urlsplit(to)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return redact_text(f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else ""))
    return redact_text(to)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


# Statuses a later attempt can cure; every other 4xx means the request itself is wrong.
_TRANSIENT_STATUSES = {408, 425, 429}


def classify_status(response: httpx.Response) -> DeliveryOutcome | None:
    """Outcome of a non-2xx HTTP answer; None when the status is 2xx (caller looks closer)."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    reason = f"HTTP {status} {response.reason_phrase}".strip()
    snippet = redact_text(response.text[:200]) if response.content else ""
    detail = f"{reason}: {snippet}" if snippet else reason
    if status in _TRANSIENT_STATUSES or status >= 500:
        return DeliveryOutcome.retry(detail, status, parse_retry_after(response.headers.get("Retry-After")))
    # 3xx too: we do not follow redirects, a webhook that moves is misconfigured.
    return DeliveryOutcome.fail(detail, status)


_CLIENTS: dict[float, httpx.Client] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(timeout: float) -> httpx.Client:
    """One client per process (and timeout): a new client per message built a TLS
    context each time, which was half of the notifier's CPU in the pipeline benchmark,
    and kept no connections alive. Built under a lock: the first deliveries arrive
    together, and each green thread would otherwise build (and import) one of its own."""
    client = _CLIENTS.get(timeout)
    if client is None:
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(timeout)
            if client is None:
                client = _CLIENTS[timeout] = httpx.Client(
                    timeout=timeout,
                    follow_redirects=False,
                    trust_env=False,
                    limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
                )
    return client


def warm_up(settings: ChannelSettings) -> None:
    """Build the HTTP client (its TLS context, httpcore's imports) at start-up rather than
    inside the first delivery."""
    _client(settings.timeout)


def http_post(
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    timeout: float,
) -> httpx.Response | DeliveryOutcome:
    """POST once. A transport failure comes back as an outcome instead of an exception.

    A timeout after the request left may still have been delivered; that is why every
    resend carries the same delivery id for the receiver to recognise.
    """
    all_headers = {"User-Agent": USER_AGENT, **headers}
    try:
        return _client(timeout).post(url, content=content, headers=all_headers)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return DeliveryOutcome.fail(f"bad URL {describe_target(url)}: {exc}")
    except httpx.TimeoutException as exc:
        return DeliveryOutcome.retry(f"timeout after {timeout:g}s ({type(exc).__name__})")
    except httpx.TransportError as exc:
        return DeliveryOutcome.retry(f"connection failed: {type(exc).__name__}: {redact_text(str(exc))}")


def require_http_url(url: str) -> DeliveryOutcome | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return DeliveryOutcome.fail(f"not an http(s) URL: {describe_target(url)}")
    return None


# --------------------------------------------------------------------------- dispatch


def send(message: OutgoingMessage, settings: ChannelSettings) -> DeliveryOutcome:
    """Deliver `message` once through its channel. Never raises for delivery failures.

    Each channel is a module of this package named after the channel, exposing
    `deliver(message, settings) -> DeliveryOutcome`.
    """
    channel = ChannelName(message.channel)
    module = importlib.import_module(f"{__package__}.{channel.value}")
    try:
        outcome: DeliveryOutcome = module.deliver(message, settings)
    except Exception as exc:  # a bug here must become a visible dead letter, not a dropped event
        log.exception("channel_crashed", channel=channel.value, delivery_id=message.delivery_id)
        outcome = DeliveryOutcome.fail(f"internal error in {channel.value} channel: {type(exc).__name__}")
    log.info(
        "delivery_attempt",
        channel=channel.value,
        delivery_id=message.delivery_id,
        to=describe_target(message.to),
        outcome=outcome.kind,
        status=outcome.status,
        retry_after=outcome.retry_after,
        detail=outcome.detail,
    )
    return outcome
