"""The demo as a user runs it (the incident played in the sandbox Slack workspace, the command
line version, Ctrl-C), and the terminal's live step list."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from pydantic import SecretStr

from bot.terminal import StepView, backup_lines, plan_lines, result_lines
from services.backups import ArchiveContents, Backup
from services.containers import Container
from services.environments import CutoverMode, Environment, Strategy
from services.events import EventKind, Step, StepEvent
from services.workflow import RollbackPlan, RollbackResult

STEPS = (
    "Restore into a staging database",
    "Stop containers",
    "Swap the databases",
    "Start containers",
    "Health checks",
)


async def demo_leftovers(docker: aiodocker.Docker, output: str) -> list[str]:
    """Containers of the demo's Compose project (named in its output) still there."""
    project = re.search(r"Compose project (rollback-demo-[0-9a-f]+):", output)
    assert project is not None, output
    found = await docker.containers.list(
        all=True, filters={"label": [f"com.docker.compose.project={project[1]}"]}
    )
    return [c.id for c in found]


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A TMPDIR for the demo, so that what it leaves behind is its own (short: socket paths)."""
    folder = Path(tempfile.mkdtemp(prefix="rb-demo-test-"))
    folder.chmod(0o755)  # initdb runs as postgres when the tests run as root
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def start_demo(tmp: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "demo",
        "--rows",
        "2000",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp), "COLUMNS": "100"},
    )


def after(text: str, marker: str) -> str:
    assert marker in text, text
    return text.split(marker, 1)[1]


HEADER = re.compile(r"^\[\d\d:\d\d:\d\d\] (.+)$", re.MULTILINE)


def entries(text: str) -> list[tuple[str, str]]:
    """The transcript's entries in `text`: (header without the time, body)."""
    found = list(HEADER.finditer(text))
    ends = [m.start() for m in found[1:]] + [len(text)]
    return [
        (m[1], text[m.end() : end].split("\n\n", 1)[0]) for m, end in zip(found, ends, strict=True)
    ]


async def test_demo_plays_the_incident_in_slack_and_cleans_up(
    docker: aiodocker.Docker, private_tmp: Path
) -> None:
    process = await start_demo(private_tmp)
    out, err = await asyncio.wait_for(process.communicate(), 180)
    text, errors = out.decode(), err.decode()
    assert process.returncode == 0, text + errors
    assert "Traceback" not in text + errors and "ERROR" not in errors, errors

    # alice asks: the plan message appears with its buttons, and the contacts are told.
    asked = after(text, ">>> alice types /rollback demo in #incidents")
    before_click, approved = asked.split(">>> bob reads the plan and clicks Approve\n", 1)
    (header, plan), *_ = entries(before_click)
    assert header == "#incidents · rollback-bot"
    assert plan.startswith("\n    Rollback of demo: awaiting approval")
    assert re.search(r"Containers that will stop \(2\): rollback-demo-\w+-web-1, rollback-de", plan)
    assert "[ Approve ] [ Reject ] [ Cancel ]" in plan
    told = dict(entries(before_click))
    assert "🔁 @alice asked to roll back demo" in told["direct message to carol · rollback-bot"]

    # bob approves: the same message is edited live, step by step, until it is done.
    after_click = entries(approved)
    assert after_click[0] == (
        "#incidents · rollback-bot (only visible to bob)",
        "\n    ✅ Approved: the rollback starts now. Follow it in the channel message.",
    )
    edits = [body for head, body in after_click if head == "#incidents · rollback-bot (edited)"]
    assert len(edits) >= 2, approved  # "approved, starting", …, "done"
    # The first edit after the click: approved, or already under way (edits are merged).
    assert re.search(r"Rollback of demo: (approved, starting|in progress)", edits[0]), edits[0]
    assert "┆ removed: [ Approve ] [ Reject ] [ Cancel ]" in edits[0]
    assert "Rollback of demo: done" in edits[-1] and "⏳" not in edits[-1]
    # The staging restore (swap strategy) runs while bob reads the plan; the rest after.
    shown = "".join(body for head, body in entries(asked) if head.endswith("(edited)"))
    for step in STEPS:
        assert f"✓ {step} — " in shown, step
    assert "✗" not in shown and "✓ web" in shown and "HTTP 200" in shown

    # The incident report in the thread; carol and @sre told that it ended.
    bodies = dict(after_click)
    report = bodies["#incidents · rollback-bot (in thread)"]
    assert "Incident report: demo" in report and "Approved by: @bob" in report
    assert "Data-loss window: 2 h 0 min" in report
    assert "🏁 The rollback of demo ended: done" in bodies["direct message to carol · rollback-bot"]
    assert "@sre 🏁 The rollback of demo ended: done" in bodies["#incidents · rollback-bot"]

    assert re.search(r"Run rb-\w+ succeeded\.", text)
    assert re.search(r"every table equals pre-migration-[0-9-]+\.dump: yes", text)
    assert text.rstrip().endswith("Cleaning up …")
    assert await demo_leftovers(docker, text) == []
    assert os.listdir(private_tmp) == []


async def test_demo_on_the_command_line(docker: aiodocker.Docker, private_tmp: Path) -> None:
    process = await start_demo(private_tmp, "--cli")
    out, err = await asyncio.wait_for(process.communicate(), 180)
    text = out.decode()
    assert process.returncode == 0, text + err.decode()
    assert "$ rollback-bot rollback demo --yes" in text and "Rollback SUCCEEDED" in text
    assert "every table equals pre-migration-" in text and ": yes" in text
    assert await demo_leftovers(docker, text) == []
    assert os.listdir(private_tmp) == []


@pytest.mark.parametrize(
    ("marker", "seen"),
    [
        # While setting up: containers up, no bot yet.
        ("after a bad deployment", ()),
        # Just as bob clicks: the click is seen through, the approved rollback finishes and
        # is reported, then everything goes.
        (
            ">>> bob reads the plan and clicks Approve",
            ("Interrupted (Ctrl-C)", "Incident report: demo", "Rollback of demo: done"),
        ),
    ],
    ids=["during-setup", "as-bob-approves"],
)
async def test_demo_interrupted_with_ctrl_c_cleans_up(
    docker: aiodocker.Docker, private_tmp: Path, marker: str, seen: tuple[str, ...]
) -> None:
    process = await start_demo(private_tmp)
    assert process.stdout is not None
    lines = []
    while line := await asyncio.wait_for(process.stdout.readline(), 120):
        lines.append(line.decode())
        if marker.encode() in line:
            break
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 90)
    text, errors = "".join(lines) + out.decode(), err.decode()
    assert process.returncode == 130, text + errors
    assert "Traceback" not in text + errors and "ERROR" not in errors, errors
    for expected in seen:
        assert expected in text, text
    assert "every table equals" not in text
    assert await demo_leftovers(docker, text) == []
    assert os.listdir(private_tmp) == []


async def test_live_step_list_redraws_in_place_on_a_terminal() -> None:
    """issue 11: the live display (rich) redraws the whole list in place, shows the
    restore's progress as a bar, and leaves the final list and the cursor when it ends."""
    out = io.StringIO()
    with StepView(out, live=True) as view:
        await view(StepEvent("rb-1", Step.STOP, EventKind.STARTED))
        await view(StepEvent("rb-1", Step.STOP, EventKind.FINISHED, "2 stopped", 0.25))
        await view(StepEvent("rb-1", Step.PREPARE, EventKind.STARTED))
        progress = "restoring into the staging database: 40%"
        await view(StepEvent("rb-1", Step.PREPARE, EventKind.PROGRESS, progress))
        during = out.getvalue()
        await view(StepEvent("rb-1", Step.PREPARE, EventKind.FAILED, "disk full\x1b[2J", 1.5))
    screen = out.getvalue()
    assert screen.startswith("\x1b[?25l") and screen.endswith("\x1b[?25h")  # cursor back
    assert "\x1b[1A\x1b[2K" in screen  # up a line and erase it: redrawn in place
    assert "━" in during and "40%" in during  # the progress bar
    last = re.sub(r"\x1b\[[0-9;]*m", "", screen.rsplit("\x1b[1A\x1b[2K", 1)[1])
    assert "✓  Stop containers" in last and "0.2 s  2 stopped" in last
    assert "✗  Restore into a staging database" in last
    assert "1.5 s  disk full\\x1b[2J" in last  # outside text stays escaped


async def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    view = StepView(out, live=False)
    await view(StepEvent("rb-1", Step.STOP, EventKind.STARTED))
    await view(StepEvent("rb-1", Step.STOP, EventKind.FINISHED, "2 stopped", 0.25))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b" not in out.getvalue()
    assert lines[1].endswith("✓ Stop containers  0.2 s  2 stopped")


def test_the_terminal_shows_hostile_names_as_escapes_and_flags_future_dates() -> None:
    """issue 8: a newline in a name printed a fake "Rollback SUCCEEDED" line; a future
    stamp showed as "0 s ago"."""
    now = datetime.now(UTC)
    hostile_name = "x\nRollback SUCCEEDED (run 1)\x1b[2K\u202e.dump"
    future = Backup("a-20991231-000000.dump", Path("/b/a"), 10, datetime(2099, 12, 31, tzinfo=UTC))
    own = Backup("pre-rollback-20240101-000000.dump", Path("/b/p"), 10, now, own=True)
    odd = Backup(hostile_name, Path("/b/x"), 10, now - timedelta(hours=2))
    lines = backup_lines([future, own, odd], now)
    assert len(lines) == 4
    assert "DATED IN THE FUTURE" in lines[1] and "0 s" not in lines[1]
    assert "(the bot's own safety dump)" in lines[2]
    assert lines[3].startswith("x\\nRollback SUCCEEDED (run 1)\\x1b[2K\\u202e.dump")
    shown = plan_lines(one_container_plan(future, now))
    assert any("DATED IN THE FUTURE" in line for line in shown)
    assert any(line.startswith("  warning       dated in the future") for line in shown)
    failed = result_lines(RollbackResult("rb-1", ok=False, error=f"Backup '{hostile_name}' gone"))
    assert not any(line.startswith("Rollback SUCCEEDED") for line in failed)
    assert all("\x1b" not in line and "\n" not in line for line in failed)


def test_the_terminal_plan_says_the_cut_over_mode_and_its_steps() -> None:
    """Issue 10: the plan on the command line names the mode, what the application sees
    and the steps it brings (keep: no container step at all)."""
    now = datetime.now(UTC)
    backup = Backup("a.dump", Path("/b/a.dump"), 1000, now - timedelta(hours=1))
    plan = one_container_plan(backup, now, strategy=Strategy.SWAP, cutover_mode=CutoverMode.KEEP)
    shown = "\n".join(plan_lines(plan))
    assert "  cut-over      keep: keeps running: at the rename new connections are refused" in shown
    assert (
        "  steps         Restore into a staging database → Swap the databases → Health checks"
        " → Dump the old database to the backups folder"
    ) in shown
    paused = dataclasses.replace(plan, cutover_mode=CutoverMode.PAUSE)
    assert "Pause containers → Swap the databases → Thaw containers" in "\n".join(
        plan_lines(paused)
    )


def one_container_plan(backup: Backup, now: datetime, **changes: Any) -> RollbackPlan:
    """A plan for environment production and its one container, for the renderers."""
    environment = Environment(
        name="production",
        compose_project="production",
        database_url=SecretStr("postgresql://a@h/app"),
        database_display="postgresql://a@h/app",
        backups_dir=Path("/b"),
    )
    plan = RollbackPlan(
        environment,
        backup,
        ArchiveContents("app", 3, ("public.orders",)),
        (Container("id", "production-web-1", "web", "running"),),
        Path("/b/pre-rollback-20991231-000001.dump"),
        now,
    )
    return dataclasses.replace(plan, **changes)
