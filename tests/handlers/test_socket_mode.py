"""`rollback-bot serve` in Socket Mode (SLACK_APP_TOKEN set): the real bot connects to the
sandbox workspace over a websocket and a whole rollback is driven by envelopes."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from bot.app import BotOptions, serve
from bot.settings import Settings
from handlers.ids import ActionId
from sandbox.demo_environment import database_snapshot
from sandbox.slack import SandboxWorkspace, render_message
from sandbox.slack.slack_user import SocketModeUser
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.run_store import RunRecord, RunStatus
from tests.handlers.conftest import (
    ALERTS,
    ALICE,
    BOB,
    BOT_TOKEN,
    CAROL,
    CONTACTS,
    DAVE,
    DBA,
    ERIN,
    INCIDENTS,
    MAX,
    ONCALL,
    POLICY,
    SIGNING_SECRET,
)
from tests.services.conftest import Stage, change_after_backup

APP_TOKEN = "xapp-1-A0SANDBOX-1-handlers-app-token"


async def test_serve_in_socket_mode_runs_a_rollback_from_envelopes(
    stage: Stage, pg: ThrowawayPostgres
) -> None:
    staged = stage.with_environment(approval=POLICY, contacts=CONTACTS)
    environment = staged.environment
    at_backup = await database_snapshot(stage.dsn)
    await change_after_backup(stage.dsn)

    async with SandboxWorkspace(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN,
        users=[ALICE, BOB, ERIN, CAROL, DAVE, MAX],
        usergroups=[ONCALL, DBA],
        channels=[INCIDENTS, ALERTS],
    ) as ws:
        settings = Settings(
            database_url=SecretStr(pg.superuser_dsn("rollback_bot_store")),
            pg_bin=str(pg.bin_dir),
            slack_bot_token=SecretStr(BOT_TOKEN),
            slack_signing_secret=SecretStr(SIGNING_SECRET),
            slack_app_token=SecretStr(APP_TOKEN),
            slack_api_url=ws.base_url,
        )
        slack = SocketModeUser(ws)
        finished: list[RunRecord] = []

        async def conversation() -> None:
            # serve has connected before it waits for the end.
            connection = await ws.socket_mode.wait_for_connection(timeout=1)
            assert connection.sent[0]["type"] == "hello"

            delivery = await slack.send_command(DAVE.id, INCIDENTS.id, "/rollback", "help")
            assert delivery.acked and delivery.elapsed < 3, delivery
            (usage,) = await ws.wait_for(lambda: ws.ephemerals(DAVE.id), timeout=10)
            assert "/rollback backups" in "\n".join(render_message(usage))

            delivery = await slack.send_command(
                ALICE.id, INCIDENTS.id, "/rollback", environment.name
            )
            assert delivery.acked and delivery.elapsed < 3, delivery
            plan = await ws.wait_for(lambda: ws.latest_message(INCIDENTS.id), timeout=10)
            shown = "\n".join(render_message(plan))
            assert f"Rollback of {environment.name}: awaiting approval" in shown
            assert stage.backup.name in shown and "[ Approve ]" in shown
            (run,) = await stage.services.store.recent_runs(environment.name, 50)
            assert run.status is RunStatus.AWAITING_APPROVAL and run.requested_by == ALICE.id

            delivery = await slack.click(BOB.id, plan, ActionId.APPROVE)
            assert delivery.acked and delivery.elapsed < 3, delivery
            (reply,) = await ws.wait_for(lambda: ws.ephemerals(BOB.id), timeout=10)
            assert "starts now" in reply.text

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while (await stage.services.store.get(run.id)).finished_at is None:
                assert loop.time() < deadline, "the rollback did not finish within 60 s"
                await asyncio.sleep(0.1)
            finished.append(await stage.services.store.get(run.id))
            await ws.wait_for(lambda: "done" in plan.text, timeout=10)

        await serve(
            settings,
            {environment.name: environment},
            stop=conversation,
            options=BotOptions(sweep_interval=0.2),
        )

        (final,) = finished
        assert final.status is RunStatus.SUCCEEDED, final.result
        assert final.finished_at is not None
        envelopes = ws.socket_mode.envelopes
        assert [e.type for e in envelopes] == ["slash_commands", "slash_commands", "interactive"]
        assert all(e.acked and e.latency is not None and e.latency < 3 for e in envelopes)
        # Over the socket only: the bot never had a request URL to be called at.
        assert ws.socket_mode.stray_messages == []
        assert not ws.socket_mode.open_connections  # serve closed its connection
        assert [c.method for c in ws.calls if not c.ok and c.status != 429] == []

    assert await database_snapshot(stage.dsn) == at_backup
