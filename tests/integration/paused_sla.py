"""An sla replica that stops for PAUSE seconds after each claim of due timers, so that a
test can kill it while it holds the lease (tests/integration/test_sla_processes.py):
`python -m tests.integration.paused_sla PAUSE`. The pause is patched in here, in the test
process only; the production firing loop knows nothing of it."""

import eventlet

eventlet.monkey_patch()

import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import structlog  # noqa: E402

from services.runner import run_service  # noqa: E402
from services.sla.timers import Claimed, TimerStore  # noqa: E402

PAUSE_S = float(sys.argv[1])
_claim = TimerStore.claim


def claim_then_pause(self: TimerStore, *args: Any, **kwargs: Any) -> list[Claimed]:
    claimed = _claim(self, *args, **kwargs)
    if claimed:
        structlog.get_logger("gridbus.test").warning(
            "test_pause_after_claim", seconds=PAUSE_S, timers=[c.timer_id for c in claimed]
        )
        time.sleep(PAUSE_S)
    return claimed


TimerStore.claim = claim_then_pause  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(run_service("sla"))
