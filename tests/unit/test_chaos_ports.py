"""Two fault runs on one machine never share a port: a port handed out by `pick` stays
locked while its server is killed and restarted, until the run releases it or ends."""

from __future__ import annotations

import subprocess
import sys

from bench.chaos import nodes
from tests.conftest import REPO


def _elsewhere(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", f"from bench.chaos import nodes; print({code})"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_a_picked_port_is_not_handed_to_another_process_until_released() -> None:
    taken: set[int] = set()
    mine = nodes.pick(nodes.REDIS_PORTS, taken)
    try:
        assert mine in taken and nodes.port_free(mine)  # nothing listens: only the lock keeps it ours
        assert _elsewhere(f"nodes.reserve({mine})") == "False"
        assert int(_elsewhere("nodes.pick(nodes.REDIS_PORTS, set())")) != mine
        assert nodes.pick(nodes.REDIS_PORTS, taken) != mine  # nor twice in one run
    finally:
        nodes.release_all()
    assert _elsewhere(f"nodes.reserve({mine})") == "True"
