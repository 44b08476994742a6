"""`rollback-bot demo`: a real rollback on embedded defaults, cleaned up afterwards.

A throwaway PostgreSQL cluster holds the bot's run store and a demo shop database with two
backups; a Compose-style project (containers built FROM scratch) serves a health endpoint;
a bad deployment changes the database. Then an incident is played in the sandbox Slack
workspace: a responder types `/rollback demo`, an approver clicks Approve, and the channel
is printed as it changes while the bot rolls the database back to the newest backup
(`--cli`: the same rollback through the command line instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiodocker
import asyncpg
from pydantic import SecretStr

from bot import terminal
from bot.app import BotOptions, listening, running_app
from bot.environments_file import load_environments
from bot.resources import open_services
from bot.settings import Settings, load_settings
from handlers.ids import ActionId
from sandbox.demo_environment import (
    DemoEnvironmentError,
    ServiceSpec,
    build_demo_image,
    create_compose_project,
    remove_compose_project,
    seed_demo_database,
    table_checksums,
)
from sandbox.slack import (
    Channel,
    Delivery,
    LiveTranscript,
    Message,
    SandboxWorkspace,
    SlackUser,
    User,
    UserGroup,
)
from sandbox.throwaway_postgres import ThrowawayPostgres, ThrowawayPostgresError
from sandbox.web import EnvironmentPanel, Person, WorkspacePage, rollback_running
from services.backups import list_backups
from services.bundle import Services
from services.containers import DockerRuntime
from services.database import DatabaseTarget, dump_database
from services.pgtools import PgTools
from services.run_store import RunRecord, RunStatus
from services.workflow import plan_rollback, rollback_database

ENVIRONMENT = "demo"
BAD_DEPLOYMENT = """
CREATE TABLE feature_flags (name text PRIMARY KEY, enabled boolean NOT NULL);
INSERT INTO feature_flags VALUES ('new_checkout', true);
ALTER TABLE customers ADD COLUMN loyalty_tier text DEFAULT 'gold';
DELETE FROM orders WHERE id % 3 = 0;
UPDATE orders SET status = 'cancelled' WHERE id % 5 = 0;
"""

# The sandbox workspace's people and channel.
ALICE = User(id="U0ALICE", name="alice", real_name="Alice (on call)")
BOB = User(id="U0BOB", name="bob", real_name="Bob (SRE)")
CAROL = User(id="U0CAROL", name="carol", real_name="Carol (DBA)")
DAVE = User(id="U0DAVE", name="dave", real_name="Dave (support)")  # neither asks nor approves
ERIN = User(id="U0ERIN", name="erin", real_name="Erin (engineering manager)")  # escalations
SRE = UserGroup(id="S0SRE", handle="sre", users=(BOB.id,), name="SRE")
INCIDENTS = Channel(id="C0INCIDENTS", name="incidents")
BOT_TOKEN = "xoxb-rollback-bot-demo"  # a sandbox-only token, meaningless to Slack

APPROVER_PAUSE = 2.0  # seconds bob spends reading the plan before he clicks
RUN_TIMEOUT = 180.0  # seconds for the whole rollback, from the click to the report
# As `serve` runs the bot, but the live message updated every 0.2 s rather than 1 s: the
# demo's rollback takes about a second, and its steps are what the demo shows.
BOT_OPTIONS = BotOptions(update_interval=0.2)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _environments_file(folder: Path, project: str, store_port: int, web_url: str) -> Path:
    path = folder / "rollback.toml"
    path.write_text(
        f"""# Written by `rollback-bot demo`.
[environments.{ENVIRONMENT}]
compose_project = "{project}"
database_url = "postgresql://postgres@127.0.0.1:{store_port}/shop"
stop_timeout_seconds = 5

[environments.{ENVIRONMENT}.health]
deadline_seconds = 30
interval_seconds = 0.3

[[environments.{ENVIRONMENT}.health.http]]
name = "web"
url = "{web_url}"

# alice (on call) or the SRE group may ask; one SRE, not the requester, approves.
[environments.{ENVIRONMENT}.approval]
requesters = ["{ALICE.id}", "{SRE.id}"]
approvers = ["{SRE.id}"]
required_approvals = 1

# carol gets a direct message; the SRE group is mentioned in the rollback's channel.
[environments.{ENVIRONMENT}.contacts]
users = ["{CAROL.id}"]
usergroups = ["{SRE.id}"]
"""
    )
    return path


async def execute_sql(dsn: str, sql: str) -> None:
    """Run SQL on the demo's database (a connection of its own, always closed)."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _counts(dsn: str) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        customers = await connection.fetchval("SELECT count(*) FROM customers")
        orders = await connection.fetchval("SELECT count(*) FROM orders")
        flags = await connection.fetchval("SELECT to_regclass('public.feature_flags') IS NOT NULL")
    finally:
        await connection.close()
    extra = ", feature_flags table present" if flags else ""
    return f"{customers} customers, {orders} orders{extra}"


@dataclass(frozen=True)
class DemoStage:
    """What the plays need: the environments file, the run store, the shop database."""

    folder: Path
    config: Path
    cluster: ThrowawayPostgres
    shop: str
    newest_backup: str
    expected: dict[str, str]
    project: str
    backups: Path

    def settings(self, **slack: object) -> Settings:
        return load_settings(
            database_url=self.cluster.superuser_dsn("rollback_bot"),
            rollback_config=self.config,
            pg_bin=str(self.cluster.bin_dir),
            **slack,
        )


@asynccontextmanager
async def _demo_stage(docker: aiodocker.Docker, *, rows: int) -> AsyncIterator[DemoStage]:
    """Throwaway PostgreSQL, the shop database and its backups, the containers; all removed
    when the block ends, however it ends."""
    folder = Path(tempfile.mkdtemp(prefix="rollback-bot-demo-"))
    try:
        async with AsyncExitStack() as stack:
            _say("Setting up: throwaway PostgreSQL, demo containers, a shop database …")
            await DockerRuntime(docker).ping()
            image = await build_demo_image(docker)
            cluster = await stack.enter_async_context(ThrowawayPostgres(fast=True))
            await cluster.create_database("rollback_bot")
            await cluster.create_database("shop")
            shop = cluster.superuser_dsn("shop")
            await seed_demo_database(shop, rows=rows)

            backups = folder / "instances" / ENVIRONMENT / "backups"
            backups.mkdir(parents=True)
            target = DatabaseTarget(shop, PgTools(cluster.bin_dir))
            stamp = datetime.now(UTC) - timedelta(hours=26)
            await dump_database(target, backups / f"pre-deployment-{stamp:%Y%m%d-%H%M%S}.dump")
            await execute_sql(
                shop,
                "INSERT INTO customers (name, email) SELECT 'c' || g, 'c' || g || '@shop.test'"
                " FROM generate_series(1, 50) g",
            )
            stamp = datetime.now(UTC) - timedelta(hours=2)
            newest = await dump_database(
                target, backups / f"pre-migration-{stamp:%Y%m%d-%H%M%S}.dump"
            )
            expected = await table_checksums(shop)
            _say(f"  shop database at the newest backup: {await _counts(shop)}")

            # Its own name, so that two demos (or a test and a demo) on one engine never meet.
            name = f"rollback-demo-{secrets.token_hex(2)}"
            stack.push_async_callback(remove_compose_project, docker, name)
            project = await create_compose_project(
                docker,
                name,
                [ServiceSpec("web", "web"), ServiceSpec("worker", "worker")],
                image,
            )
            _say(f"  Compose project {name}: web (health endpoint), worker")
            await execute_sql(shop, BAD_DEPLOYMENT)
            _say(f"  after a bad deployment:             {await _counts(shop)}")
            _say()
            yield DemoStage(
                folder=folder,
                config=_environments_file(folder, name, cluster.port, project.web_urls["web"]),
                cluster=cluster,
                shop=shop,
                newest_backup=newest.name,
                expected=expected,
                project=name,
                backups=backups,
            )
            _say("Cleaning up …")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _play_on_command_line(stage: DemoStage) -> bool:
    """`rollback-bot rollback demo --yes`, as an operator would type it."""
    settings = stage.settings()
    environments = load_environments(stage.config)
    async with open_services(settings, environments) as services:
        _say(f"$ rollback-bot backups {ENVIRONMENT}")
        _say("\n".join(terminal.backup_lines(await list_backups(environments[ENVIRONMENT]))))
        _say()
        _say(f"$ rollback-bot rollback {ENVIRONMENT} --yes")
        plan = await plan_rollback(services, ENVIRONMENT, None)
        _say("\n".join(terminal.plan_lines(plan)))
        _say()
        with terminal.StepView() as view:
            result = await rollback_database(
                services, plan, requested_by="demo (command line)", listener=view
            )
        _say("\n".join(terminal.result_lines(result)))
        _say()
        return result.ok


def _title(text: str) -> None:
    _say(text)
    _say("─" * len(text))
    _say()


def _act(transcript: LiveTranscript, text: str) -> None:
    """Print what a person does next, after everything the channel showed before it."""
    transcript.flush()
    _say(f">>> {text}")
    _say()


@asynccontextmanager
async def demo_workspace() -> AsyncIterator[SandboxWorkspace]:
    """The sandbox Slack workspace with the demo's people and #incidents."""
    async with SandboxWorkspace(
        bot_token=BOT_TOKEN,
        users=[ALICE, BOB, CAROL, DAVE, ERIN],
        usergroups=[SRE],
        channels=[INCIDENTS],
    ) as workspace:
        yield workspace


@asynccontextmanager
async def bot_serving(
    stage: DemoStage, workspace: SandboxWorkspace, options: BotOptions = BOT_OPTIONS
) -> AsyncIterator[tuple[Services, SlackUser, str]]:
    """The bot served as `serve` serves it, signed requests and all: (services, a SlackUser
    sending to the bot, the bot's request URL)."""
    signing_secret = secrets.token_hex(16)
    settings = stage.settings(
        slack_bot_token=SecretStr(BOT_TOKEN),
        slack_signing_secret=SecretStr(signing_secret),
        slack_api_url=workspace.base_url,
    )
    environments = load_environments(stage.config)
    async with (
        open_services(settings, environments) as services,
        running_app(settings, services, options=options) as app,
        listening(app, host="127.0.0.1", port=0) as url,
        SlackUser(workspace, url, signing_secret) as slack,
    ):
        yield services, slack, url


def _describe_workspace(workspace: SandboxWorkspace, url: str) -> None:
    _title("Sandbox Slack workspace")
    _say(f"  Web API       {workspace.base_url}")
    _say(f"  rollback-bot  {url} (requests signed as Slack signs them)")
    _say(f"  people        alice (on call), bob (@{SRE.handle}), carol (DBA), dave (support),")
    _say("                erin (engineering manager)")
    _say(f"  channel       #{INCIDENTS.name}")
    _say(f"  approval      1 approval from @{SRE.handle}")
    _say(f"  contacts      carol (direct message), @{SRE.handle} (mentioned)")
    _say()


async def _play_in_slack(stage: DemoStage) -> bool:
    """The incident in the sandbox Slack workspace, the bot served as `serve` serves it."""
    async with demo_workspace() as workspace:
        width = min(100, shutil.get_terminal_size((100, 24)).columns)
        transcript = LiveTranscript(workspace, width=width)
        follow = asyncio.create_task(transcript.follow(), name="demo-transcript")
        try:
            async with bot_serving(stage, workspace) as (services, slack, url):
                _describe_workspace(workspace, url)
                _title(f"#{INCIDENTS.name}, as it happens")
                run = await _incident(workspace, slack, services, transcript)
        finally:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
            transcript.flush()  # what arrived while the bot shut down
    if run is None:
        return False
    _say(f"Run {run.id} {run.status.value}.")
    _say()
    return run.status is RunStatus.SUCCEEDED


async def _serve_page(stage: DemoStage, docker: aiodocker.Docker, port: int) -> None:
    """The workspace as a page in the browser; people act there, until Ctrl-C."""
    async with (
        demo_workspace() as workspace,
        bot_serving(stage, workspace) as (services, slack, url),
    ):
        busy = rollback_running(services.store, ENVIRONMENT)
        panel = EnvironmentPanel(docker, stage.project, stage.shop, stage.backups, busy=busy)
        people = [
            Person(ALICE.id, "requester"),
            Person(BOB.id, "approver"),
            Person(CAROL.id, "contact"),
            Person(DAVE.id, "outsider"),
        ]
        async with WorkspacePage(
            workspace, slack, channel=INCIDENTS.id, people=people, panel=panel, port=port
        ) as page:
            _describe_workspace(workspace, url)
            _title("In the browser")
            _say(f"  Open {page.url}")
            _say(f"  As alice, type /rollback {ENVIRONMENT}; switch to bob and click Approve.")
            _say("  Ctrl-C ends the demo and removes everything it made.")
            _say()
            await asyncio.Event().wait()  # until Ctrl-C cancels it


async def _incident(
    workspace: SandboxWorkspace,
    slack: SlackUser,
    services: Services,
    transcript: LiveTranscript,
) -> RunRecord | None:
    """alice asks, bob approves; the finished run (None if it went wrong on the way).

    On Ctrl-C, what a person already did is seen through before the bot shuts down: a
    request already sent is answered, a rollback already approved finishes and is reported.
    """
    sent: list[asyncio.Task[Delivery]] = []

    async def send(request: Coroutine[Any, Any, Delivery]) -> Delivery:
        # Shielded: Ctrl-C stops the demo, not a request half-way to the bot.
        sent.append(asyncio.create_task(request))
        return await asyncio.shield(sent[-1])

    try:
        _act(transcript, f"alice types /rollback {ENVIRONMENT} in #{INCIDENTS.name}")
        delivery = await send(slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", ENVIRONMENT))
        if delivery.status != 200:
            _say(f"The bot answered the command with HTTP {delivery.status}: {delivery.body}")
            return None
        plan = await workspace.wait_for(lambda: _plan_message(workspace), 30)
        await asyncio.sleep(APPROVER_PAUSE)
        _act(transcript, "bob reads the plan and clicks Approve")
        delivery = await send(slack.click(BOB.id, plan, ActionId.APPROVE))
        if delivery.status != 200:
            _say(f"The bot answered the click with HTTP {delivery.status}: {delivery.body}")
            return None
        return await _finished_and_reported(workspace, services)
    except TimeoutError:
        transcript.flush()
        _say("The rollback did not finish in time; the channel above shows how far it got.")
        return None
    except asyncio.CancelledError:
        transcript.flush()
        _say("Interrupted (Ctrl-C): letting what was already asked of the bot finish …")
        with contextlib.suppress(TimeoutError):
            await _settle(workspace, services, sent)
        raise


async def _settle(
    workspace: SandboxWorkspace, services: Services, sent: list[asyncio.Task[Delivery]]
) -> None:
    """Wait for the bot to answer what was sent, and for an approved rollback to end."""
    await asyncio.gather(*sent, return_exceptions=True)
    if len(sent) == 1:  # the command: its plan message, or its refusal
        await workspace.wait_for(
            lambda: workspace.messages(INCIDENTS.id) or workspace.ephemerals(ALICE.id), 10
        )
    elif len(sent) == 2:  # the click: bob is told what it did once it is decided
        await workspace.wait_for(lambda: workspace.ephemerals(BOB.id), 10)
    runs = await services.store.recent_runs(ENVIRONMENT, 1)
    if runs and runs[0].status in (RunStatus.APPROVED, RunStatus.RUNNING):
        await _finished_and_reported(workspace, services)


def _plan_message(workspace: SandboxWorkspace) -> Message | None:
    """The bot's first message in the channel: the plan, with the buttons."""
    return next(iter(workspace.messages(INCIDENTS.id)), None)


async def _finished_and_reported(workspace: SandboxWorkspace, services: Services) -> RunRecord:
    """The run once it has finished, its report is in the thread and carol was told."""
    run = await _finished_run(services, RUN_TIMEOUT)
    ts = run.slack_ts or ""
    await workspace.wait_for(
        lambda: workspace.thread(INCIDENTS.id, ts) and len(workspace.dms(CAROL.id)) >= 2, 30
    )
    return run


async def _finished_run(services: Services, timeout: float) -> RunRecord:
    """The demo environment's run, once it has finished."""
    async with asyncio.timeout(timeout):
        while True:
            runs = await services.store.recent_runs(ENVIRONMENT, 1)
            if runs and runs[0].finished_at is not None:
                return runs[0]
            await asyncio.sleep(0.1)


async def run_demo(
    *, rows: int, slack: bool = True, web_port: int | None = None, scenario: str | None = None
) -> int:
    """Set up, play the incident (in the sandbox Slack workspace, or on the command line),
    check that every table equals the backup, clean up; 0 only when all went well.

    With ``web_port`` (0: a free port) the workspace is served as a page in the browser
    instead, where people play the incident themselves, until Ctrl-C. With ``scenario``,
    the game days play instead (:mod:`sandbox.scenarios`).
    """
    if scenario is not None:
        from sandbox.scenarios import run_scenarios  # it builds on this module

        return await run_scenarios(scenario, rows=rows)
    docker = aiodocker.Docker()
    try:
        async with _demo_stage(docker, rows=rows) as stage:
            if web_port is not None:
                await _serve_page(stage, docker, web_port)  # ends with Ctrl-C
                return 0
            ok = await (_play_in_slack(stage) if slack else _play_on_command_line(stage))
            same = await table_checksums(stage.shop) == stage.expected
            _say(f"  shop database now:                  {await _counts(stage.shop)}")
            _say(f"  every table equals {stage.newest_backup}: {'yes' if same else 'NO'}")
            return 0 if ok and same else 1
    except (DemoEnvironmentError, ThrowawayPostgresError) as error:
        print(f"error: the demo could not set up: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        await docker.close()
