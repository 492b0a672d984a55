from shared.logs import mask_phone, redact_processor


def test_phone_numbers_are_masked_everywhere() -> None:
    assert mask_phone("call 13812345678 now") == "call 138****5678 now"
    out = redact_processor(
        None,
        "info",
        {
            "event": "x",
            "reporter": {"phone": "13812345678", "name": "黄"},
            "note": "联系 13912345678",
            "secret": "s3cr3t",
            "uri": "amqp://gas:pa55@host/",
        },
    )
    assert out["reporter"]["phone"] == "***"
    assert "13912345678" not in out["note"]
    assert out["secret"] == "***"
    assert "pa55" not in out["uri"]


def test_secrets_in_free_text_are_masked() -> None:
    from shared.logs import redact_text

    text = redact_text(
        "Authorization: Bearer gbk_0123456789ab.S3cretS3cretS3cretS3cret api_key=abc&x=1 "
        "{'secret': 'hush'} token=t0k amqp://u:pw@h/ Bearer abc.def tel:13912345678"
    )
    for secret in ("S3cretS3cret", "abc&", "hush", "t0k", "pw@", "abc.def", "13912345678"):
        assert secret not in text, secret
    assert "gbk_0123456789ab" in text  # the key id stays: it names the key


_SCRIPT = r"""
import logging, structlog
from shared.logs import configure_logging
configure_logging("json", "INFO", "intake")

class Rejected(Exception):
    def __init__(self, reason, error):
        super().__init__(reason); self.reason = reason; self.error = error

try:
    raise Rejected("attribute key 'tel:13912345678' is bad", "invalid_report")
except Rejected:
    logging.getLogger("nameko.containers").exception(
        "error handling worker %s: %s", "<WorkerContext [intake.consume_report] at 0x1>", "x")
try:
    raise ValueError("phone 13812345678 secret=hush")
except ValueError:
    logging.getLogger("nameko.containers").exception("error handling worker %s: %s", "<W>", "13812345678")
    structlog.get_logger("gridbus").error("boom", exc_info=True, phone="13812345678")
logging.getLogger("eventlet.wsgi").warning("GET /?api_key=gbk_0123456789ab.S3cretS3cretS3cretS3cret 200")
import threading  # a new thread (as a nameko worker's green thread) starts with an empty context
t = threading.Thread(target=lambda: structlog.get_logger("gridbus").info("from_a_worker"))
t.start(); t.join()
"""


def test_every_library_logs_through_the_same_redaction() -> None:
    """nameko's, eventlet's and structlog's lines alike, tracebacks included; an expected
    refusal is one WARNING without a traceback (a fresh process: logging is global)."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(__import__("tests.conftest", fromlist=["REPO"]).REPO),
    ).stderr
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    assert len(lines) == 5, out
    assert all(line.get("service") == "intake" for line in lines), out  # every line names its service
    lines = lines[:4]
    for secret in ("13912345678", "13812345678", "hush", "S3cretS3cret"):
        assert secret not in out, secret
    rejected, worker_error, structured, wsgi = lines
    assert rejected["event"] == "message_rejected" and rejected["level"] == "warning"
    assert rejected["entrypoint"] == "intake.consume_report" and "exception" not in rejected
    assert worker_error["logger"] == "nameko.containers" and "Traceback" in worker_error["exception"]
    assert structured["phone"] == "***" and "Traceback" in structured["exception"]
    assert wsgi["logger"] == "eventlet.wsgi" and "api_key=***" in wsgi["event"]


def _redact_every_pattern(text: str) -> str:
    """redact_text without its pre-filter: the five patterns, always."""
    from shared import logs

    text = logs._URL_CREDENTIALS_RE.sub(r"\1***@", logs.mask_phone(text))
    text = logs._API_KEY_RE.sub(r"\1.***", text)
    text = logs._BEARER_RE.sub(r"\1***", text)
    return logs._PAIR_RE.sub(r"\1***", text)


def test_the_pre_filter_never_lets_a_secret_through() -> None:
    """The one-scan pre-filter of redact_text (most values have nothing to mask) gives the
    same text as the five patterns on every input: a sample of real shapes and random
    strings built from the patterns' own pieces."""
    import random

    from shared.logs import redact_text

    samples = [
        "case_routed",
        "450305-20261127-000123",
        "2026-12-01T13:00:00.000000Z",
        "lighting@L3:lights",
        "tel 13912345678",
        "１３９１２３４５６７８",  # full-width digits are digits too
        "amqp://u:pw@h/",
        "Bearer abc.def",
        "BEARER x",
        "ſecret=hush",  # the long s folds to s under IGNORECASE
        "api_KEY: 'x'",
        "gbk_0123456789ab.S3cret",
        "design=blue",
    ]
    rng = random.Random(16)
    pieces = ["1", "3", "9", "0", "://", ":", "@", "/", "=", " ", "'", "gbk_", "0123456789ab", ".", "Bearer ",
              "bEaReR", "secret", "password", "token", "api_key", "access_token", "sign", "x", "号"]  # fmt: skip
    samples += ["".join(rng.choice(pieces) for _ in range(rng.randrange(1, 16))) for _ in range(3000)]
    samples += ["".join(rng.choice("0123456789") for _ in range(rng.randrange(9, 14))) for _ in range(500)]
    for text in samples:
        assert redact_text(text) == _redact_every_pattern(text), text
