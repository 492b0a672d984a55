"""An event's planned deliveries, kept in Redis while the notifier sends them itself.

The notifier sends an event's deliveries in the process that planned them, straight
after planning, instead of publishing one message per recipient and channel to
`notifier.deliveries` and consuming it again (per delivery that hop cost a confirmed
publish, a quorum enqueue, a delivery and a consumer run). The queue stays for what has
to wait or go elsewhere: retries (the delay queues feed it), a copy parked because
another replica holds its send lease, a delivery whose handling hit a bug, and what is
left of a wide fan-out after `IN_PROCESS_BUDGET_S`.

Why this is as safe as the hop was:

- **Recorded before the first send.** The plan is written here (`notify:plan:<event
  message id>`) before any of its deliveries is attempted, and the event is acked only
  after every one of them is finished (done marker and `notification_sent` record),
  handed to a delay queue, held for a digest or handed to the queue.
- **Killed in between.** The event stays unacked; RabbitMQ hands it to another replica or
  the restarted one, which finds this plan (the same deliveries, even if the case changed
  meanwhile: the first planning wins) and goes through it again: the done markers drop
  what was finished, the send lease keeps a copy from being sent twice at once, and the
  send count turns an interrupted send into at most one resend with the same delivery
  id (deliveries.py, "Crash between send and record").
- **Handled.** The plan is deleted; if that is lost, it expires after `PLAN_TTL_S`.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from services.notifier.deliveries import Delivery
from shared import redis_keys as keys

#: a plan outlives any redelivery of its event (the event waits in its queue while every
#: notifier is down); deleted as soon as its deliveries are handled
PLAN_TTL_S = 7 * 86400
#: seconds an event's handler spends sending its deliveries itself; what is left then goes
#: to notifier.deliveries (the worst case per delivery is the channel's timeout, 5 s, per channel tried)
IN_PROCESS_BUDGET_S = 20.0
_PLAN = TypeAdapter(list[Delivery])


class Plans:
    def __init__(self, client: Any) -> None:
        self.r = client

    def keep(self, event_message_id: str, planned: list[Delivery]) -> list[Delivery]:
        """Record `planned` unless this event's plan is recorded already, in one round trip;
        returns the recorded plan (an earlier try's, when there was one)."""
        key = keys.notify_plan(event_message_id)
        if planned:
            earlier = self.r.set(key, _PLAN.dump_json(planned), nx=True, ex=PLAN_TTL_S, get=True)
        else:  # nothing to send now; an earlier try may have planned something before the case changed
            earlier = self.r.get(key)
        return planned if earlier is None else _PLAN.validate_json(earlier)

    def forget(self, event_message_id: str) -> None:
        self.r.delete(keys.notify_plan(event_message_id))
