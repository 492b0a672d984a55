"""Transient or permanent: what a failed message handler's exception means, and how long
to wait before trying again. Plain Python (no nameko, no eventlet) so that it is tested
without a broker; shared/nameko_ext.py applies it to every consumer.

- **transient** — a dependency is down or busy (Redis refused/timed out/is loading its
  AOF/is a read-only replica after a failover, the broker refused or lost a publish, the
  network dropped): the message is fine and will succeed once the dependency is back.
  It is *held*, unacked, and tried again in-process with capped exponential back-off for
  as long as it takes. It never goes back to the broker, so it never counts against the
  quorum queue's `x-delivery-limit`.
- **permanent** — the input is invalid (`Rejected`): dead-lettered with the reason at
  once.
- **bug** — anything else: tried a few times with back-off (an unclassified hiccup gets a
  chance), then dead-lettered with the exception as the reason.
"""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

import redis.exceptions as rexc
import structlog

log = structlog.get_logger("gridbus.messaging")


class DependencyUnavailable(Exception):
    """A dependency (Redis, the broker, PostgreSQL, an HTTP peer) cannot be used right now:
    try again later; the input itself is fine. HTTP entrypoints answer it with 503 and
    `Retry-After`; consumers hold the message until the dependency is back."""

    def __init__(self, dependency: str, detail: str = "") -> None:
        super().__init__(f"{dependency} unavailable: {detail}" if detail else f"{dependency} unavailable")
        self.dependency = dependency
        self.detail = detail


# Redis answers that mean "not now" rather than "never" (a replica that has not been
# promoted yet, a master without enough replicas, a persistence error on the server).
_REDIS_BUSY_PREFIXES = ("READONLY", "MASTERDOWN", "NOREPLICAS", "MISCONF", "LOADING", "TRYAGAIN", "CLUSTERDOWN")


def _broker_errors() -> tuple[type[BaseException], ...]:
    # py-amqp is the one AMQP client (nameko's kombu runs on it, shared/amqpclient.py uses
    # it directly): every connection-level error of it, and kombu's wrapper, is an outage
    import amqp.exceptions
    import kombu.exceptions

    from shared.amqpclient import PublishFailed

    return (
        kombu.exceptions.OperationalError,
        amqp.exceptions.RecoverableConnectionError,
        amqp.exceptions.ConnectionForced,
        amqp.exceptions.ConnectionError,
        PublishFailed,
    )


def _postgres_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return ()
    return (psycopg.OperationalError, psycopg.errors.AdminShutdown, psycopg.errors.CannotConnectNow)


def _http_errors() -> tuple[type[BaseException], ...]:
    import httpx

    return (httpx.TransportError,)


_CLASSES: list[tuple[str, tuple[type[BaseException], ...]]] | None = None


def _classes() -> list[tuple[str, tuple[type[BaseException], ...]]]:
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = [
            (
                "redis",
                (
                    rexc.ConnectionError,
                    rexc.TimeoutError,
                    rexc.BusyLoadingError,
                    rexc.ReadOnlyError,
                    rexc.TryAgainError,
                    rexc.ClusterDownError,
                ),
            ),  # Sentinel errors subclass ConnectionError
            ("broker", _broker_errors()),
            ("postgres", _postgres_errors()),
            ("http", _http_errors()),
            # raw socket trouble under any client: the network, not the message
            ("network", (ConnectionError, TimeoutError, socket.timeout, socket.gaierror)),
        ]
    return _CLASSES


def transient_dependency(exc: BaseException) -> str | None:
    """The dependency whose outage `exc` reports (`redis`, `broker`, `postgres`, `http`,
    `network`), or None when `exc` says nothing about a dependency (invalid input or a
    bug). Follows explicit causes (`raise … from …`), so a wrapped outage is still one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DependencyUnavailable):
            return current.dependency
        if isinstance(current, rexc.ResponseError) and str(current).upper().startswith(_REDIS_BUSY_PREFIXES):
            return "redis"
        for name, types in _classes():
            if types and isinstance(current, types):
                return name
        current = current.__cause__
    return None


def backoff_delay(
    attempt: int, base: float = 0.2, cap: float = 5.0, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before try `attempt + 1` (attempt ≥ 1): base·2^(attempt-1), at most
    `cap`, with ±20 % jitter so that held messages do not all knock at the same instant."""
    raw = min(cap, base * (2 ** max(0, attempt - 1)))
    return max(0.0, raw * (0.8 + 0.4 * rand()))


@dataclass
class Stall:
    """One consumer's stall: messages held because a dependency is down. One log line when
    it starts, one when it ends; the metrics say how many messages are held right now."""

    service: str
    queue: str
    on_change: Callable[["Stall"], None] = lambda s: None
    held: int = 0
    since: float | None = None
    dependency: str = ""
    episodes: int = 0
    clock: Callable[[], float] = field(default=time.monotonic)

    @property
    def stalled(self) -> bool:
        return self.since is not None

    @property
    def idle(self) -> bool:
        """Stalled with no message held: none is left to go through and end the stall (their
        channel closed and the broker gave them to another replica), so only a look at the
        dependency itself can tell that it is back."""
        return self.since is not None and self.held == 0

    def hold(self, dependency: str, error: BaseException) -> bool:
        """A message is held for `dependency`; True when this starts a stall."""
        self.held += 1
        started = self.since is None
        if started:
            self.since, self.dependency = self.clock(), dependency
            self.episodes += 1
            log.warning(
                "consumer_stalled",
                service=self.service,
                queue=self.queue,
                dependency=dependency,
                error=f"{type(error).__name__}: {error}"[:300],
            )
        self.on_change(self)
        return started

    def release(self) -> None:
        """A held message leaves the hold (tried again, or its channel is gone)."""
        self.held = max(0, self.held - 1)
        self.on_change(self)

    def recovered(self, how: str = "a message went through") -> None:
        """The dependency is back (`how` we know: a message went through, or the idle
        stall's look at the dependency answered)."""
        if self.since is None:
            return
        log.warning(
            "consumer_recovered",
            service=self.service,
            queue=self.queue,
            dependency=self.dependency,
            stalled_s=round(self.clock() - self.since, 3),
            still_held=self.held,
            how=how,
        )
        self.since, self.dependency = None, ""
        self.on_change(self)


@dataclass
class _Unsettled:
    queue: str
    alive: Callable[[], bool]  # its channel is still open (else the broker has it back)
    since: float  # first handled
    active: float  # last time a handler started on it or it was held again
    held_since: float | None = None
    dependency: str = ""


@dataclass
class Ledger:
    """Every message a consumer holds unsettled, from its first try to its ack, dead
    letter or release, so that /healthz can say what the held-message count cannot: a
    message nobody is working on any more (a handler that hangs, a retry that never
    wakes, a hold the process forgot — on an open channel the broker never hands it out
    again), or one held for longer than an outage should last. Keys are the consumers'
    own (the kombu message's id); plain Python, tested without a broker."""

    clock: Callable[[], float] = field(default=time.monotonic)
    entries: dict[int, _Unsettled] = field(default_factory=dict)

    def trying(self, key: int, queue: str, alive: Callable[[], bool]) -> None:
        """A handler starts on the message (its first delivery or a retry)."""
        now = self.clock()
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = _Unsettled(queue, alive, now, now)
        else:
            entry.active = now

    def held(self, key: int, dependency: str) -> None:
        """The message waits for `dependency` and will be tried again."""
        entry = self.entries.get(key)
        if entry is not None:
            entry.active = self.clock()
            if entry.held_since is None:
                entry.held_since, entry.dependency = entry.active, dependency

    def retrying(self, key: int) -> None:
        """The message will be tried again (a bug, a few times): it is being worked on."""
        entry = self.entries.get(key)
        if entry is not None:
            entry.active = self.clock()

    def settled(self, key: int) -> None:
        """Acked, dead-lettered, requeued, or let go with its channel."""
        self.entries.pop(key, None)

    def stuck(self, after: float) -> tuple[bool, str]:
        """The `messages` check: fails while a message has had no try for `after` seconds
        (held messages are tried at least every CONSUMER_RETRY_MAX_SECONDS)."""
        now = self.clock()
        late = [e for e in list(self.entries.values()) if now - e.active >= after]
        if not late:
            return True, f"{len(self.entries)} unsettled, none idle for {after:g} s"
        oldest = min(late, key=lambda e: e.active)
        open_ = sum(1 for e in late if _safe(e.alive))
        return False, (
            f"{len(late)} message(s) ({', '.join(sorted({e.queue for e in late}))}) without a try for "
            f"{now - oldest.active:.0f} s ({open_} on an open channel, {len(late) - open_} on a closed one)"
        )

    def held_too_long(self, after: float) -> tuple[bool, str]:
        """The `held` check: fails while a message has been held for `after` seconds."""
        now = self.clock()
        long = [e for e in list(self.entries.values()) if e.held_since is not None and now - e.held_since >= after]
        if not long:
            held = sum(1 for e in self.entries.values() if e.held_since is not None)
            return True, f"{held} held, none for {after:g} s"
        oldest = min(long, key=lambda e: e.held_since or now)
        return False, (
            f"{len(long)} message(s) ({', '.join(sorted({e.queue for e in long}))}) held for "
            f"{', '.join(sorted({e.dependency for e in long}))} for {now - (oldest.held_since or now):.0f} s"
        )


def _safe(fn: Callable[[], bool]) -> bool:
    try:
        return bool(fn())
    except Exception:  # a channel object in an odd state: count it as closed
        return False
