"""The one way gridbus runs Lua in Redis.

Every script is a `.lua` file in a `lua/` folder beside the module that runs it (shipped
as package data, so an installed wheel has them too). `Lua("services.sla", "commit")`
names one; its source is read once per process, and `on(client)` registers it with
redis-py (EVALSHA, loading the script again when Redis answers NOSCRIPT).

A script may start with lines `--#include <package>:<name>`: the named file's source is
put in place of the line, so that two scripts can share one Lua function (the lease
claim, shared/lua/lease_claim.lua) instead of each keeping a copy.

`send` is for a caller that overlaps its own work with a script's run (sla's firing
loop: it decides the next batch while Redis commits this one): the calls go out in one
write on a connection of their own and each `Pending.result()` reads its answer later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, cast

import redis
from redis.commands.core import Script

_INCLUDE = re.compile(r"^--#include (\S+):(\S+)[ \t]*$", re.M)


@cache
def source(package: str, name: str) -> str:
    """The text of `<package>/lua/<name>.lua`, includes expanded (read once per process)."""
    text = resources.files(package).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: source(m[1], m[2]), text)


@dataclass(frozen=True)
class Lua:
    """A script by its place: `Lua("services.sla", "commit")` is services/sla/lua/commit.lua."""

    package: str
    name: str

    @property
    def source(self) -> str:
        return source(self.package, self.name)

    def on(self, client: redis.Redis) -> Script:
        """The script registered with `client` (its answers decoded as the client's are)."""
        return client.register_script(self.source)


class _Wire:
    """A connection with script calls sent on it whose answers are still owed, read in the
    order they were sent; it goes back to the pool after the last, or as soon as one fails
    on the wire (the answers after it are lost with it)."""

    def __init__(self, conn: Any, pool: redis.ConnectionPool, owed: int) -> None:
        self.conn, self.pool, self.owed = conn, pool, owed
        self.read = 0
        self.broken = False

    def answer(self, index: int) -> Any:
        if self.broken:
            raise redis.exceptions.ConnectionError("an earlier answer on this connection failed")
        if index != self.read:
            raise RuntimeError(f"answer {index} read before answer {self.read}: they come in the order sent")
        try:
            return self.conn.read_response()
        except redis.exceptions.ResponseError:  # an error reply (no script): the wire is still in step
            raise
        except BaseException:
            self.broken = True
            self.conn.disconnect()
            raise
        finally:
            self.read += 1
            if self.read == self.owed or self.broken:
                self.owed = -1  # released once
                self.pool.release(self.conn)


@dataclass
class Pending:
    """A script call sent and not yet answered (see `send`)."""

    script: Script
    keys: list[Any]
    args: list[Any]
    wire: _Wire | None = field(default=None, repr=False)
    index: int = 0

    def result(self) -> Any:
        """The script's answer; a Redis that lost its script cache gets the script again."""
        wire, self.wire = self.wire, None
        if wire is not None:
            try:
                return wire.answer(self.index)
            except redis.exceptions.NoScriptError:
                pass  # the call goes again below, with the script's source
        return self.script(keys=self.keys, args=self.args)


def send(script: Script, calls: list[tuple[list[Any], list[Any]]]) -> list[Pending]:
    """Send EVALSHA for each (keys, args) in one write on a connection of the script's
    client's pool, without waiting for the answers: each `Pending.result()` reads its own,
    in the order sent (until the last is read the connection is the caller's alone)."""
    if not calls:
        return []
    pool = _pool(script)
    conn = pool.get_connection()
    try:
        conn.send_packed_command(
            conn.pack_commands([("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls])
        )
    except BaseException:
        conn.disconnect()
        pool.release(conn)
        raise
    wire = _Wire(conn, pool, len(calls))
    return [Pending(script, keys, args, wire, i) for i, (keys, args) in enumerate(calls)]


def _pool(script: Script) -> redis.ConnectionPool:
    return cast(redis.Redis, script.registered_client).connection_pool
