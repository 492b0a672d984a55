"""Structured logging: console in development, JSON when LOG_FORMAT=json.

Secrets and reporters' phone numbers never reach a log line: one redaction
(`redact_processor`) masks every value under a sensitive key, every phone-number-looking
digit run, API key secrets, Bearer tokens, `secret=`-style pairs and URL credentials. It
runs on structlog's lines and, through the root logging handler, on every line of every
other library (nameko logs worker errors with the standard `logging` module, docs/design.md §10):
both go through the same processors, tracebacks included (rendered before redaction).

An expected refusal (`shared.nameko_ext.Rejected`: the message is dead-lettered with its
reason) is one structured WARNING line (`message_rejected`), not nameko's ERROR with a
traceback.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SENSITIVE_KEYS = {"phone", "password", "secret", "token", "api_key", "authorization", "sign", "access_token"}
_PHONE_RE = re.compile(r"(?<!\d)(1\d{2})\d{4}(\d{4})(?!\d)")  # mainland mobile numbers
_URL_CREDENTIALS_RE = re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+@")
_API_KEY_RE = re.compile(r"(gbk_[0-9a-f]{12})\.[A-Za-z0-9_\-]+")  # the id stays: it names the key
_BEARER_RE = re.compile(r"(?i)(bearer\s+)(?!gbk_)[^\s'\",]+")
_PAIR_RE = re.compile(r"(?i)((?:password|secret|token|api_key|access_token|sign)[\"']?\s*[=:]\s*[\"']?)[^&\s'\",}]+")
#: what each pattern above needs to find before it can change anything: 11 digits in a row
#: (a phone number), `://` (URL credentials), `gbk_` (an API key), one of the words (a
#: Bearer token, a `secret=` pair). One scan of a string without any of them replaces five:
#: most values of a log line (ids, names, levels, timestamps) have none. A superset of the
#: patterns' triggers, so the output is the same (tests/unit/test_logs.py checks it).
_MAYBE_SENSITIVE_RE = re.compile(r"\d{11}|://|gbk_|(?i:bearer|password|secret|token|api_key|sign)")
ROOT_HANDLER_NAME = "gridbus"


def mask_phone(text: str) -> str:
    """`13812345678` → `138****5678`."""
    return _PHONE_RE.sub(r"\1****\2", text)


def redact_text(text: str) -> str:
    if _MAYBE_SENSITIVE_RE.search(text) is None:
        return text
    text = _URL_CREDENTIALS_RE.sub(r"\1***@", mask_phone(text))
    text = _API_KEY_RE.sub(r"\1.***", text)
    text = _BEARER_RE.sub(r"\1***", text)
    return _PAIR_RE.sub(r"\1***", text)


def _redact(value: Any, key: str = "") -> Any:
    if key.lower() in _SENSITIVE_KEYS and value:
        return "***"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v) for v in value]
    return value


def redact_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    return {k: _redact(v, k) for k, v in event_dict.items()}


class TameRejections(logging.Filter):
    """On nameko's container logger: a worker that raised `Rejected` is an expected
    refusal, logged as one structured WARNING line instead of an error with traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or type(exc).__name__ != "Rejected":
            return True
        worker = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        named = re.search(r"\[([\w.]+)\]", worker)  # "<WorkerContext [intake.consume_report] at 0x…>"
        structlog.get_logger("gridbus.messaging").warning(
            "message_rejected",
            entrypoint=named.group(1) if named else worker,
            error=getattr(exc, "error", ""),
            reason=getattr(exc, "reason", str(exc)),
        )
        return False


def _renderer(log_format: str) -> Any:
    if log_format == "json":
        return structlog.processors.JSONRenderer(ensure_ascii=False)
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


class _ServiceName:
    """Names the process's service on every line (a value bound for one line wins)."""

    def __init__(self, service: str) -> None:
        self.service = service

    def __call__(self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", self.service)
        return event_dict


def configure_logging(log_format: str = "console", level: str = "INFO", service: str | None = None) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        # a processor, not a context variable: nameko's workers are green threads, and a
        # new thread or greenlet starts with an empty context (the line lost the service)
        shared.insert(1, _ServiceName(service))
    # tracebacks are rendered to text first, so that redaction sees them too
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redact_processor, _renderer(log_format)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # every stdlib logger (nameko, kombu, eventlet, werkzeug, …) ends at this one handler
    handler = logging.StreamHandler(sys.stderr)
    handler.name = ROOT_HANDLER_NAME
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_processor,
                _renderer(log_format),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.name == ROOT_HANDLER_NAME or isinstance(h, logging.StreamHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    containers = logging.getLogger("nameko.containers")
    if not any(isinstance(f, TameRejections) for f in containers.filters):
        containers.addFilter(TameRejections())
    for noisy in ("kombu", "amqp", "nameko", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
