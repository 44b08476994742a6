"""Fixtures for the sandbox Slack workspace: people, channels, a Web API client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.slack import Channel, SandboxWorkspace, User, UserGroup

# A running bot on a real stage, for the page's tests.
from tests.handlers.conftest import bot, make_bot  # noqa: F401

BOT_TOKEN = "xoxb-sandbox-test-token"
SIGNING_SECRET = "sandbox-signing-secret"

ALICE = User(id="U0ALICE", name="alice", real_name="Alice Responder")
BOB = User(id="U0BOB", name="bob", real_name="Bob Approver")
CAROL = User(id="U0CAROL", name="carol", real_name="Carol Contact")
ONCALL = UserGroup(id="S0ONCALL", handle="oncall", users=(BOB.id, CAROL.id), name="On call")
INCIDENTS = Channel(id="C0INCIDENTS", name="incidents")
OPS = Channel(id="C0OPS", name="ops")
PRIVATE = Channel(id="C0PRIVATE", name="private", members=frozenset({ALICE.id}))


@pytest.fixture
async def workspace() -> AsyncIterator[SandboxWorkspace]:
    async with SandboxWorkspace(
        bot_token=BOT_TOKEN,
        users=[ALICE, BOB, CAROL],
        usergroups=[ONCALL],
        channels=[INCIDENTS, OPS, PRIVATE],
    ) as ws:
        yield ws


@pytest.fixture
def client(workspace: SandboxWorkspace) -> AsyncWebClient:
    return AsyncWebClient(token=BOT_TOKEN, base_url=workspace.base_url)
