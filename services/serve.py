"""Process entry point of one service: `python -m services.serve <service>`.

eventlet must patch the standard library before anything else is imported (nameko
needs green sockets and threads), so this module does that first and only then loads
gridbus. `gridbus run <service>` execs it.
"""

import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
# logged once as `sla.calendar.unknown_year` already (and shown once by `gridbus up`)
warnings.filterwarnings("ignore", message=r"holidays of \d{4} are unknown")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import os  # noqa: E402
import sys  # noqa: E402

# psycopg's C wait blocks the whole process; its select() wait is green once patched
os.environ.setdefault("PSYCOPG_WAIT_FUNC", "wait_select")

from services.runner import SERVICE_CLASSES, run_service  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SERVICE_CLASSES:
        sys.exit(f"usage: python -m services.serve {{{'|'.join(SERVICE_CLASSES)}}}")
    sys.exit(run_service(sys.argv[1]))
