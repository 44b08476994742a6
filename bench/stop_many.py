"""Benchmark: stopping 20 containers takes at most 1.5x the time of stopping one.

Real containers (busybox FROM scratch, docker-init as PID 1) on the running engine, stopped
with the bot's DockerRuntime.stop, 1 and 20 alternately over several rounds. Two workloads:
- `drain`: each service drains for 2 s after SIGTERM, as a web server or worker does;
- `instant`: the process exits at once, so only the engine's own teardown is measured,
  next to `docker stop` of the same 20 containers from the command line (the floor).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import aiodocker

from sandbox.demo_environment import (
    ServiceSpec,
    build_demo_image,
    create_compose_project,
    remove_compose_project,
)
from services.containers import DockerRuntime

ROUNDS = 5
DRAIN = (
    "/bin/busybox",
    "sh",
    "-c",
    "trap 'sleep 2; exit 0' TERM; while :; do sleep 1 & wait $!; done",
)


async def _project(
    docker: aiodocker.Docker, image: str, n: int, command: tuple[str, ...] | None
) -> str:
    project = f"rbbench-{uuid.uuid4().hex[:8]}"
    specs = [ServiceSpec(f"worker{i}", "worker", command) for i in range(n)]
    await create_compose_project(docker, project, specs, image)
    return project


async def time_stop(
    docker: aiodocker.Docker, image: str, n: int, command: tuple[str, ...] | None
) -> float:
    runtime = DockerRuntime(docker)
    project = await _project(docker, image, n, command)
    try:
        containers = await runtime.containers(project)
        assert len(containers) == n and all(c.running for c in containers)
        await asyncio.sleep(0.5)  # let the shells install their traps
        began = time.perf_counter()
        outcomes = await runtime.stop(containers, timeout=10)
        elapsed = time.perf_counter() - began
        assert all(o.ok for o in outcomes)
        # The processes are gone; the engine may still be tearing down (not timed).
        for _ in range(100):
            if not any(c.running for c in await runtime.containers(project)):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("containers still running")
        return elapsed
    finally:
        await remove_compose_project(docker, project)


async def time_cli_stop(docker: aiodocker.Docker, image: str, n: int) -> float:
    project = await _project(docker, image, n, None)
    try:
        names = [c.name for c in await DockerRuntime(docker).containers(project)]
        began = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            "docker", "stop", *names, stdout=asyncio.subprocess.DEVNULL
        )
        assert await process.wait() == 0
        return time.perf_counter() - began
    finally:
        await remove_compose_project(docker, project)


def _ms(values: list[float]) -> str:
    return ", ".join(f"{v * 1000:.0f}" for v in values)


async def main() -> None:
    async with aiodocker.Docker() as docker:
        image = await build_demo_image(docker)
        await time_stop(docker, image, 1, None)  # warm-up
        for workload, command in (("drain", DRAIN), ("instant", None)):
            one: list[float] = []
            twenty: list[float] = []
            for _ in range(ROUNDS):
                one.append(await time_stop(docker, image, 1, command))
                twenty.append(await time_stop(docker, image, 20, command))
            m1, m20 = statistics.median(one), statistics.median(twenty)
            verdict = "met" if m20 / m1 <= 1.5 else "not met"
            print(f"[{workload}] stop 1:  median {m1 * 1000:6.0f} ms  ({_ms(one)})")
            print(f"[{workload}] stop 20: median {m20 * 1000:6.0f} ms  ({_ms(twenty)})")
            print(f"[{workload}] ratio 20/1: {m20 / m1:.2f}  (target <= 1.50: {verdict})")
        floor = [await time_cli_stop(docker, image, 20) for _ in range(3)]
        print(
            f"[instant] `docker stop` of 20 from the CLI: median "
            f"{statistics.median(floor) * 1000:.0f} ms ({_ms(floor)})"
        )


if __name__ == "__main__":
    asyncio.run(main())
