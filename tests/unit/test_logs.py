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
    assert len(lines) == 4, out
    for secret in ("13912345678", "13812345678", "hush", "S3cretS3cret"):
        assert secret not in out, secret
    rejected, worker_error, structured, wsgi = lines
    assert rejected["event"] == "message_rejected" and rejected["level"] == "warning"
    assert rejected["entrypoint"] == "intake.consume_report" and "exception" not in rejected
    assert worker_error["logger"] == "nameko.containers" and "Traceback" in worker_error["exception"]
    assert structured["phone"] == "***" and "Traceback" in structured["exception"]
    assert wsgi["logger"] == "eventlet.wsgi" and "api_key=***" in wsgi["event"]
