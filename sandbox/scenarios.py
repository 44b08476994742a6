"""Game days: the runbook's incidents played against the sandbox, with a pass/fail report.

`rollback-bot demo --scenario NAME` plays one scenario (or `all`) on a throwaway
PostgreSQL cluster, demo containers and the sandbox Slack workspace, the bot served as
`serve` serves it. Each scenario checks what a person would see: the messages in the
channel and their direct messages, the data, the containers.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiodocker
import asyncpg

from bot.app import BotOptions
from handlers.ids import ActionId
from sandbox.demo import (
    ALICE,
    BOB,
    CAROL,
    ERIN,
    INCIDENTS,
    SRE,
    DemoStage,
    bot_serving,
    demo_workspace,
    execute_sql,
)
from sandbox.demo_environment import (
    DatabaseSnapshot,
    ServiceSpec,
    build_demo_image,
    create_compose_project,
    database_snapshot,
    remove_compose_project,
    seed_demo_database,
    table_checksums,
)
from sandbox.slack import Message, SandboxWorkspace, SlackUser, render_message
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.bundle import Services
from services.containers import DockerRuntime
from services.database import DatabaseTarget, dump_database
from services.errors import RollbackError
from services.health import run_health_checks
from services.pgtools import PgTools
from services.run_store import RunRecord, RunStatus

STORE = "rollback_bot"  # the run store's database in the cluster
SCENARIO_TIMEOUT = 120.0  # seconds for one scenario, set-up to clean-up
# Live updates and the expiry/escalation sweep every 0.2 s: a game day is short.
OPTIONS = BotOptions(update_interval=0.2, sweep_interval=0.2)

# What the release that goes wrong does to the database: the application's new code reads
# the flags table and the renamed column; the old code (and its backup) know neither.
DEPLOYMENT = """
CREATE TABLE feature_flags (name text PRIMARY KEY, enabled boolean NOT NULL);
INSERT INTO feature_flags VALUES ('new_checkout', true);
ALTER TABLE orders RENAME COLUMN status TO state;
DELETE FROM orders WHERE id % 3 = 0;
"""
# A migration that stopped half-way: a column added, half back-filled, rows gone.
HALF_MIGRATION = """
ALTER TABLE customers ADD COLUMN tier text;
UPDATE customers SET tier = 'gold' WHERE id % 2 = 0;
DELETE FROM orders WHERE id % 4 = 0;
CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);
INSERT INTO schema_migrations VALUES (20261126, true);
"""


@dataclass(frozen=True)
class Ground:
    """What every scenario plays on: a cluster, a Docker engine with the demo image, a folder."""

    cluster: ThrowawayPostgres
    docker: aiodocker.Docker
    image: str
    folder: Path
    rows: int = 500


@dataclass
class Outcome:
    """One scenario's checks, as the report prints them."""

    name: str
    story: str
    checks: list[tuple[str, bool]] = field(default_factory=list)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(ok for _, ok in self.checks)

    def check(self, label: str, ok: bool) -> bool:
        self.checks.append((label, bool(ok)))
        return bool(ok)

    def lines(self) -> list[str]:
        lines = [f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.story}"]
        lines += [f"      {'✓' if ok else '✗'} {label}" for label, ok in self.checks]
        if self.error is not None:
            lines.append(f"      ✗ {self.error}")
        return lines


@dataclass
class Game:
    """A scenario in progress: its stage, the bot in the workspace, the people's client."""

    name: str
    stage: DemoStage
    at_backup: DatabaseSnapshot
    """Schema and data as the newest backup has them."""
    workspace: SandboxWorkspace
    services: Services
    slack: SlackUser
    docker: aiodocker.Docker

    def channel_text(self, message: Message) -> str:
        return "\n".join(render_message(message, workspace=self.workspace))

    async def request(self, text: str) -> tuple[Message, RunRecord]:
        """alice types `/rollback text` in #incidents: the bot's plan message and the run."""
        delivery = await self.slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", text)
        if delivery.status != 200:
            raise AssertionError(f"the bot answered /rollback with HTTP {delivery.status}")
        plan = await self.workspace.wait_for(
            lambda: next(iter(self.workspace.messages(INCIDENTS.id)), None), 30
        )
        (run,) = await self.services.store.recent_runs(self.name, 1)
        return plan, run

    async def approve(self, plan: Message) -> None:
        delivery = await self.slack.click(BOB.id, plan, ActionId.APPROVE)
        if delivery.status != 200:
            raise AssertionError(f"the bot answered the click with HTTP {delivery.status}")

    async def finished(self, plan: Message, run_id: str) -> tuple[RunRecord, str]:
        """The finished run, and its message in #incidents once it shows how it ended."""
        run = await self.run_when(run_id, lambda r: r.finished_at is not None)
        ending = ": done" if run.status is RunStatus.SUCCEEDED else ": FAILED"
        await self.workspace.wait_for(lambda: ending in plan.text, 30)
        return run, self.channel_text(plan)

    async def run_when(self, run_id: str, done: Callable[[RunRecord], bool]) -> RunRecord:
        """The run once `done` holds for it (the run store is polled: it is the truth)."""
        while True:
            run = await self.services.store.get(run_id)
            if done(run):
                return run
            await asyncio.sleep(0.1)

    async def containers_running(self) -> bool:
        containers = await DockerRuntime(self.docker).containers(self.stage.project)
        return bool(containers) and all(c.running for c in containers)

    async def reported(self, plan: Message) -> Message:
        """The incident report in the plan's thread, once carol was told the end too."""
        ws = self.workspace
        await ws.wait_for(lambda: len(ws.dms(CAROL.id)) >= 2, 30)
        return (await ws.wait_for(lambda: ws.thread(INCIDENTS.id, plan.ts), 30))[0]


Scenario = Callable[[Ground, Outcome], Awaitable[None]]


def _environment_toml(
    name: str,
    project: str,
    port: int,
    web_url: str,
    *,
    strategy: str,
    sql_probe: str,
    approval: str,
) -> str:
    return f"""# Written by `rollback-bot demo --scenario {name}`.
[environments.{name}]
compose_project = "{project}"
database_url = "postgresql://postgres@127.0.0.1:{port}/{_database(name)}"
stop_timeout_seconds = 5
strategy = "{strategy}"

[environments.{name}.health]
deadline_seconds = 4
interval_seconds = 0.2
sql_probe = "{sql_probe}"

[[environments.{name}.health.http]]
name = "web"
url = "{web_url}"

[environments.{name}.approval]
requesters = ["{ALICE.id}"]
approvers = ["{SRE.id}"]
required_approvals = 1
{approval}

[environments.{name}.contacts]
users = ["{CAROL.id}"]
escalation_users = ["{ERIN.id}"]
"""


def _database(name: str) -> str:
    return name.replace("-", "_")


@asynccontextmanager
async def _game(
    ground: Ground,
    name: str,
    *,
    damage: str,
    strategy: str = "swap",
    sql_probe: str = "SELECT 1",
    approval: str = "",
    backups: tuple[str, ...] = ("pre-deployment",),
) -> AsyncIterator[Game]:
    """A seeded database with backups taken hours apart (the newest is what a rollback
    brings back), then `damage` done to it; demo containers; the bot in the workspace."""
    database = _database(name)
    folder = ground.folder / name
    async with AsyncExitStack() as stack:
        await ground.cluster.create_database(database)
        stack.push_async_callback(ground.cluster.drop_database, database)
        dsn = ground.cluster.superuser_dsn(database)
        await seed_demo_database(dsn, rows=ground.rows)
        target = DatabaseTarget(dsn, PgTools(ground.cluster.bin_dir))
        backups_dir = folder / "instances" / name / "backups"
        backups_dir.mkdir(parents=True)
        for i, prefix in enumerate(backups):
            if i:  # the business went on between two backups
                await execute_sql(
                    dsn, "INSERT INTO customers (name, email) VALUES ('n', 'n@x.test')"
                )
            stamp = datetime.now(UTC) - timedelta(hours=2 * (len(backups) - i))
            path = backups_dir / f"{prefix}-{stamp:%Y%m%d-%H%M%S}.dump"
            newest = (await dump_database(target, path)).name
        at_backup = await database_snapshot(dsn)
        project_name = f"gameday-{secrets.token_hex(3)}"
        stack.push_async_callback(remove_compose_project, ground.docker, project_name)
        project = await create_compose_project(
            ground.docker,
            project_name,
            [ServiceSpec("web", "web"), ServiceSpec("worker", "worker")],
            ground.image,
        )
        await execute_sql(dsn, damage)
        config = folder / "rollback.toml"
        config.write_text(
            _environment_toml(
                name,
                project_name,
                ground.cluster.port,
                project.web_urls["web"],
                strategy=strategy,
                sql_probe=sql_probe,
                approval=approval,
            )
        )
        stage = DemoStage(
            folder=folder,
            config=config,
            cluster=ground.cluster,
            shop=dsn,
            newest_backup=newest,
            expected=await table_checksums(dsn),
            project=project_name,
            backups=backups_dir,
        )
        async with (
            demo_workspace() as workspace,
            bot_serving(stage, workspace, OPTIONS) as (services, slack, _),
        ):
            yield Game(name, stage, at_backup, workspace, services, slack, ground.docker)


async def _health_fails_now(game: Game) -> bool:
    """The environment's own health checks, once, with a short deadline."""
    environment = game.services.environments[game.name]
    quick = environment.model_copy(
        update={"health": environment.health.model_copy(update={"deadline_seconds": 0.5})}
    )
    report = await run_health_checks(
        quick,
        session=game.services.http,
        runtime=game.services.runtime,
        database=DatabaseTarget(game.stage.shop, game.services.tools),
    )
    return not report.ok


# -- the scenarios -------------------------------------------------------------------------


async def deployment_failure(ground: Ground, outcome: Outcome) -> None:
    async with _game(
        ground,
        "deployment-failure",
        damage=DEPLOYMENT,
        sql_probe="SELECT count(status) FROM orders",  # what the old release's code reads
    ) as game:
        outcome.check("after the deployment the health checks fail", await _health_fails_now(game))
        plan, run = await game.request(game.name)
        outcome.check(
            "the plan names the newest backup and waits for an approver",
            "awaiting approval" in game.channel_text(plan)
            and game.stage.newest_backup in game.channel_text(plan),
        )
        await game.approve(plan)
        run, shown = await game.finished(plan, run.id)
        outcome.check(f"the run {run.status.value}", run.status is RunStatus.SUCCEEDED)
        outcome.check(
            "#incidents shows every step ✓ and the health checks passed",
            ": done" in shown and "✗" not in shown and "✓ Health checks" in shown,
        )
        report = await game.reported(plan)
        outcome.check("the incident report is in the thread", "Incident report" in report.text)
        outcome.check(
            f"the database equals {game.stage.newest_backup}",
            await database_snapshot(game.stage.shop) == game.at_backup,
        )
        outcome.check("web and worker are running", await game.containers_running())
        outcome.check("the health checks pass now", not await _health_fails_now(game))


async def migration_failure(ground: Ground, outcome: Outcome) -> None:
    async with _game(
        ground,
        "migration-failure",
        damage=HALF_MIGRATION,
        strategy="in-place",
        backups=("pre-deployment", "pre-migration"),
    ) as game:
        backup = game.stage.newest_backup
        plan, run = await game.request(f"{game.name} {backup}")
        outcome.check(
            f"the plan restores the pre-migration backup {backup}",
            backup in game.channel_text(plan) and backup.startswith("pre-migration-"),
        )
        await game.approve(plan)
        run, shown = await game.finished(plan, run.id)
        outcome.check(f"the run {run.status.value}", run.status is RunStatus.SUCCEEDED)
        outcome.check(
            "#incidents shows the safety backup, the restore and the health checks ✓",
            all(f"✓ {s}" in shown for s in ("Safety backup", "Restore database", "Health checks")),
        )
        await game.reported(plan)
        now = await database_snapshot(game.stage.shop)
        outcome.check("schema and data equal the pre-migration backup", now == game.at_backup)
        outcome.check(
            "the half-applied migration's schema_migrations table is gone",
            "public.schema_migrations" not in await table_checksums(game.stage.shop),
        )
        outcome.check(
            "the safety backup of the broken state is in the backups folder",
            any(p.name.startswith("pre-rollback-") for p in game.stage.backups.iterdir()),
        )
        outcome.check("web and worker are running", await game.containers_running())


async def failing_health(ground: Ground, outcome: Outcome) -> None:
    async with _game(
        ground,
        "failing-health",
        damage=DEPLOYMENT,
        # The running release reads the flags table, which the backup predates.
        sql_probe="SELECT count(*) FROM feature_flags",
    ) as game:
        before = await database_snapshot(game.stage.shop)
        plan, run = await game.request(game.name)
        await game.workspace.wait_for(lambda: "Data-loss preview" in game.channel_text(plan), 30)
        await game.approve(plan)
        run, shown = await game.finished(plan, run.id)
        outcome.check(f"the run {run.status.value}", run.status is RunStatus.FAILED)
        outcome.check(
            "#incidents shows the health checks ✗ after the cut-over",
            "✓ Swap the databases" in shown and "✗ Health checks" in shown,
        )
        outcome.check(
            "#incidents shows the old database swapped back and the containers started again",
            "✓ Swap the old database back" in shown and "✓ Start containers again" in shown,
        )
        outcome.check(
            "#incidents says the rollback was undone automatically",
            "undone automatically" in shown,
        )
        await game.reported(plan)
        outcome.check(
            "carol is told how it ended", "ended" in game.workspace.dms(CAROL.id)[-1].text
        )
        outcome.check(
            "the database is back on its pre-rollback data",
            await database_snapshot(game.stage.shop) == before,
        )
        outcome.check("web and worker are running", await game.containers_running())


async def approver_never_answers(ground: Ground, outcome: Outcome) -> None:
    async with _game(
        ground,
        "approver-never-answers",
        damage=DEPLOYMENT,
        approval="expiry_minutes = 0.06\nescalate_after_minutes = 0.015",  # 3.6 s, 0.9 s
    ) as game:
        before = await database_snapshot(game.stage.shop)
        plan, run = await game.request(game.name)
        outcome.check("carol (contact) is told of the request", await _dm(game, CAROL.id, 1))
        escalated = await _dm(game, ERIN.id, 1)
        outcome.check(
            "erin (next contact) gets an escalation with a link to the request",
            escalated
            and "Escalation" in game.workspace.dms(ERIN.id)[0].text
            and "/archives/" in game.workspace.dms(ERIN.id)[0].text,
        )
        await game.workspace.wait_for(lambda: f"<@{ERIN.id}>" in str(plan.blocks), 10)
        outcome.check("the plan message says it was escalated", "escalated" in str(plan.blocks))
        run = await game.run_when(run.id, lambda r: r.status is RunStatus.EXPIRED)
        await game.workspace.wait_for(lambda: ": expired" in plan.text, 10)
        shown = game.channel_text(plan)
        outcome.check(
            "the request expired: the message says so and its buttons are gone",
            "[ Approve ]" not in shown,
        )
        told = await _dm(game, CAROL.id, 2) and await _dm(game, ALICE.id, 1)
        outcome.check(
            "carol (contact) and alice (requester) are told it expired, nothing changed",
            told
            and all(
                "expired" in game.workspace.dms(user)[-1].text for user in (CAROL.id, ALICE.id)
            ),
        )
        outcome.check("nothing ran", run.started_at is None)
        outcome.check(
            "the database and containers are untouched",
            await database_snapshot(game.stage.shop) == before and await game.containers_running(),
        )


async def _dm(game: Game, user: str, count: int) -> bool:
    try:
        await game.workspace.wait_for(lambda: len(game.workspace.dms(user)) >= count, 10)
    except TimeoutError:
        return False
    return True


SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "deployment-failure": (
        "services fail after a deployment; roll back, health passes",
        deployment_failure,
    ),
    "migration-failure": (
        "a migration left the database inconsistent; restore the pre-migration backup",
        migration_failure,
    ),
    "failing-health": (
        "health fails after the swap cut-over; swapped back automatically",
        failing_health,
    ),
    "approver-never-answers": (
        "nobody approves; escalated to the next contacts, expired, contacts told",
        approver_never_answers,
    ),
}


async def play(ground: Ground, name: str) -> Outcome:
    """One scenario, never raising for what went wrong in it: that is in the outcome."""
    story, scenario = SCENARIOS[name]
    outcome = Outcome(name, story)
    try:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            await scenario(ground, outcome)
    except TimeoutError as error:
        outcome.error = f"timed out: {error}" if str(error) else "timed out"
    except (RollbackError, AssertionError, LookupError, OSError, asyncpg.PostgresError) as error:
        outcome.error = f"{type(error).__name__}: {error}"
    return outcome


@contextmanager
def _folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="rollback-bot-gameday-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def run_scenarios(selection: str, *, rows: int) -> int:
    """`rollback-bot demo --scenario NAME|all`: 0 only when every scenario passed."""
    names = list(SCENARIOS) if selection == "all" else [selection]
    if any(name not in SCENARIOS for name in names):
        print(f"error: no scenario {selection!r}; choose from {', '.join(SCENARIOS)} or all")
        return 2
    docker = aiodocker.Docker()
    try:
        with _folder() as folder:
            print("Setting up: throwaway PostgreSQL, the demo image …", flush=True)
            image = await build_demo_image(docker)
            async with ThrowawayPostgres(fast=True) as cluster:
                await cluster.create_database(STORE)
                ground = Ground(cluster, docker, image, folder, rows=rows)
                outcomes = []
                for name in names:
                    print(f"\nGame day: {name} …", flush=True)
                    outcome = await play(ground, name)
                    print("\n".join(outcome.lines()), flush=True)
                    outcomes.append(outcome)
    finally:
        await docker.close()
    passed = sum(o.passed for o in outcomes)
    print(f"\n{passed} of {len(outcomes)} scenarios passed", flush=True)
    for outcome in outcomes:
        print(f"  {'PASS' if outcome.passed else 'FAIL'}  {outcome.name}")
    return 0 if passed == len(outcomes) else 1
