"""Subprocesses as argument lists (never a shell), killed when the caller is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.errors import DeadlineExceeded


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        """Everything the tool said on failure, for the log (never shown to users)."""
        return (self.stderr or self.stdout).strip()

    def error_text(self, limit: int = 300) -> str:
        """What a user may see of the failure: its error headlines (see `error_headline`)."""
        name = os.path.basename(self.argv[0]) if self.argv else "the tool"
        return error_headline(self.output, limit) or f"{name} exited with {self.returncode}"


# A line that states an error: PostgreSQL's "ERROR:"/"FATAL:" and the tools' "error:".
_HEADLINE = re.compile(r"\b(?:ERROR|FATAL|PANIC):|\berror:")
# Headlines that quote the offending value; the value is row data and is cut off.
_QUOTED_VALUE = re.compile(
    r"((?:invalid input (?:syntax|value) for|malformed|value too long for|"
    r"date/time field value out of range|out of range for type)[^:]*):.*"
)


def error_headline(text: str, limit: int = 300) -> str:
    """The ERROR/FATAL lines of a pg tool's output, without row data, within `limit`.

    COPY data, `DETAIL:` (a key's values, a failing row) and `CONTEXT:` (the input line)
    are left out: what is shown in Slack must not carry the database's contents.
    """
    lines: list[str] = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not _HEADLINE.search(line):
            continue
        line = _QUOTED_VALUE.sub(r"\1: (value not shown)", line)
        if line not in lines:
            lines.append(line)
    joined = "; ".join(lines)
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    what: str = "",
) -> Completed:
    """Run argv to completion; on cancellation or timeout the process is killed and reaped.

    An expired `timeout` raises DeadlineExceeded naming `what` (default: the program).
    """
    merged = {**os.environ, **env} if env is not None else None
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=merged,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        await kill(process)
        assert timeout is not None
        name = os.path.basename(argv[0])
        raise DeadlineExceeded(what or name, timeout, f"{name} was killed") from None
    except BaseException:
        await kill(process)
        raise
    assert process.returncode is not None
    return Completed(
        tuple(argv), process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


async def kill(
    process: asyncio.subprocess.Process, *, drain: asyncio.StreamReader | None = None
) -> None:
    """Kill a process that may already have exited, and wait briefly for it.

    asyncio's wait() returns only once every pipe is closed, and a pipe whose reader stopped
    reading never closes; so the wait is bounded (the child watcher still reaps it).
    `drain`: an output pipe nobody reads any more, read to its end so that it closes.
    """
    running = process.returncode is None
    if running:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    if drain is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(drain.read(), 5)
    if running:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(process.wait()), 5)
