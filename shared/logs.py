"""Structured logging: console in development, JSON when LOG_FORMAT=json.

Secrets and reporters' phone numbers never reach a log line: a processor masks every
value under a sensitive key and every phone-number-looking digit run.
"""
from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SENSITIVE_KEYS = {"phone", "password", "secret", "token", "api_key", "authorization", "sign", "access_token"}
_PHONE_RE = re.compile(r"(?<!\d)(1\d{2})\d{4}(\d{4})(?!\d)")  # mainland mobile numbers
_URL_CREDENTIALS_RE = re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+@")


def mask_phone(text: str) -> str:
    """`13812345678` → `138****5678`."""
    return _PHONE_RE.sub(r"\1****\2", text)


def redact_text(text: str) -> str:
    return _URL_CREDENTIALS_RE.sub(r"\1***@", mask_phone(text))


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


def redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {k: _redact(v, k) for k, v in event_dict.items()}


def configure_logging(log_format: str = "console", level: str = "INFO", service: str | None = None) -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_processor,
    ]
    if log_format == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(ensure_ascii=False)]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    for noisy in ("kombu", "amqp", "pika", "nameko", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if service:
        structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
