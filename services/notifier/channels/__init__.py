"""Delivery channels: one message in, one real delivery attempt out.

from services.notifier.channels import ChannelSettings, OutgoingMessage, send
"""

from services.notifier.channels.base import (
    ChannelName,
    ChannelSettings,
    DeliveryOutcome,
    OutgoingMessage,
    send,
)

__all__ = ["ChannelName", "ChannelSettings", "DeliveryOutcome", "OutgoingMessage", "send"]
