"""/healthz and /metrics of a running `serve`, scraped during and after a real rollback in
HTTP and in Socket Mode, and the JSON log lines the run writes (issue 11)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from bot.app import BotOptions, serve
from bot.metrics import STORE_TIMEOUT, BotMetrics
from bot.settings import Settings
from handlers.ids import ActionId
from sandbox.slack import RateLimit, SandboxWorkspace, SlackUser
from sandbox.slack.slack_user import SocketModeUser
from sandbox.throwaway_postgres import ThrowawayPostgres
from services.run_store import RunStatus
from tests.conftest import bot_log, free_port
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
from tests.services.conftest import Stage

APP_TOKEN = "xapp-1-A0SANDBOX-1-metrics-app-token"
GHOST = "U0GHOST"  # a contact the workspace does not know: the DM to them fails


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: aiohttp.ClientSession, base: str) -> Samples:
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_metrics_and_health_move_during_a_real_rollback(
    stage: Stage, pg: ThrowawayPostgres, mode: str
) -> None:
    """issue 11: runs_total, step durations, approval wait and ack latency move; active
    runs and leases are 1 while the rollback runs and 0 after; 429s and failed calls are
    counted exactly as the workspace saw them."""
    contacts = CONTACTS.model_copy(update={"users": (*CONTACTS.users, GHOST)})
    staged = stage.with_environment(approval=POLICY, contacts=contacts)
    environment = staged.environment
    name = environment.name
    socket_mode = mode == "socket"
    port, metrics_port = free_port(), free_port()
    async with SandboxWorkspace(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN if socket_mode else None,
        users=[ALICE, BOB, ERIN, CAROL, DAVE, MAX],
        usergroups=[ONCALL, DBA],
        channels=[INCIDENTS, ALERTS],
        # The live message's edits outrun this: some are answered 429 and retried.
        rate_limits={"chat.update": RateLimit(per_minute=60, burst=1)},
    ) as ws:
        settings = Settings(
            database_url=SecretStr(pg.superuser_dsn("rollback_bot_store")),
            pg_bin=str(pg.bin_dir),
            slack_bot_token=SecretStr(BOT_TOKEN),
            slack_signing_secret=SecretStr(SIGNING_SECRET),
            slack_app_token=SecretStr(APP_TOKEN) if socket_mode else None,
            slack_api_url=ws.base_url,
            port=port,
            # HTTP: the default, beside /slack/events; Socket Mode: a server of its own.
            metrics_port=metrics_port if socket_mode else None,
        )
        base = f"http://127.0.0.1:{metrics_port if socket_mode else port}"
        seen: dict[str, Any] = {}

        async def conversation() -> None:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/healthz") as response:
                    assert response.status == 200
                    assert (await response.json())["status"] == "ok"
                before = await scrape(http, base)
                assert value(before, "rollback_active_runs", environment=name) == 0
                assert value(before, "rollback_run_store_up") == 1

                if socket_mode:
                    await ws.socket_mode.wait_for_connection(timeout=5)
                    slack: Any = SocketModeUser(ws)
                else:
                    slack = SlackUser(ws, f"http://127.0.0.1:{port}/slack/events", SIGNING_SECRET)
                try:
                    await slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", name)
                    plan = await ws.wait_for(lambda: ws.latest_message(INCIDENTS.id), timeout=10)
                    (run,) = await stage.services.store.recent_runs(name, 5)
                    await slack.click(BOB.id, plan, ActionId.APPROVE)
                finally:
                    if not socket_mode:
                        await slack.close()

                # While it runs: scraped until the run is seen running in the store.
                during = await scrape_while(
                    lambda: stage.services.store.get(run.id),
                    lambda: scrape(http, base),
                )
                await wait_until(
                    lambda: stage.services.store.get(run.id), lambda r: r.finished_at is not None
                )
                await ws.wait_for(lambda: "done" in plan.text, timeout=10)
                # The end of the run is counted as its report goes out; the calls the
                # workspace answered 429 or refused, once the report is out, all counted.
                after = await wait_for_samples(
                    lambda: scrape(http, base),
                    lambda s: (
                        total(s, "rollback_runs_total", environment=name) >= 1
                        and value(s, "rollback_leases_held") == 0  # given up once reported
                        and len(failed_calls(ws)) >= 2  # both DMs to the unknown contact
                        and value(s, "rollback_slack_rate_limited_total", method="chat.update")
                        == ws.ratelimited_by_method["chat.update"]
                        and total(s, "rollback_slack_api_errors_total") == len(failed_calls(ws))
                    ),
                )
                seen.update(before=before, during=during, after=after, run=run)

        with bot_log(secrets=[SIGNING_SECRET, BOT_TOKEN], log_format="json") as log:
            await serve(
                settings,
                {name: environment},
                stop=conversation,
                options=BotOptions(sweep_interval=0.2, update_interval=0.1),
            )
        final = await stage.services.store.get(seen["run"].id)
        assert final.status is RunStatus.SUCCEEDED, final.result
        rate_limited = ws.ratelimited_by_method["chat.update"]
        refused = failed_calls(ws)

    during, after = seen["during"], seen["after"]
    assert value(during, "rollback_active_runs", environment=name) == 1
    assert value(during, "rollback_leases_held") == 1
    assert value(after, "rollback_active_runs", environment=name) == 0
    assert value(after, "rollback_leases_held") == 0

    assert value(after, "rollback_runs_total", environment=name, outcome="succeeded") == 1
    assert total(after, "rollback_runs_total", environment=name) == 1
    for step in ("stop", "safety_backup", "restore", "start", "health"):
        labels = {"environment": name, "step": step}
        assert value(after, "rollback_step_duration_seconds_count", **labels) == 1, step
        assert value(after, "rollback_step_duration_seconds_bucket", le="+Inf", **labels) == 1
        assert value(after, "rollback_step_duration_seconds_sum", **labels) > 0
    assert value(after, "rollback_approval_wait_seconds_count", environment=name) == 1
    for kind in ("slash_command", "block_actions"):
        assert value(after, "rollback_slack_ack_seconds_count", kind=kind) >= 1, kind
        # Slack's 3 seconds: every request acknowledged within them.
        assert value(after, "rollback_slack_ack_seconds_bucket", kind=kind, le="3.0") == value(
            after, "rollback_slack_ack_seconds_count", kind=kind
        )

    assert rate_limited >= 1
    assert value(after, "rollback_slack_rate_limited_total", method="chat.update") >= 1
    errors = {"method": "conversations.open", "error": "user_not_found"}
    assert value(after, "rollback_slack_api_errors_total", **errors) == 2
    assert refused[:2] == ["conversations.open", "conversations.open"]

    # Every line the run wrote names it; the step lines name their step.
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    mine = [line for line in lines if line.get("run_id") == seen["run"].id]
    assert all(line["environment"] == name for line in mine)
    steps = {line["step"] for line in mine if line["message"].startswith("step_finished")}
    assert {"stop", "restore", "start", "health"} <= steps
    assert {"time", "level", "logger", "message"} <= set(mine[0])
    assert SIGNING_SECRET not in log.getvalue() and BOT_TOKEN not in log.getvalue()


def failed_calls(ws: SandboxWorkspace) -> list[str]:
    """The Web API methods the workspace refused (429s aside)."""
    return [c.method for c in ws.calls if not c.ok and c.status != 429]


async def scrape_while(
    get_run: Callable[[], Awaitable[Any]], scrape_now: Callable[[], Awaitable[Samples]]
) -> Samples:
    """The metrics scraped once the run is running (before it finishes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while loop.time() < deadline:
        run = await get_run()
        if run.status is RunStatus.RUNNING:
            samples = await scrape_now()
            if (await get_run()).status is RunStatus.RUNNING:
                return samples
        assert run.finished_at is None, "the run finished before it was seen running"
        await asyncio.sleep(0.02)
    raise AssertionError("the run was not seen running within 30 s")


async def wait_until(get: Callable[[], Awaitable[Any]], condition: Callable[[Any], bool]) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not condition(found := await get()):
        assert loop.time() < deadline, "not within 60 s"
        await asyncio.sleep(0.05)
    return found


async def wait_for_samples(
    scrape_now: Callable[[], Awaitable[Samples]], condition: Callable[[Samples], bool]
) -> Samples:
    result: Samples = await wait_until(scrape_now, condition)
    return result


async def test_healthz_is_503_when_the_run_store_does_not_answer() -> None:
    """issue 11: the run store on a cluster of the test's own, stopped while the bot serves:
    /healthz says 503 within its short timeout, /metrics still answers (store down)."""
    port = free_port()
    async with (
        ThrowawayPostgres(fast=True) as cluster,
        SandboxWorkspace(bot_token=BOT_TOKEN, users=[ALICE], channels=[INCIDENTS]) as ws,
    ):
        await cluster.create_database("store")
        settings = Settings(
            database_url=SecretStr(cluster.superuser_dsn("store")),
            pg_bin=str(cluster.bin_dir),
            slack_bot_token=SecretStr(BOT_TOKEN),
            slack_signing_secret=SecretStr(SIGNING_SECRET),
            slack_api_url=ws.base_url,
            port=port,
        )
        answers: list[tuple[int, dict[str, Any], float]] = []

        async def conversation() -> None:
            async with aiohttp.ClientSession() as http:
                for _ in range(2):
                    began = asyncio.get_running_loop().time()
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        elapsed = asyncio.get_running_loop().time() - began
                        answers.append((response.status, await response.json(), elapsed))
                    if cluster.running:
                        await cluster.stop(immediate=True)
                samples = await scrape(http, f"http://127.0.0.1:{port}")
                answers.append((200, {"store_up": value(samples, "rollback_run_store_up")}, 0))

        with bot_log(logging.CRITICAL):
            await serve(settings, {}, stop=conversation, options=BotOptions(sweep_interval=60))

    (up, up_body, _), (down, down_body, seconds), (_, scraped, _) = answers
    assert (up, up_body["status"]) == (200, "ok")
    assert (down, down_body["status"]) == (503, "unavailable")
    assert down_body["run_store"] == "not answering" and seconds < STORE_TIMEOUT + 1
    assert scraped == {"store_up": 0}


def test_the_sample_dashboard_uses_only_the_metrics_the_bot_exposes() -> None:
    """issue 11: docs/grafana-dashboard.json queries names /metrics really has."""
    dashboard = json.loads((Path(__file__).parents[2] / "docs/grafana-dashboard.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for q in queries for name in re.findall(r"\brollback_\w+", q)}
    exposed = {
        f"{family.name}{suffix}"
        for family in BotMetrics().registry.collect()
        for suffix in ("", "_total", "_bucket", "_sum", "_count")
    }
    assert used <= exposed, used - exposed
    assert {"rollback_runs_total", "rollback_active_runs", "rollback_leases_held"} <= used
