"""Replicas racing for the same work (the lease tests' helper, shared/leases.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def claim_race(make: Callable[[], Any], claim: Callable[[Any], list[str]], replicas: int = 4) -> list[list[str]]:
    """`replicas` claimers (each `make()`, its own connection) claim in their own threads,
    started together, until a claim comes back empty: what each one got."""
    claimers = [make() for _ in range(replicas)]
    got: list[list[str]] = [[] for _ in claimers]
    start = threading.Barrier(replicas)

    def run(i: int) -> None:
        start.wait()
        while batch := claim(claimers[i]):
            got[i] += batch

    threads = [threading.Thread(target=run, args=(i,)) for i in range(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got
