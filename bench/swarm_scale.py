"""Benchmark: Swarm stacks (issue 10).

1. `SwarmRuntime.stop` and `.start` of a stack of 20 services against a stack of 1 (one
   replica each, busybox FROM scratch with an init as PID 1): stop returns when no task
   runs any more, start when every task runs again (converged); beside it, the floor:
   `docker service scale -d` of the same 20 from the command line, waited for the same way.
2. Approval → health checks passing for an environment on a Swarm stack (web 1 replica,
   worker 2), through the sandbox Slack workspace, both strategies; the same environment
   on a Compose project beside it. The approver clicks once the plan is shown and, with
   swap, the staging database is ready.

The engine becomes a one-node swarm for the run and leaves it afterwards (only a swarm
this made). BENCH_ROUNDS (default 5), BENCH_ROWS (database size, default 200000 rows).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path

import aiodocker
from pydantic import SecretStr

from bench.request_to_healthy import SRE, time_to_healthy
from bench.sandbox_bot import bench_stage
from sandbox.demo_environment import ServiceSpec, build_demo_image
from sandbox.swarm_stack import (
    Stack,
    StackService,
    create_stack,
    remove_stack,
    swarm_mode,
)
from services.bundle import Services
from services.environments import (
    ApprovalPolicy,
    Environment,
    HealthConfig,
    HttpCheck,
    Strategy,
)
from services.pgtools import mask_password
from services.runtimes import route_environments
from services.swarm import POLL_SECONDS, SwarmRuntime

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
ROWS = int(os.environ.get("BENCH_ROWS", "200000"))


async def scale_once(runtime: SwarmRuntime, stack: str) -> tuple[float, float]:
    services = await runtime.containers(stack)
    assert services and all(s.running for s in services)
    began = time.perf_counter()
    stopped = await runtime.stop(services, timeout=10)
    stop = time.perf_counter() - began
    assert all(o.ok for o in stopped), stopped
    began = time.perf_counter()
    started = await runtime.start([o.container for o in stopped])
    start = time.perf_counter() - began
    assert all(o.ok for o in started), started
    return stop, start


async def cli_scale_once(runtime: SwarmRuntime, stack: Stack) -> tuple[float, float]:
    """`docker service scale` to 0 and back, each waited for as the runtime waits (no task
    left running; every task running)."""
    names = [stack.full_name(s) for s in stack.service_ids]
    times = []
    for replicas, state in ((0, "scaled to 0"), (1, "running")):
        began = time.perf_counter()
        scale = [f"{name}={replicas}" for name in names]
        process = await asyncio.create_subprocess_exec(
            "docker", "service", "scale", "-d", *scale, stdout=asyncio.subprocess.DEVNULL
        )
        assert await process.wait() == 0
        while any(s.state != state for s in await runtime.containers(stack.name)):  # noqa: ASYNC110
            await asyncio.sleep(POLL_SECONDS)
        times.append(time.perf_counter() - began)
    return times[0], times[1]


async def stop_and_start(docker: aiodocker.Docker, image: str) -> None:
    runtime = SwarmRuntime(docker)
    stacks: dict[int, Stack] = {}
    try:
        for n in (1, 20):
            workers = [StackService(f"w{i}", 1) for i in range(n)]
            stacks[n] = await create_stack(
                docker, f"rbbench-{uuid.uuid4().hex[:8]}", workers, image, converge_seconds=120
            )
        await scale_once(runtime, stacks[1].name)  # warm-up
        times: dict[int, list[tuple[float, float]]] = {1: [], 20: []}
        for _ in range(ROUNDS):
            for n in (1, 20):
                times[n].append(await scale_once(runtime, stacks[n].name))
        median = {
            (n, what): statistics.median(t[i] for t in times[n])
            for n in (1, 20)
            for i, what in enumerate(("stop", "start"))
        }
        for what in ("stop", "start"):
            one, twenty = median[(1, what)], median[(20, what)]
            runs = ", ".join(f"{t[0 if what == 'stop' else 1]:.2f}" for t in times[20])
            print(
                f"{what:<5} 1 service: {one:5.2f} s   20 services: {twenty:5.2f} s "
                f"(ratio {twenty / one:.2f}; 20: {runs})",
                flush=True,
            )
        floor = [await cli_scale_once(runtime, stacks[20]) for _ in range(3)]
        print(
            "docker service scale of 20 (CLI): stop "
            + ", ".join(f"{f[0]:.2f}" for f in floor)
            + " s; start "
            + ", ".join(f"{f[1]:.2f}" for f in floor)
            + " s",
            flush=True,
        )
    finally:
        for stack in stacks.values():
            await remove_stack(docker, stack.name)


def environment(
    strategy: Strategy, dsn: str, backups: Path, web_url: str, *, stack: Stack | None, project: str
) -> Environment:
    return Environment(
        name="production",
        stack=stack.name if stack else None,
        compose_project=None if stack else project,
        database_url=SecretStr(dsn),
        database_display=mask_password(dsn),
        backups_dir=backups,
        strategy=strategy,
        health=HealthConfig(http=(HttpCheck(name="web", url=web_url),), interval_seconds=0.1),
        approval=ApprovalPolicy(approvers=(SRE.id,), required_approvals=1),
    )


async def approval_to_healthy(docker: aiodocker.Docker, image: str) -> None:
    compose_services = [ServiceSpec("web", "web"), ServiceSpec("worker", "worker")]
    async with bench_stage(rows=ROWS, fast=False, services=compose_services) as stage:
        name = f"rbbench-{uuid.uuid4().hex[:8]}"
        stack = await create_stack(
            docker, name, (StackService("web", 1, web=True), StackService("worker", 2)), image
        )
        print(f"database {stage.size_bytes / 1e9:.2f} GB; the approver clicks at once")
        try:
            for strategy in (Strategy.SWAP, Strategy.IN_PLACE):
                for on_stack in (True, False):
                    env = environment(
                        strategy,
                        stage.dsn,
                        stage.backups,
                        stack.web_urls["web"] if on_stack else stage.compose.web_urls["web"],
                        stack=stack if on_stack else None,
                        project=stage.compose.project,
                    )
                    base = stage.services
                    services = Services(
                        {env.name: env},
                        route_environments({env.name: env}, {None: docker}),
                        base.http,
                        base.tools,
                        base.store,
                    )
                    _, after_click = await time_to_healthy(services, wait=0.5, prepared_first=True)
                    where = "Swarm stack (web 1, worker 2)" if on_stack else "Compose project"
                    print(
                        f"{strategy.value:<8} {where:<30} approval → healthy {after_click:5.2f} s",
                        flush=True,
                    )
                    for extra in stage.backups.glob("pre-rollback-*.dump"):
                        extra.unlink()
        finally:
            await remove_stack(docker, name)


async def main() -> None:
    async with aiodocker.Docker() as docker:
        image = await build_demo_image(docker)
        async with swarm_mode(docker):
            await stop_and_start(docker, image)
            await approval_to_healthy(docker, image)


if __name__ == "__main__":
    asyncio.run(main())
