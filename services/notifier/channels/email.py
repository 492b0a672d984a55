"""E-mail over SMTP (plain, STARTTLS or implicit TLS), one plain-text UTF-8 message.

The delivery id is both the Message-ID (mail clients and archives fold duplicates by
it) and an `X-Gridbus-Delivery` header. SMTP reply codes decide the outcome: 4xx is
"try again later" by definition (RFC 5321 §4.2.1), 5xx is final.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from services.notifier.channels.base import ChannelSettings, DeliveryOutcome, OutgoingMessage
from shared.logs import redact_text

DELIVERY_HEADER = "X-Gridbus-Delivery"
_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.?[^@\s<>,;]*$")


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip("> ") or "gridbus.local"


def build(message: OutgoingMessage, settings: ChannelSettings) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = formataddr(("gridbus 城市网格", settings.mail_from))
    mail["To"] = message.to
    # Header values must be one line; a rendered subject may not be.
    mail["Subject"] = " ".join(message.subject.split())
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = f"<{message.delivery_id}@{_domain(settings.mail_from)}>"
    mail[DELIVERY_HEADER] = message.delivery_id
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies back to us
    mail.set_content(message.text, subtype="plain", charset="utf-8")
    return mail


def _tls_context(settings: ChannelSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.smtp_ca_file or None)


def _code_outcome(code: int, text: bytes | str, what: str) -> DeliveryOutcome:
    reply = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    detail = f"{what}: {code} {redact_text(reply)[:200]}"
    if 400 <= code < 500:
        return DeliveryOutcome.retry(detail, code)
    return DeliveryOutcome.fail(detail, code)


def _transmit(mail: EmailMessage, to: str, settings: ChannelSettings) -> DeliveryOutcome:
    if not settings.smtp_host:  # smtplib would take "" for localhost
        return DeliveryOutcome.fail("mail relay not configured (GRIDBUS_SMTP_HOST)")
    if settings.smtp_ssl:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=settings.timeout, context=_tls_context(settings)
        )
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout)
    with smtp:
        smtp.ehlo()
        if settings.smtp_starttls:
            # smtplib would silently stay in clear text if we did not insist.
            if not smtp.has_extn("starttls"):
                return DeliveryOutcome.fail("SMTP server does not offer STARTTLS")
            smtp.starttls(context=_tls_context(settings))
            smtp.ehlo()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
        refused = smtp.send_message(mail, from_addr=settings.mail_from, to_addrs=[to])
        if refused:  # only possible with several recipients; kept for completeness
            code, text = next(iter(refused.values()))
            return _code_outcome(code, text, "recipient refused")
    return DeliveryOutcome.delivered(250, f"accepted by {settings.smtp_host}:{settings.smtp_port}")


def deliver(message: OutgoingMessage, settings: ChannelSettings) -> DeliveryOutcome:
    if not _ADDRESS.match(message.to):
        return DeliveryOutcome.fail(f"not an e-mail address: {redact_text(message.to)}")
    mail = build(message, settings)
    try:
        return _transmit(mail, message.to, settings)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return _code_outcome(code, text, "recipient refused")
    except smtplib.SMTPResponseException as exc:  # sender refused, auth failed, data refused, …
        return _code_outcome(exc.smtp_code, exc.smtp_error, type(exc).__name__)
    except smtplib.SMTPServerDisconnected as exc:
        return DeliveryOutcome.retry(f"SMTP server disconnected: {exc}")
    except smtplib.SMTPNotSupportedError as exc:
        return DeliveryOutcome.fail(f"SMTP server lacks a needed extension: {exc}")
    except ssl.SSLCertVerificationError as exc:
        # Before OSError: a certificate we do not trust is configuration, not weather.
        return DeliveryOutcome.fail(f"TLS certificate not trusted: {exc.verify_message}")
    except (socket.timeout, TimeoutError):
        return DeliveryOutcome.retry(f"SMTP timeout after {settings.timeout:g}s")
    except (smtplib.SMTPException, OSError) as exc:
        return DeliveryOutcome.retry(f"SMTP connection failed: {type(exc).__name__}: {redact_text(str(exc))}")
