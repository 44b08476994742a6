"""Benchmark: from `/rollback` to a running, healthy environment, one approver clicking
Approve 30 s after the plan appears; swap against in-place on the same data.

With swap the staging restore runs while the approver reads, so the cut-over can follow
the click at once; in place, the whole restore starts after the click. Everything real:
signed requests through the sandbox workspace, PostgreSQL with default durability, the
busybox containers. BENCH_ROWS sets the size (default about 1.5 GB), BENCH_WAIT the
approver's reading time (default 30 s).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from pydantic import SecretStr

from bench.sandbox_bot import bench_stage, running_bot
from handlers.ids import ActionId
from sandbox.demo_environment import (
    ServiceSpec,
)
from sandbox.slack import Channel, User, UserGroup
from services.bundle import Services
from services.environments import (
    ApprovalPolicy,
    Environment,
    HealthConfig,
    HttpCheck,
    Strategy,
)
from services.pgtools import mask_password

ROWS = int(os.environ.get("BENCH_ROWS", "4150000"))
WAIT = float(os.environ.get("BENCH_WAIT", "30"))
ALICE = User(id="U0ALICE", name="alice")
BOB = User(id="U0BOB", name="bob")
SRE = UserGroup(id="S0SRE", handle="sre", users=(BOB.id,))
INCIDENTS = Channel(id="C0INCIDENTS", name="incidents")


async def one(
    strategy: Strategy, base: Services, dsn: str, backups: Path, web_url: str, project: str
) -> tuple[float, float]:
    environment = Environment(
        name="production",
        compose_project=project,
        database_url=SecretStr(dsn),
        database_display=mask_password(dsn),
        backups_dir=backups,
        strategy=strategy,
        health=HealthConfig(http=(HttpCheck(name="web", url=web_url),), interval_seconds=0.1),
        approval=ApprovalPolicy(approvers=(SRE.id,), required_approvals=1),
    )
    services = Services(
        {"production": environment}, base.runtime, base.http, base.tools, base.store
    )
    return await time_to_healthy(services, wait=WAIT)


async def time_to_healthy(
    services: Services, *, wait: float, prepared_first: bool = False
) -> tuple[float, float]:
    """`/rollback` of `production` → health checks passing, and the click → the same; the
    approver clicks `wait` s after the plan appears (and, with `prepared_first`, not
    before the swap's staging database is ready)."""
    store = services.store
    async with running_bot(
        services, users=[ALICE, BOB], channels=[INCIDENTS], usergroups=[SRE]
    ) as bot:
        ws = bot.workspace
        began = time.time()
        await bot.slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "production")
        plan = await ws.wait_for(lambda: ws.latest_message(INCIDENTS.id), timeout=30)
        await asyncio.sleep(wait)  # the approver reads the plan
        run = (await store.recent_runs("production", 1))[0]
        if prepared_first and run.strategy == Strategy.SWAP.value:
            while (await store.get(run.id)).journal.get("prepare") not in ("done", "failed"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await bot.slack.click(BOB.id, plan, ActionId.APPROVE)
        clicked = time.time()
        healthy = None
        for _ in range(36000):  # the health checks passing is the moment that counts
            events = await store.events(run.id)
            healthy = next(
                (
                    e.at.timestamp()
                    for e in events
                    if (e.kind, e.step) == ("step_finished", "health")
                ),
                None,
            )
            if healthy is not None or any(e.kind == "finished" for e in events):
                break
            await asyncio.sleep(0.05)
        assert healthy is not None, "the health checks never passed"
        while (await store.get(run.id)).finished_at is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return healthy - began, healthy - clicked


async def main() -> None:
    workers = [ServiceSpec("web", "web"), ServiceSpec("worker", "worker")]
    async with bench_stage(rows=ROWS, fast=False, services=workers) as stage:
        base, size, compose, backups = (
            stage.services,
            stage.size_bytes,
            stage.compose,
            stage.backups,
        )
        dsn, project = stage.dsn, stage.compose.project
        print(f"database {size / 1e9:.2f} GB; the approver clicks {WAIT:.0f} s after the plan")
        for strategy in (Strategy.IN_PLACE, Strategy.SWAP):
            total, after_click = await one(
                strategy, base, dsn, backups, compose.web_urls["web"], project
            )
            print(
                f"{strategy.value:<8} /rollback → healthy {total:6.1f} s "
                f"(of which after the click {after_click:5.1f} s)",
                flush=True,
            )
            for extra in backups.glob("pre-rollback-*.dump"):
                extra.unlink()


if __name__ == "__main__":
    asyncio.run(main())
