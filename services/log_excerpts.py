"""The last lines of the failing containers' logs, for the run's thread when health fails
(in the rollback's health step and while the environment is watched afterwards).

Bounded (lines and bytes per container, a few containers), scrubbed of the configured
secrets (the environment's database password and `secrets_env` values, the bot's tokens)
and of tokens or URL passwords nobody configured, control and invisible characters shown
as escapes. Recorded in the run's audit log, so any bot process can show them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.bundle import Services
from services.containers import Container, Runtime
from services.environments import Environment
from services.errors import RollbackError
from services.health import CheckResult
from services.names import visible
from services.pgtools import libpq_environment
from services.run_store import EventRecord, RunStore
from services.scrub import Scrubber

log = logging.getLogger(__name__)

LOG_LINES = 50  # per container
LOG_BYTES = 4096  # per container, after escaping
MAX_CONTAINERS = 3
CAPTURE_SECONDS = 10.0  # all of it: a hung engine must not hold the health report back
EXCERPT_EVENT = "log_excerpt"


@dataclass(frozen=True)
class LogExcerpt:
    container: str
    text: str  # the last lines, scrubbed and escaped, oldest first; "" if none
    lines_left_out: int = 0  # older lines dropped to stay within LOG_BYTES
    error: str = ""  # the logs could not be read

    def as_detail(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "text": self.text,
            "lines_left_out": self.lines_left_out,
            "error": self.error,
        }

    @classmethod
    def from_detail(cls, detail: dict[str, Any]) -> LogExcerpt:
        return cls(
            str(detail.get("container", "?")),
            str(detail.get("text", "")),
            int(detail.get("lines_left_out") or 0),
            str(detail.get("error") or ""),
        )


def environment_secrets(environment: Environment) -> list[str]:
    """What the environment's applications know and must never be shown: its database
    password and its `secrets_env` values."""
    url = environment.database_url.get_secret_value()
    password = libpq_environment(url).get("PGPASSWORD", "")
    return [s for s in (password, *(v.get_secret_value() for v in environment.secrets)) if s]


def environment_scrubber(services: Services, environment: Environment) -> Scrubber:
    """The bot's scrubber with the environment's secrets too: for any text its containers,
    probes or database may have written."""
    return services.scrubber.with_secrets(environment_secrets(environment))


def select_containers(
    environment: Environment, containers: Sequence[Container], failed: Iterable[CheckResult]
) -> list[Container]:
    """Whose logs explain the failure: containers down or unhealthy, then those of the
    services behind failing HTTP checks (every container when a check names none)."""
    names = {result.name for result in failed}
    checks = [check for check in environment.health.http if check.name in names]
    services = {check.service for check in checks if check.service}
    anyone = any(check.service is None for check in checks)
    down = [c for c in containers if not c.running or c.health == "unhealthy"]
    behind = [c for c in containers if c.service in services]
    chosen: list[Container] = []
    for container in (*down, *behind, *(containers if anyone else ())):
        if container not in chosen:
            chosen.append(container)
    return chosen[:MAX_CONTAINERS]


def bounded_lines(
    raw: str, scrubber: Scrubber, *, lines: int = LOG_LINES, max_bytes: int = LOG_BYTES
) -> tuple[str, int]:
    """The newest lines of `raw` that fit in `max_bytes`, scrubbed and escaped; and how many
    of the last `lines` lines were left out. Secrets go before anything is cut, so no cut
    leaves a piece of one."""
    scrubbed = scrubber.scrub_all(raw)
    candidates = [line.removesuffix("\r") for line in scrubbed.split("\n")]
    if candidates and candidates[-1] == "":
        candidates.pop()
    candidates = candidates[-lines:]
    # Escaped (a terminal sequence or a bidi override shown, not obeyed), scrubbed again
    # (a secret written with control characters between its parts).
    shown = [scrubber.scrub_all(visible(line)) for line in candidates]
    kept: list[str] = []
    used = 0
    for line in reversed(shown):
        size = len(line.encode()) + 1
        if used + size > max_bytes:
            if not kept:  # one huge line: its start, marked as cut
                kept.append(line.encode()[: max_bytes - 4].decode(errors="ignore") + "…")
            break
        kept.append(line)
        used += size
    return "\n".join(reversed(kept)), len(shown) - len(kept)


async def _read(runtime: Runtime, container: Container, scrubber: Scrubber) -> LogExcerpt:
    try:
        raw = await runtime.logs(container, LOG_LINES)
    except RollbackError as error:
        return LogExcerpt(container.name, "", error=scrubber.scrub_all(str(error)))
    text, left_out = bounded_lines(raw, scrubber)
    return LogExcerpt(container.name, text, left_out)


async def capture(
    services: Services, environment: Environment, failed: Sequence[CheckResult]
) -> tuple[LogExcerpt, ...]:
    """The failing containers' last lines; never raises for the engine's sake (the health
    failure matters more than its logs): what could not be read is logged or says why."""
    scrubber = environment_scrubber(services, environment)
    try:
        async with asyncio.timeout(CAPTURE_SECONDS):
            containers = await services.runtime.containers(environment.workload)
            chosen = select_containers(environment, containers, failed)
            return tuple(
                await asyncio.gather(*(_read(services.runtime, c, scrubber) for c in chosen))
            )
    except (RollbackError, TimeoutError) as error:
        log.warning("no log excerpt for %s: %s", environment.name, error or "timed out")
        return ()


async def capture_and_record(
    services: Services,
    environment: Environment,
    failed: Sequence[CheckResult],
    *,
    run_id: str,
    during: str,
) -> tuple[LogExcerpt, ...]:
    """`capture`, then kept in the run's audit log (`during`: health, monitoring)."""
    excerpts = await capture(services, environment, failed)
    if excerpts:
        try:
            await services.store.append_event(
                run_id,
                EXCERPT_EVENT,
                detail={"during": during, "containers": [e.as_detail() for e in excerpts]},
            )
        except Exception:  # shown anyway by whoever holds them; the record is extra
            log.exception("run %s: the log excerpt could not be recorded", run_id)
    return excerpts


def latest_excerpts(events: Iterable[EventRecord], *, during: str) -> tuple[LogExcerpt, ...]:
    found: tuple[LogExcerpt, ...] = ()
    for event in events:
        if event.kind == EXCERPT_EVENT and event.detail.get("during") == during:
            found = tuple(
                LogExcerpt.from_detail(item)
                for item in event.detail.get("containers") or []
                if isinstance(item, dict)
            )
    return found


async def recorded_excerpts(store: RunStore, run_id: str, *, during: str) -> tuple[LogExcerpt, ...]:
    return latest_excerpts(await store.events(run_id), during=during)
