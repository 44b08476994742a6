"""The demo as a user runs it (including Ctrl-C), and the terminal's live step list."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys

import aiodocker

from bot.terminal import StepView
from services.events import EventKind, Step, StepEvent


async def demo_leftovers(docker: aiodocker.Docker) -> list[str]:
    found = await docker.containers.list(
        all=True, filters={"label": ["com.docker.compose.project=rollback-demo"]}
    )
    return [c.id for c in found]


async def test_demo_runs_a_real_rollback_and_cleans_up(docker: aiodocker.Docker) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "demo",
        "--rows",
        "2000",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 180)
    text = out.decode()
    assert process.returncode == 0, err.decode()
    assert "Rollback SUCCEEDED" in text
    assert "every table equals pre-migration-" in text and ": yes" in text
    assert await demo_leftovers(docker) == []


async def test_demo_interrupted_with_ctrl_c_cleans_up(docker: aiodocker.Docker) -> None:
    before = set(os.listdir("/tmp"))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "demo",
        "--rows",
        "2000",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    # Interrupt once the containers are up: the line after a bad deployment.
    while line := await asyncio.wait_for(process.stdout.readline(), 120):
        if b"after a bad deployment" in line:
            break
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 130, err.decode()
    assert await demo_leftovers(docker) == []
    left = {
        name
        for name in set(os.listdir("/tmp")) - before
        if name.startswith(("rollback-bot-demo-", "rollback-bot-pg-"))
    }
    assert left == set()


async def test_live_step_list_redraws_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    view = StepView(out, live=True)
    await view(StepEvent("rb-1", Step.STOP, EventKind.STARTED))
    await view(StepEvent("rb-1", Step.STOP, EventKind.FINISHED, "2 stopped", 0.25))
    await view(StepEvent("rb-1", Step.RESTORE, EventKind.STARTED))
    await view(StepEvent("rb-1", Step.RESTORE, EventKind.FAILED, "disk full", 1.5))
    screen = out.getvalue()
    assert "\x1b[1F" in screen and "\x1b[2F" in screen  # cursor back up to redraw
    last = screen.rsplit("\x1b[2F", 1)[1]
    assert "✓ Stop containers" in last and "0.2 s  2 stopped" in last
    assert "✗ Restore database" in last and "1.5 s  disk full" in last


async def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    view = StepView(out, live=False)
    await view(StepEvent("rb-1", Step.STOP, EventKind.STARTED))
    await view(StepEvent("rb-1", Step.STOP, EventKind.FINISHED, "2 stopped", 0.25))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in out.getvalue()
    assert lines[1].endswith("✓ Stop containers  0.2 s  2 stopped")
