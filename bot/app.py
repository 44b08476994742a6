"""The Bolt app: built by `create_app`, served over HTTP (aiohttp) or Socket Mode by `serve`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.logs import bolt_logger
from bot.metrics import BotMetrics, RunMetrics, SlackCallMetrics, add_routes, serving
from bot.resources import open_services
from bot.settings import Settings
from handlers.listeners import Redeliveries, register
from handlers.live import LiveMessages
from handlers.runs import Rollbacks
from handlers.slack_people import SlackDirectory, SlackNotifier
from handlers.tasks import BackgroundTasks
from services.bundle import Services
from services.environments import Environment
from services.errors import ConfigError

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


@dataclass(frozen=True)
class BotOptions:
    update_interval: float = 1.0  # at most one chat.update per message per this many seconds
    sweep_interval: float = 5.0  # how often expiry and escalation are checked
    usergroup_cache_seconds: float = 60.0
    rate_limit_retries: int = 5
    slack_timeout_seconds: int = 15  # one Web API call: a hung Slack is an error, not a wait


class ObservedApp(AsyncApp):
    """The Bolt app, timing each request from its arrival to its acknowledgement. Bolt's
    dispatch returns once the listener has acked (in HTTP and Socket Mode alike), whereas a
    global middleware's next() returns before any listener runs."""

    metrics: BotMetrics | None = None

    async def async_dispatch(self, req: AsyncBoltRequest) -> BoltResponse:
        began = time.perf_counter()
        try:
            return await super().async_dispatch(req)
        finally:
            if self.metrics is not None:
                self.metrics.observe_ack(req.body, time.perf_counter() - began)


def create_client(
    settings: Settings,
    *,
    session: Any = None,
    options: BotOptions = BotOptions(),
    metrics: BotMetrics | None = None,
) -> AsyncWebClient:
    """The Web API client: SLACK_API_URL, and 429s retried after their Retry-After (each
    failure and 429 counted first, with `metrics`)."""
    if settings.slack_bot_token is None:
        raise ConfigError(["SLACK_BOT_TOKEN: not set (the bot's xoxb- token)"])
    return AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        session=session,
        timeout=options.slack_timeout_seconds,
        retry_handlers=[
            *([SlackCallMetrics(metrics)] if metrics is not None else []),
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=options.rate_limit_retries),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def create_app(
    settings: Settings,
    services: Services,
    *,
    tasks: BackgroundTasks,
    client: AsyncWebClient | None = None,
    options: BotOptions = BotOptions(),
    metrics: BotMetrics | None = None,
) -> AsyncApp:
    """The Bolt app; background work (rollbacks, the sweeper) goes to `tasks`, which the
    caller runs (``async with tasks``) and so ends. With `metrics`, requests' ack times and
    the runs' steps, approvals and outcomes are measured."""
    if settings.slack_signing_secret is None:
        raise ConfigError(["SLACK_SIGNING_SECRET: not set (from the app's Basic Information)"])
    client = client or create_client(settings, options=options)
    # The token lives on the client only; Bolt's lines go through `bolt_logger` (bounded).
    app = ObservedApp(
        signing_secret=settings.slack_signing_secret.get_secret_value(),
        client=client,
        logger=bolt_logger(),
    )
    app.metrics = metrics
    live = LiveMessages(client, services, tasks, interval=options.update_interval)
    rollbacks = Rollbacks(
        services=services,
        client=client,
        tasks=tasks,
        live=live,
        directory=SlackDirectory(client, ttl=options.usergroup_cache_seconds),
        notifier=SlackNotifier(client),
        observer=RunMetrics(metrics, services) if metrics is not None else None,
    )
    tasks.add_service("approval-sweeper", lambda: rollbacks.watch(options.sweep_interval))

    async def inject_services(context: dict[str, Any], next: Callable[[], Awaitable[None]]) -> None:
        context["services"] = services
        context["rollbacks"] = rollbacks
        await next()

    app.use(Redeliveries().middleware())
    app.use(inject_services)
    register(app)
    return app


async def _wait_for_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()


@asynccontextmanager
async def running_app(
    settings: Settings,
    services: Services,
    *,
    options: BotOptions = BotOptions(),
    metrics: BotMetrics | None = None,
) -> AsyncIterator[AsyncApp]:
    """The app as `serve` runs it: its client on the services' HTTP session, its background
    tasks running until the block ends (running rollbacks are waited for first)."""
    client = create_client(settings, session=services.http, options=options, metrics=metrics)
    tasks = BackgroundTasks()
    app = create_app(
        settings, services, tasks=tasks, client=client, options=options, metrics=metrics
    )
    async with tasks:
        yield app


@asynccontextmanager
async def listening(
    app: AsyncApp,
    *,
    host: str,
    port: int,
    more_routes: Callable[[web.Application], None] | None = None,
) -> AsyncIterator[str]:
    """`app` served over HTTP at `host`:`port` (0: a free port), with `more_routes` added
    beside it; yields its request URL."""
    web_app = app.web_app(path=EVENTS_PATH)
    if more_routes is not None:
        more_routes(web_app)
    async with serving(web_app, host=host, port=port) as url:
        yield url + EVENTS_PATH


async def check_tokens(client: AsyncWebClient, settings: Settings) -> None:
    """A wrong token stops start-up with one clear line (slack_sdk would retry forever)."""
    problems = []
    try:
        await client.auth_test()
    except SlackApiError as error:
        problems.append(f"SLACK_BOT_TOKEN: Slack refused it ({error.response.get('error')})")
    if settings.slack_app_token is not None:
        token = settings.slack_app_token.get_secret_value()
        try:
            await client.apps_connections_open(app_token=token)
        except SlackApiError as error:
            problems.append(f"SLACK_APP_TOKEN: Slack refused it ({error.response.get('error')})")
    if problems:
        raise ConfigError(problems)


async def serve(
    settings: Settings,
    environments: Mapping[str, Environment],
    *,
    stop: Callable[[], Awaitable[None]] = _wait_for_stop,
    options: BotOptions = BotOptions(),
) -> None:
    """Run the bot until `stop` returns: Socket Mode with SLACK_APP_TOKEN, else HTTP on PORT;
    /healthz and /metrics on METRICS_PORT (default PORT: beside /slack/events over HTTP)."""
    metrics = BotMetrics()  # this process's registry, handed to whatever feeds it
    # Runs left behind by a process that died are recovered by the sweeper's first round,
    # at once, and announced in their channels.
    async with (
        open_services(settings, environments) as services,
        running_app(settings, services, options=options, metrics=metrics) as app,
        AsyncExitStack() as stack,
    ):
        await check_tokens(app.client, settings)
        endpoints = functools.partial(add_routes, metrics=metrics, services=services)
        metrics_port = settings.metrics_port if settings.metrics_port is not None else settings.port
        beside_slack = settings.slack_app_token is None and metrics_port == settings.port
        if settings.slack_app_token is not None:
            from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

            handler = AsyncSocketModeHandler(
                app,
                settings.slack_app_token.get_secret_value(),
                web_client=AsyncWebClient(base_url=settings.slack_api_url),
            )
            await handler.connect_async()  # type: ignore[no-untyped-call]
            stack.push_async_callback(handler.close_async)
            log.info("connected to Slack in Socket Mode")
        else:
            more = endpoints if beside_slack else None
            await stack.enter_async_context(
                listening(app, host="0.0.0.0", port=settings.port, more_routes=more)
            )
            log.info("listening on port %d at %s", settings.port, EVENTS_PATH)
        if not beside_slack:
            own = web.Application()
            endpoints(own)
            await stack.enter_async_context(serving(own, host="0.0.0.0", port=metrics_port))
        log.info("/healthz and /metrics on port %d", metrics_port)
        await stop()
