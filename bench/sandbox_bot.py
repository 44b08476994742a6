"""A bot served over real HTTP and wired to the sandbox workspace, for the Slack benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aiohttp import web
from pydantic import SecretStr

from bot.app import BotOptions, create_app
from bot.sandbox import Channel, SandboxWorkspace, SlackUser, User, UserGroup
from bot.settings import Settings
from handlers.tasks import BackgroundTasks
from services.bundle import Services

TOKEN, SECRET = "xoxb-bench", "bench-secret"


@dataclass
class RunningBot:
    workspace: SandboxWorkspace
    slack: SlackUser
    tasks: BackgroundTasks


@asynccontextmanager
async def running_bot(
    services: Services,
    *,
    users: Sequence[User],
    channels: Sequence[Channel],
    usergroups: Sequence[UserGroup] = (),
    options: BotOptions | None = None,
) -> AsyncIterator[RunningBot]:
    async with AsyncExitStack() as stack:
        workspace = await stack.enter_async_context(
            SandboxWorkspace(bot_token=TOKEN, users=users, channels=channels, usergroups=usergroups)
        )
        settings = Settings(
            slack_bot_token=SecretStr(TOKEN),
            slack_signing_secret=SecretStr(SECRET),
            slack_api_url=workspace.base_url,
        )
        tasks = await stack.enter_async_context(BackgroundTasks(grace_seconds=30))
        app = create_app(settings, services, tasks=tasks, options=options or BotOptions())
        runner = web.AppRunner(app.web_app(), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        slack = await stack.enter_async_context(
            SlackUser(workspace, f"http://{host}:{port}/slack/events", SECRET)
        )
        yield RunningBot(workspace, slack, tasks)
