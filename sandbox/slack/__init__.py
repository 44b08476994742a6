"""A local Slack workspace for tests and the demo: Web API server, Slack-side client, transcript."""

from sandbox.slack.blocks import InvalidBlocksError, validate_blocks
from sandbox.slack.models import (
    ApiCall,
    Channel,
    Message,
    MessageEdit,
    OpenedView,
    User,
    UserAction,
    UserGroup,
)
from sandbox.slack.ratelimit import DEFAULT_RATE_LIMITS, RateLimit
from sandbox.slack.slack_user import Delivery, SlackUser
from sandbox.slack.transcript import LiveTranscript, render_entry, render_message
from sandbox.slack.workspace import SandboxWorkspace

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
