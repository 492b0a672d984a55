#!/usr/bin/env python3
"""A department's consumer of gridbus dispatch orders (runnable example; needs only pika).

    pip install pika==1.4.4
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
import time
from pathlib import Path
from typing import Mapping
from urllib.parse import unquote, urlparse

import pika

log = logging.getLogger("department_consumer")

REPLIES_EXCHANGE = "gridbus.replies"


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
        params = pika.URLParameters(amqp_uri)
        params.heartbeat = 30
        self.connection = pika.BlockingConnection(params)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()  # basic_publish raises unless confirmed
        self.channel.basic_qos(prefetch_count=10)

    def reply(self, order: dict, action: str, note: str, **extra: object) -> None:
        body = {
            "reply_id": f"{self.dept}-{order['order_id']}-{action}",  # stable: a resend is a repeat
            "case_id": order["case_id"],
            "action": action,
            "note": note,
            **extra,
        }
        self.channel.basic_publish(
            exchange=REPLIES_EXCHANGE,
            routing_key=self.routing_key,
            body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=2,  # persistent
                user_id=self.user,  # checked by RabbitMQ
                message_id=body["reply_id"],
                correlation_id=order.get("correlation_id"),
                timestamp=int(time.time()),
            ),
            mandatory=True,
        )

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

    def on_message(self, ch, method, properties, body: bytes) -> None:
        try:
            order = json.loads(body)
            if (
                order.get("kind") not in ("dispatch_order", "dispatch_withdrawn")
                or "order_id" not in order
                or "case_id" not in order
            ):
                raise ValueError("not a dispatch order or withdrawal")
        except ValueError as exc:
            log.error("unreadable message %s: %s", properties.message_id, exc)
            ch.basic_reject(method.delivery_tag, requeue=False)  # -> dept.<code>.dead
            return
        if order["kind"] == "dispatch_withdrawn":
            # the command centre dispatched the case elsewhere: stop work, never reply to it
            log.info("order %s withdrawn by %s: %s", order["order_id"], order.get("by"), order.get("note"))
            self.handled.add(order["order_id"])
            ch.basic_ack(method.delivery_tag)
            return
        try:
            if order["order_id"] in self.handled:
                log.info("order %s already handled (redelivery)", order["order_id"])
            else:
                self.handle(order)
                self.handled.add(order["order_id"])
            ch.basic_ack(method.delivery_tag)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            log.error("reply not accepted by RabbitMQ (%s); order will be redelivered", exc)
            ch.basic_nack(method.delivery_tag, requeue=True)
        self.seen += 1
        if self.max_messages and self.seen >= self.max_messages:
            ch.stop_consuming()

    def run(self, inactivity_timeout: float | None = None) -> int:
        log.info("consuming %s as %s", self.queue, self.user)
        if inactivity_timeout is None:
            self.channel.basic_consume(self.queue, self.on_message)
            try:
                self.channel.start_consuming()
            finally:
                self.connection.close()
            return self.seen
        # bounded mode (tests, one-off runs): stop after a quiet period
        for method, properties, body in self.channel.consume(self.queue, inactivity_timeout=inactivity_timeout):
            if method is None:
                break
            self.on_message(self.channel, method, properties, body)
            if self.max_messages and self.seen >= self.max_messages:
                break
        self.channel.cancel()
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
    logging.getLogger("pika").setLevel(logging.WARNING)
    state = args.state or Path(f"handled-orders-{args.dept}.json")
    consumer = DepartmentConsumer(args.amqp_uri, args.dept, state, args.max_messages)
    n = consumer.run(args.idle_exit)
    log.info("handled %d message(s)", n)


if __name__ == "__main__":
    main()
