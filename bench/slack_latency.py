"""Benchmark: how fast the Slack face answers, through the sandbox workspace over real HTTP.

- ack: 50 `/rollback <env>` at once (signed, as Slack sends them), HTTP 200 latency per
  request, over several rounds; target p99 < 100 ms. One request per round wins the run,
  the others are told who holds it (after the ack, so not in the measured time).
- plan: `/rollback <env>` until its plan message is in the channel (pre-flight, backup
  checksum, run store, chat.postMessage included), one at a time; target p95 < 500 ms.
Real PostgreSQL (throwaway cluster), real containers (busybox demo image), real backups.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from contextlib import AsyncExitStack

from pydantic import SecretStr

from bench.sandbox_bot import bench_stage, running_bot
from sandbox.demo_environment import (
    ServiceSpec,
)
from sandbox.slack import Channel, User
from services.bundle import Services
from services.environments import ApprovalPolicy, Environment, HealthConfig, Strategy
from services.pgtools import mask_password
from services.run_store import RunStatus, RunStore

CONCURRENCY = 50
ACK_ROUNDS = int(os.environ.get("BENCH_ACK_ROUNDS", "10"))
PLAN_SAMPLES = int(os.environ.get("BENCH_PLAN_SAMPLES", "40"))
ALICE = User(id="U0ALICE", name="alice")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def figures(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"{name}: n={len(ms)} p50={percentile(ms, 50):.1f} ms p95={percentile(ms, 95):.1f} ms "
        f"p99={percentile(ms, 99):.1f} ms max={max(ms):.1f} ms mean={statistics.mean(ms):.1f} ms"
    )


async def close_active(store: RunStore, environment: str) -> None:
    active = await store.active_run(environment)
    if active is not None:
        await store.update(active.id, status=RunStatus.CANCELLED)


async def main() -> None:
    async with AsyncExitStack() as stack:
        stage = await stack.enter_async_context(
            bench_stage(rows=2000, fast=True, services=[ServiceSpec("web", "web")])
        )
        dsn, base = stage.dsn, stage.services
        environment = Environment(
            name="production",
            compose_project=stage.compose.project,
            database_url=SecretStr(dsn),
            database_display=mask_password(dsn),
            backups_dir=stage.backups,
            health=HealthConfig(),
            approval=ApprovalPolicy(required_approvals=1),
            strategy=Strategy.IN_PLACE,  # what is measured here is the Slack face
        )
        store = base.store
        services = Services({"production": environment}, base.runtime, base.http, base.tools, store)

        channels = [Channel(id=f"C{i:08d}", name=f"incident-{i}") for i in range(PLAN_SAMPLES + 1)]
        bot = await stack.enter_async_context(
            running_bot(services, users=[ALICE], channels=channels)
        )
        workspace, slack, tasks = bot.workspace, bot.slack, bot.tasks
        await slack.send_command(ALICE.id, channels[0].id, "/rollback", "help")  # auth.test

        acks: list[float] = []
        for _ in range(ACK_ROUNDS):
            deliveries = await asyncio.gather(
                *(
                    slack.send_command(ALICE.id, channels[0].id, "/rollback", "production")
                    for _ in range(CONCURRENCY)
                )
            )
            assert all(d.status == 200 for d in deliveries), {d.status for d in deliveries}
            acks.extend(d.elapsed for d in deliveries)
            await workspace.wait_for(lambda: tasks.running <= 1, timeout=30)
            await close_active(store, "production")
        print(figures(f"ack of /rollback, {CONCURRENCY} concurrent x {ACK_ROUNDS}", acks))

        plans: list[float] = []
        for channel in channels[1:]:
            began = time.perf_counter()
            await slack.send_command(ALICE.id, channel.id, "/rollback", "production")
            await workspace.wait_for(lambda ch=channel.id: workspace.messages(ch), timeout=10)  # type: ignore[misc]
            plans.append(time.perf_counter() - began)
            await workspace.wait_for(lambda: tasks.running <= 1, timeout=30)
            await close_active(store, "production")
        print(figures("slash command -> plan message in the channel", plans))
        print(
            f"targets: ack p99 < 100 ms: {'met' if percentile(acks, 99) < 0.1 else 'MISSED'}; "
            f"plan p95 < 500 ms: {'met' if percentile(plans, 95) < 0.5 else 'MISSED'}"
        )


if __name__ == "__main__":
    asyncio.run(main())
