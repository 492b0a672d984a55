"""The one way gridbus opens Redis: a plain URL, or Sentinel when REDIS_SENTINELS is set
(Kubernetes: Redis with Sentinel), so a failover moves clients to the new master."""

from __future__ import annotations

from typing import Any

import redis
from redis.sentinel import Sentinel

from shared.config import Settings, get_settings


def connect(settings: Settings | None = None, decode_responses: bool = True, **client_kwargs: Any) -> redis.Redis:
    """`client_kwargs` go to the client (e.g. `socket_timeout` for a health probe)."""
    settings = settings or get_settings()
    timeout = settings.redis_socket_timeout_seconds
    client_kwargs = {"socket_timeout": timeout, "socket_connect_timeout": min(timeout, 5.0), **client_kwargs}
    if settings.redis_sentinels:
        nodes = []
        for item in settings.redis_sentinels.split(","):
            host, _, port = item.strip().rpartition(":")
            nodes.append((host, int(port)))
        sentinel = Sentinel(nodes, socket_timeout=2.0)
        return sentinel.master_for(settings.redis_sentinel_master, decode_responses=decode_responses, **client_kwargs)
    return redis.Redis.from_url(settings.redis_url, decode_responses=decode_responses, **client_kwargs)
