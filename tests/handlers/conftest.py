"""A running bot (create_app over HTTP) wired to the sandbox workspace and a real stage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.app import BotOptions, create_app
from bot.settings import Settings
from handlers.tasks import BackgroundTasks
from sandbox.slack import Channel, Message, SandboxWorkspace, SlackUser, User, UserGroup
from services.containers import Runtime
from services.environments import ApprovalPolicy, Contacts, GitTarget, Strategy
from services.run_store import RunRecord
from tests.git_repos import git_http, upstream
from tests.services.conftest import Stage

__all__ = ["git_http", "upstream"]  # the git fixtures, for the code rollback tests

BOT_TOKEN = "xoxb-handlers-test-token"
SIGNING_SECRET = "handlers-signing-secret"

ALICE = User(id="U0ALICE", name="alice", real_name="Alice Responder")
BOB = User(id="U0BOB", name="bob", real_name="Bob Approver")
ERIN = User(id="U0ERIN", name="erin", real_name="Erin Approver")
CAROL = User(id="U0CAROL", name="carol", real_name="Carol DBA")
DAVE = User(id="U0DAVE", name="dave", real_name="Dave Bystander")
MAX = User(id="U0MAX", name="max", real_name="Max Manager")
ONCALL = UserGroup(id="S0ONCALL", handle="oncall", users=(BOB.id, ERIN.id), name="On call")
DBA = UserGroup(id="S0DBA", handle="dba", users=(CAROL.id,), name="DBAs")
INCIDENTS = Channel(id="C0INCIDENTS", name="incidents")
ALERTS = Channel(id="C0ALERTS", name="alerts")

POLICY = ApprovalPolicy(
    requesters=(ALICE.id, BOB.id, ERIN.id),
    approvers=(ONCALL.id,),
    required_approvals=1,
    expiry_minutes=30,
)
CONTACTS = Contacts(
    users=(CAROL.id,),
    usergroups=(DBA.id,),
    escalation_users=(MAX.id,),
    channel=ALERTS.id,
)


@dataclass
class Bot:
    workspace: SandboxWorkspace
    slack: SlackUser
    stage: Stage
    tasks: BackgroundTasks
    url: str

    @property
    def environment(self) -> str:
        return self.stage.environment.name

    async def command(self, user: User, text: str, **kwargs: Any) -> Message:
        """Type `/rollback text` in #incidents; the plan message the bot posts."""
        before = len(self.workspace.messages(INCIDENTS.id))
        delivery = await self.slack.send_command(user.id, INCIDENTS.id, "/rollback", text, **kwargs)
        assert delivery.status == 200, delivery
        return await self.workspace.wait_for(
            lambda: (
                self.workspace.messages(INCIDENTS.id)[before:]
                and self.workspace.messages(INCIDENTS.id)[before]
            ),
            timeout=10,
        )

    async def ephemeral(self, user: User, count: int = 1, timeout: float = 10) -> Message:
        """The user's `count`-th ephemeral message (1-based), once it arrives."""
        shown = await self.workspace.wait_for(
            lambda: (
                len(self.workspace.ephemerals(user.id)) >= count
                and self.workspace.ephemerals(user.id)
            ),
            timeout=timeout,
        )
        return shown[count - 1]

    async def runs(self) -> list[RunRecord]:
        return await self.stage.services.store.recent_runs(self.environment, 50)

    async def wait_for_run(
        self, run_id: str, condition: Callable[[RunRecord], bool], timeout: float = 60
    ) -> RunRecord:
        """The run, once `condition` holds for it in the run store."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            run = await self.stage.services.store.get(run_id)
            if condition(run):
                return run
            if loop.time() > deadline:
                raise TimeoutError(f"run {run_id} is {run.status}; condition not met")
            await asyncio.sleep(0.05)


MakeBot = Callable[..., Any]


@pytest.fixture
async def make_bot(stage: Stage) -> AsyncIterator[MakeBot]:
    """Factory: ``await make_bot(policy=..., contacts=..., rate_limits=...)`` starts a bot."""
    stack: list[Callable[[], Any]] = []

    async def make(
        *,
        policy: ApprovalPolicy = POLICY,
        contacts: Contacts = CONTACTS,
        options: BotOptions | None = None,
        workspace_args: dict[str, Any] | None = None,
        strategy: Strategy = Strategy.IN_PLACE,
        database_url: str | None = None,
        runtime: Runtime | None = None,
        git: GitTarget | None = None,
        environment: dict[str, Any] | None = None,
    ) -> Bot:
        staged = stage.with_environment(
            approval=policy, contacts=contacts, strategy=strategy, git=git
        )
        if environment is not None:  # more of the environment's settings
            staged = staged.with_environment(**environment)
        if database_url is not None:
            staged = staged.with_environment(database_url=SecretStr(database_url))
        if runtime is not None:
            staged = replace(staged, services=replace(staged.services, runtime=runtime))
        workspace = SandboxWorkspace(
            bot_token=BOT_TOKEN,
            users=[ALICE, BOB, ERIN, CAROL, DAVE, MAX],
            usergroups=[ONCALL, DBA],
            channels=[INCIDENTS, ALERTS],
            **(workspace_args or {}),
        )
        await workspace.start()
        stack.append(workspace.close)
        settings = Settings(
            slack_bot_token=SecretStr(BOT_TOKEN),
            slack_signing_secret=SecretStr(SIGNING_SECRET),
            slack_api_url=workspace.base_url,
        )
        tasks = BackgroundTasks(grace_seconds=60)
        app = create_app(
            settings,
            staged.services,
            tasks=tasks,
            options=options or BotOptions(sweep_interval=0.2),
        )
        await tasks.__aenter__()
        stack.append(tasks.aclose)
        runner = web.AppRunner(app.web_app(), access_log=None)
        await runner.setup()
        stack.append(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}/slack/events"
        slack = SlackUser(workspace, url, SIGNING_SECRET)
        stack.append(slack.close)
        return Bot(workspace, slack, staged, tasks, url)

    try:
        yield make
    finally:
        for close in reversed(stack):
            await close()


@pytest.fixture
async def bot(make_bot: MakeBot) -> Bot:
    result: Bot = await make_bot()
    return result
