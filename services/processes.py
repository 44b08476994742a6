"""Subprocesses as argument lists (never a shell), killed when the caller is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def error_text(self, limit: int = 2000) -> str:
        """The tool's own error lines, trimmed; what a user needs to see."""
        text = (self.stderr or self.stdout).strip()
        return text[-limit:] if len(text) > limit else text


async def run(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None
) -> Completed:
    """Run argv to completion; on cancellation or timeout the process is killed and reaped."""
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
    except BaseException:
        await kill(process)
        raise
    assert process.returncode is not None
    return Completed(
        tuple(argv), process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


async def kill(process: asyncio.subprocess.Process) -> None:
    """Kill a process that may already have exited, and wait briefly for it.

    asyncio's wait() returns only once every pipe is closed, and a pipe whose reader stopped
    reading never closes; so the wait is bounded (the child watcher still reaps it).
    """
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(process.wait()), 5)
