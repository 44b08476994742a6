"""Health checks after a rollback: HTTP endpoints, container state and a SQL probe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from services.containers import Runtime
from services.database import DatabaseTarget, ping
from services.environments import Environment, HttpCheck
from services.errors import RollbackError


@dataclass(frozen=True)
class CheckResult:
    name: str
    kind: str  # http, containers, sql
    ok: bool
    latency_seconds: float
    attempts: int
    detail: str


@dataclass(frozen=True)
class HealthReport:
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(result for result in self.results if not result.ok)


Probe = Callable[[], Awaitable[str]]  # returns a detail on success, raises on failure

_LAST_CHANCE = 0.5  # seconds an attempt gets when it starts at the deadline


async def _http_probe(session: aiohttp.ClientSession, check: HttpCheck) -> str:
    timeout = aiohttp.ClientTimeout(total=check.timeout_seconds)
    async with session.get(check.url, timeout=timeout, allow_redirects=False) as response:
        if response.status != check.expected_status:
            raise RollbackError(f"HTTP {response.status}, expected {check.expected_status}")
        return f"HTTP {response.status}"


async def _retry(
    name: str, kind: str, probe: Probe, deadline: float, interval: float
) -> CheckResult:
    """Run probe until it passes or the deadline passes; latency is the last attempt's."""
    attempts = 0
    while True:
        attempts += 1
        began = time.monotonic()
        try:
            # An endpoint that hangs is abandoned at the deadline, whatever its own timeout.
            async with asyncio.timeout(max(deadline - began, _LAST_CHANCE)):
                detail = await probe()
            return CheckResult(name, kind, True, time.monotonic() - began, attempts, detail)
        except (TimeoutError, RollbackError, aiohttp.ClientError, OSError) as error:
            latency = time.monotonic() - began
            reason = str(error) or type(error).__name__
            if isinstance(error, TimeoutError) and not str(error):
                reason = f"no answer within {latency:.1f} s"
            pause = min(interval, 0.05 * 2**attempts)  # quick at first: services just started
            if time.monotonic() + pause >= deadline:
                return CheckResult(name, kind, False, latency, attempts, reason)
        await asyncio.sleep(pause)


async def run_health_checks(
    environment: Environment,
    *,
    session: aiohttp.ClientSession,
    runtime: Runtime,
    database: DatabaseTarget,
    deadline_seconds: float | None = None,
) -> HealthReport:
    """Every configured check concurrently, each retried until the environment's deadline
    (or `deadline_seconds`: a monitoring round must not take a minute to say it failed)."""
    config = environment.health
    deadline = time.monotonic() + (deadline_seconds or config.deadline_seconds)
    interval = config.interval_seconds

    async def containers_running() -> str:
        containers = await runtime.containers(environment.workload)
        down = [c.name for c in containers if not c.running or c.health == "unhealthy"]
        if down:
            raise RollbackError("not running: " + ", ".join(down))
        return f"{len(containers)} running"

    async def sql_probe() -> str:
        latency = await ping(database, config.sql_probe)
        return f"{config.sql_probe!r} answered in {latency * 1000:.0f} ms"

    checks: list[Awaitable[CheckResult]] = [
        _retry(
            check.name,
            "http",
            lambda check=check: _http_probe(session, check),  # type: ignore[misc]
            deadline,
            interval,
        )
        for check in config.http
    ]
    if config.check_containers:
        checks.append(
            _retry(
                "containers", "containers", containers_running, deadline, config.interval_seconds
            )
        )
    checks.append(_retry("database", "sql", sql_probe, deadline, config.interval_seconds))
    return HealthReport(tuple(await asyncio.gather(*checks)))
