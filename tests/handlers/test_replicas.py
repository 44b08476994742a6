"""Issue 7: two `rollback-bot serve` processes on one run store behind the Slack emulator.

Clicks alternate between them; the one executing the rollback is SIGKILLed right after the
cut-over; the other takes the run over, brings the environment back to a consistent,
running state, tells the channel, the thread and the contacts, and an approver's Resume
through it finishes the rollback.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import aiodocker

from handlers.ids import ActionId
from sandbox.demo_environment import database_snapshot
from sandbox.slack import Message, SandboxWorkspace, SlackUser, render_message
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.run_store import RunRecord, RunStatus, RunStore
from tests.bot.test_cli import write_config as write_cli_config
from tests.conftest import free_port
from tests.handlers.conftest import ALICE, BOB, BOT_TOKEN, CAROL, INCIDENTS, SIGNING_SECRET
from tests.services.conftest import Stage, change_after_backup, container_states
from tests.services.test_recovery import grow_and_back_up


def write_config(stage: Stage, folder: Path) -> Path:
    """Swap, Bob approves, Carol is the contact."""
    env = stage.environment.name
    more = (
        f'[environments.{env}.approval]\napprovers = ["{BOB.id}"]\n\n'
        f'[environments.{env}.contacts]\nusers = ["{CAROL.id}"]\n'
    )
    return write_cli_config(stage, folder, "swap", more=more)


async def start_serve(
    port: int, config: Path, pg: ThrowawayPostgres, workspace: SandboxWorkspace, log: Path
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "DATABASE_URL": pg.superuser_dsn("rollback_bot_store"),
        "ROLLBACK_CONFIG": str(config),
        "PG_BIN": str(pg.bin_dir),
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": workspace.base_url,
        "PORT": str(port),
    }
    with log.open("ab") as output:  # the child keeps its own descriptor
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "serve",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=config.parent,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return process
        except OSError:
            if process.returncode is not None:
                break
            await asyncio.sleep(0.1)
    await stop(process)  # never left running behind a failed start
    raise AssertionError(f"serve did not listen on {port}: {tail(log)}")


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()


def tail(log: Path, size: int = 3000) -> str:
    """The end of a replica's log, for a failure message."""
    return log.read_text()[-size:]


def shown(message: Message | None) -> str:
    return "\n".join(render_message(message)) if message is not None else ""


async def test_two_replicas_one_killed_mid_run_the_other_recovers_and_resumes(
    stage: Stage, pg: ThrowawayPostgres, docker: aiodocker.Docker, tmp_path: Path
) -> None:
    await grow_and_back_up(stage)
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)
    config = write_config(stage, tmp_path)
    store = stage.services.store
    log_a, log_b = tmp_path / "replica-a.log", tmp_path / "replica-b.log"
    async with SandboxWorkspace(
        bot_token=BOT_TOKEN, users=[ALICE, BOB, CAROL], channels=[INCIDENTS]
    ) as ws:
        port_a, port_b = free_port(), free_port()
        started: list[asyncio.subprocess.Process] = []
        try:
            replica_a = await start_serve(port_a, config, pg, ws, log_a)
            started.append(replica_a)
            replica_b = await start_serve(port_b, config, pg, ws, log_b)
            started.append(replica_b)
            async with (
                SlackUser(ws, f"http://127.0.0.1:{port_a}/slack/events", SIGNING_SECRET) as a,
                SlackUser(ws, f"http://127.0.0.1:{port_b}/slack/events", SIGNING_SECRET) as b,
            ):
                # Requested through A: A prepares the staging copy (and owns the run meanwhile).
                delivery = await a.send_command(
                    ALICE.id, INCIDENTS.id, "/rollback", stage.environment.name
                )
                assert delivery.status == 200
                plan = await ws.wait_for(lambda: ws.latest_message(INCIDENTS.id), 15)
                await ws.wait_for(
                    lambda: "✓ Restore into a staging database" in shown(plan_now(ws, plan)), 60
                )
                run = await store.active_run(stage.environment.name)
                assert run is not None
                # Approved through B: B executes; SIGKILL it right after the cut-over.
                await b.click(BOB.id, plan_now(ws, plan), ActionId.APPROVE)
                deadline = time.monotonic() + 60
                while (await store.get(run.id)).journal.get("cutover") != "done":
                    assert time.monotonic() < deadline, tail(log_b)
                    await asyncio.sleep(0.005)
                replica_b.kill()
                await replica_b.wait()
                killed_at = time.monotonic()

                # A's sweeper takes it over and tells the channel, the thread, the contacts.
                report = await ws.wait_for(
                    lambda: next(
                        (m for m in ws.thread(INCIDENTS.id, plan.ts) if "Recovered" in shown(m)),
                        None,
                    ),
                    45,
                )
                told_after = time.monotonic() - killed_at
                await ws.wait_for(lambda: "[ Resume ]" in shown(plan_now(ws, plan)), 15)
                message = shown(plan_now(ws, plan))
                assert "interrupted" in message
                assert "the cut-over had happened" in message
                assert "[ Abort and restore ]" in message
                assert "health checks pass" in shown(report)
                await ws.wait_for(lambda: any("recovered" in m.text for m in ws.dms(CAROL.id)), 15)
                recovered = await store.get(run.id)
                assert recovered.status is RunStatus.INTERRUPTED
                assert await store.active_run(stage.environment.name) is None
                assert await database_snapshot(stage.dsn) == at_backup
                states = await container_states(docker, stage.project)
                assert set(states.values()) == {"running"}
                print(f"\nkill to channel told: {told_after:.1f} s")

                # Resume through A finishes the rollback.
                await a.click(BOB.id, plan_now(ws, plan), ActionId.RESUME)
                final = await wait_for_status(store, run.id, RunStatus.SUCCEEDED, log_a)
                assert final.status is RunStatus.SUCCEEDED
                await ws.wait_for(lambda: ": done" in shown(plan_now(ws, plan)), 20)
                assert await database_snapshot(stage.dsn) == at_backup

                # Killed after the run finished, before its report: A reports it.
                replica_b = await start_serve(port_b, config, pg, ws, log_b)
                started.append(replica_b)
                await a.send_command(ALICE.id, INCIDENTS.id, "/rollback", stage.environment.name)
                second = await ws.wait_for(
                    lambda: next((m for m in ws.messages(INCIDENTS.id) if m.ts != plan.ts), None),
                    15,
                )
                await ws.wait_for(
                    lambda: "✓ Restore into a staging database" in shown(plan_now(ws, second)),
                    60,
                )
                again = await store.active_run(stage.environment.name)
                assert again is not None
                await b.click(BOB.id, plan_now(ws, second), ActionId.APPROVE)
                await wait_for_status(store, again.id, RunStatus.SUCCEEDED, log_b)
                replica_b.kill()
                await replica_b.wait()
                reports = [m for m in ws.thread(INCIDENTS.id, second.ts) if "Incident" in m.text]
                assert reports == []  # killed before it could report
                await ws.wait_for(
                    lambda: any(
                        "Incident report" in m.text for m in ws.thread(INCIDENTS.id, second.ts)
                    ),
                    45,
                )
                await ws.wait_for(lambda: ": done" in shown(plan_now(ws, second)), 15)
        finally:
            for process in started:
                await stop(process)
    assert "Traceback" not in tail(log_a, 10**9)


def plan_now(ws: SandboxWorkspace, plan: Message) -> Message:
    current = ws.message(INCIDENTS.id, plan.ts)
    assert current is not None
    return current


async def wait_for_status(store: RunStore, run_id: str, status: RunStatus, log: Path) -> RunRecord:
    deadline = time.monotonic() + 60
    while True:
        run = await store.get(run_id)
        if run.status is status or time.monotonic() > deadline:
            assert run.status is status, (run, tail(log))
            return run
        await asyncio.sleep(0.1)
