"""An environment to watch after its rollback: a web container that prints a known line and
a secret when it starts, and a health endpoint the test switches from passing to failing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from sandbox.demo_environment import ComposeProject, ServiceSpec
from services.environments import HealthConfig, HttpCheck
from tests.conftest import Stage

KNOWN_LINE = "orders-service ready: KNOWN-LINE-4c1e"
SECRET = "s3cr3t-api-key-9b7d2e"
# Also printed, never configured: a Slack token and a password inside a URL.
TOKEN = "xoxb-1234567890-leaked-token"
URL_PASSWORD = "pw-in-url-5a5a"
CHATTY_WEB = ServiceSpec(
    "web",
    "web",
    command=(
        "/bin/busybox",
        "sh",
        "-c",
        f"echo '{KNOWN_LINE}'; echo 'using api key {SECRET} and {TOKEN}'; "
        f"echo 'db at postgresql://app:{URL_PASSWORD}@db:5432/app'; "
        "echo 'a ``` fence and <!channel> & more'; "
        "exec /bin/busybox httpd -f -p 8080 -h /www",
    ),
)


class HealthSwitch:
    """An HTTP health endpoint answering 200, or 500 once switched off."""

    def __init__(self) -> None:
        self.status = 200
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(status=self.status, text="ok" if self.status == 200 else "down")


@contextlib.asynccontextmanager
async def health_switch() -> AsyncIterator[HealthSwitch]:
    switch = HealthSwitch()
    app = web.Application()
    app.router.add_get("/health", switch.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        switch.url = f"http://{host}:{port}/health"
        yield switch
    finally:
        await runner.cleanup()


MakeProject = Callable[[list[ServiceSpec]], Awaitable[ComposeProject]]


async def monitored_settings(
    make_compose_project: MakeProject,
    switch: HealthSwitch,
    *,
    minutes: float,
    interval: float = 0.3,
) -> tuple[ComposeProject, dict[str, Any]]:
    """The chatty project, and the environment's settings that watch it: its own /health,
    and the switch, which stands for the web service's health."""
    project = await make_compose_project([CHATTY_WEB])
    health = HealthConfig(
        http=(
            HttpCheck(name="web", url=project.web_urls["web"], service="web"),
            HttpCheck(name="orders-api", url=switch.url, service="web", timeout_seconds=1),
        ),
        deadline_seconds=20,
        interval_seconds=0.2,
    )
    settings = {
        "compose_project": project.project,
        "health": health,
        "monitor_minutes": minutes,
        "monitor_interval_seconds": interval,
        "secrets": (SecretStr(SECRET),),
    }
    return project, settings


def watched(stage: Stage, settings: dict[str, Any]) -> Stage:
    return stage.with_environment(**settings)
