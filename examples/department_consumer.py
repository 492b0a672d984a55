#!/usr/bin/env python3
"""A department's consumer of gridbus dispatch orders (runnable example; needs only py-amqp,
the AMQP client gridbus itself uses).

    pip install amqp==5.4.2
    AMQP_URI='amqp://dept-gas:<password>@rabbitmq.example:5672/%2F' \
        python examples/department_consumer.py --dept gas

What it does, as every department system should (docs/integrating.md):
  1. consumes its own queue `dept.<code>` with manual acks and a small prefetch;
  2. handles each DispatchOrder idempotently (at-least-once delivery: the same order may
     arrive twice; `order_id` is the key) — here: remembers handled order ids in a file;
  3. replies `acknowledge` on exchange `gridbus.replies` with routing key `reply.<code>`,
     `user_id` = its RabbitMQ user (RabbitMQ rejects a wrong one), persistent, with
     publisher confirms and `mandatory` (an unroutable reply is an error, not a silent loss);
  4. acks the order only after the reply is confirmed. If it crashes in between, the
     order comes back and the reply is sent again with the same `reply_id`, which gridbus
     treats as a repeat.
A message it cannot parse is rejected without requeue; after the queue's delivery limit
RabbitMQ dead-letters it to `dept.<code>.dead` for the operations centre.

It also shows how to verify a gridbus webhook signature (`verify_webhook`).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote, urlparse

import amqp

log = logging.getLogger("department_consumer")

REPLIES_EXCHANGE = "gridbus.replies"


class Unroutable(RuntimeError):
    """The broker had no queue for the reply (it came back: `mandatory`)."""


# ----------------------------------------------------------------- webhook signatures
def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes, tolerance_s: int = 300, now: float | None = None
) -> bool:
    """True if `X-Gridbus-Signature` is `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`
    for the request's `X-Gridbus-Timestamp`, and that timestamp is within `tolerance_s`.

    `body` must be the raw request body bytes, before any JSON parsing."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get("x-gridbus-timestamp", "")
    given = lower.get("x-gridbus-signature", "")
    if not timestamp.isdigit() or not given.startswith("sha256="):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_s:
        return False  # too old (a replay) or from the future
    expected = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given[len("sha256=") :], expected)


# ----------------------------------------------------------------- idempotency
class HandledOrders:
    """Order ids already answered, in a JSON file (use your own database in production)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: set[str] = set(json.loads(path.read_text())) if path.exists() else set()

    def __contains__(self, order_id: str) -> bool:
        return order_id in self.ids

    def add(self, order_id: str) -> None:
        self.ids.add(order_id)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(self.ids)))
        tmp.replace(self.path)


# ----------------------------------------------------------------- the consumer
class DepartmentConsumer:
    def __init__(self, amqp_uri: str, dept: str, state: Path, max_messages: int | None = None) -> None:
        self.dept = dept
        self.queue = f"dept.{dept}"
        self.routing_key = f"reply.{dept}"
        self.user = unquote(urlparse(amqp_uri).username or "")
        self.handled = HandledOrders(state)
        self.max_messages = max_messages
        self.seen = 0
        u = urlparse(amqp_uri)
        self.connection = amqp.Connection(
            host=f"{u.hostname or 'localhost'}:{u.port or 5672}",
            userid=self.user,
            password=unquote(u.password or ""),
            virtual_host=unquote(u.path[1:]) if len(u.path) > 1 else "/",
            ssl=u.scheme == "amqps",
            heartbeat=30,
        )
        self.connection.connect()
        self.channel = self.connection.channel()
        self.channel.auto_decode = False  # bodies stay bytes
        self.channel.basic_qos(0, 10, False)
        self.returned: list[str] = []
        # a reply no queue would take comes back (mandatory) before its confirm
        self.channel.events["basic_return"].add(lambda exc, exchange, key, msg: self.returned.append(key))
        self.running = True

    def reply(self, order: dict, action: str, note: str, **extra: object) -> None:
        body = {
            "reply_id": f"{self.dept}-{order['order_id']}-{action}",  # stable: a resend is a repeat
            "case_id": order["case_id"],
            "action": action,
            "note": note,
            **extra,
        }
        properties = {
            "content_type": "application/json",
            "delivery_mode": 2,  # persistent
            "user_id": self.user,  # checked by RabbitMQ
            "message_id": body["reply_id"],
            "correlation_id": order.get("correlation_id"),
            "timestamp": int(time.time()),
        }
        message = amqp.Message(
            json.dumps(body, ensure_ascii=False).encode("utf-8"),
            **{k: v for k, v in properties.items() if v is not None},
        )
        self.returned.clear()
        # waits for the broker's confirm; a nack raises MessageNacked
        self.channel.basic_publish_confirm(message, REPLIES_EXCHANGE, self.routing_key, mandatory=True)
        if self.returned:
            raise Unroutable(f"no queue for {REPLIES_EXCHANGE} / {self.routing_key}")

    def handle(self, order: dict) -> None:
        """Your system's work goes here: create a work ticket, then acknowledge."""
        case = order.get("case", {})
        log.info(
            "order %s case %s: %s %s (%s)",
            order["order_id"],
            order["case_id"],
            case.get("category"),
            case.get("address"),
            case.get("description"),
        )
        self.reply(order, "acknowledge", "已接单，派人处理")

    def on_message(self, message: Any) -> None:
        ch, tag = self.channel, message.delivery_tag
        try:
            order = json.loads(message.body)
            if (
                order.get("kind") not in ("dispatch_order", "dispatch_withdrawn")
                or "order_id" not in order
                or "case_id" not in order
            ):
                raise ValueError("not a dispatch order or withdrawal")
        except ValueError as exc:
            log.error("unreadable message %s: %s", message.properties.get("message_id"), exc)
            ch.basic_reject(tag, requeue=False)  # -> dept.<code>.dead
            return
        if order["kind"] == "dispatch_withdrawn":
            # the command centre dispatched the case elsewhere: stop work, never reply to it
            log.info("order %s withdrawn by %s: %s", order["order_id"], order.get("by"), order.get("note"))
            self.handled.add(order["order_id"])
            ch.basic_ack(tag)
            return
        try:
            if order["order_id"] in self.handled:
                log.info("order %s already handled (redelivery)", order["order_id"])
            else:
                self.handle(order)
                self.handled.add(order["order_id"])
            ch.basic_ack(tag)
        except (Unroutable, amqp.exceptions.MessageNacked) as exc:
            log.error("reply not accepted by RabbitMQ (%s); order will be redelivered", exc)
            ch.basic_reject(tag, requeue=True)
        self.seen += 1
        if self.max_messages and self.seen >= self.max_messages:
            self.running = False

    def run(self, inactivity_timeout: float | None = None) -> int:
        """Consume until `max_messages` (if set), or `inactivity_timeout` s without a
        message (if set), else for ever."""
        log.info("consuming %s as %s", self.queue, self.user)
        arrived: list[Any] = []
        tag = self.channel.basic_consume(self.queue, callback=arrived.append)
        try:
            while self.running:
                if not arrived:
                    try:
                        self.connection.drain_events(timeout=inactivity_timeout)
                    except socket.timeout:
                        break  # bounded mode (tests, one-off runs): a quiet period ends it
                    continue
                self.on_message(arrived.pop(0))
            self.channel.basic_cancel(tag)  # unacked prefetched messages go back to the queue
        finally:
            self.connection.close()
        return self.seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dept", required=True, help="department code, e.g. gas")
    parser.add_argument(
        "--amqp-uri",
        default=os.environ.get("AMQP_URI"),
        help="amqp://dept-<code>:<password>@host:5672/%%2F (default: $AMQP_URI)",
    )
    parser.add_argument("--state", type=Path, default=None, help="file of handled order ids")
    parser.add_argument("--max-messages", type=int, default=None, help="stop after this many")
    parser.add_argument("--idle-exit", type=float, default=None, help="stop after this many seconds without a message")
    args = parser.parse_args()
    if not args.amqp_uri:
        parser.error("give --amqp-uri or set AMQP_URI")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("amqp").setLevel(logging.WARNING)
    state = args.state or Path(f"handled-orders-{args.dept}.json")
    consumer = DepartmentConsumer(args.amqp_uri, args.dept, state, args.max_messages)
    n = consumer.run(args.idle_exit)
    log.info("handled %d message(s)", n)


if __name__ == "__main__":
    main()
