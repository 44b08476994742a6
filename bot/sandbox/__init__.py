"""A local Slack workspace for tests and the demo: Web API server, Slack-side client, transcript."""

from bot.sandbox.blocks import InvalidBlocksError, validate_blocks
from bot.sandbox.models import (
    ApiCall,
    Channel,
    Message,
    MessageEdit,
    OpenedView,
    User,
    UserAction,
    UserGroup,
)
from bot.sandbox.ratelimit import DEFAULT_RATE_LIMITS, RateLimit
from bot.sandbox.slack_user import Delivery, SlackUser
from bot.sandbox.transcript import LiveTranscript, render_entry, render_message
from bot.sandbox.workspace import SandboxWorkspace

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "ApiCall",
    "Channel",
    "Delivery",
    "InvalidBlocksError",
    "LiveTranscript",
    "Message",
    "MessageEdit",
    "OpenedView",
    "RateLimit",
    "SandboxWorkspace",
    "SlackUser",
    "User",
    "UserAction",
    "UserGroup",
    "render_entry",
    "render_message",
    "validate_blocks",
]
