"""The command line on a real terminal (a pty): a live step list and tables drawn with rich;
plain lines with TERM=dumb or NO_COLOR (issue 11)."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import sys
from pathlib import Path

import aiodocker

from sandbox.demo_environment import table_checksums
from sandbox.throwaway_postgres import ThrowawayPostgres
from tests.bot.test_cli import store_env, write_config
from tests.services.conftest import Stage, change_after_backup, container_states

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


async def on_a_terminal(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """`rollback-bot args` with its stdout and stderr on a pty; what the pty showed."""
    controller, terminal = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=terminal,
            stderr=terminal,
            env={**os.environ, "COLUMNS": "160", "TERM": "xterm", **env},
        )
        os.close(terminal)
        terminal = -1

        def drain() -> bytes:
            shown = b""
            while True:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # the pty closed: the process has gone
                    return shown
                if not chunk:
                    return shown
                shown += chunk

        screen = await asyncio.wait_for(asyncio.to_thread(drain), 120)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    return code, screen.decode().replace("\r\n", "\n")


async def test_a_rollback_on_a_terminal_draws_live_and_dumb_terminals_get_plain_lines(
    stage: Stage,
    pg: ThrowawayPostgres,
    tmp_path: Path,
    docker: aiodocker.Docker,
    store_pool: object,
) -> None:
    """issue 11: the CLI redrew by counting lines and ignored TERM=dumb; now rich draws the
    plan, the live step list and the history on a terminal, and a dumb terminal or
    NO_COLOR gets the plain lines a pipe gets."""
    config = write_config(stage, tmp_path)
    expected = await table_checksums(stage.dsn)
    await change_after_backup(stage.dsn)
    env = store_env(pg)
    name = stage.environment.name

    code, screen = await on_a_terminal("--config", str(config), "rollback", name, "--yes", env=env)
    assert code == 0, screen
    assert "\x1b[?25l" in screen and "\x1b[?25h" in screen  # the live display came and went
    assert "\x1b[1A\x1b[2K" in screen  # redrawn in place
    text = ESCAPE.sub("", screen)
    assert f"Rollback plan for {name}" in text and "data loss" in text
    for label in ("Stop containers", "Safety backup", "Restore database", "Health checks"):
        assert re.search(rf"✓ +{label} ", text), label
    assert "Rollback SUCCEEDED" in text
    assert "[   " not in text  # not the plain lines' elapsed-time stamps
    assert await table_checksums(stage.dsn) == expected
    assert set((await container_states(docker, stage.project)).values()) == {"running"}

    # The history: a table on a terminal, the plain lines on a dumb one.
    code, table = await on_a_terminal("--config", str(config), "history", name, env=env)
    assert code == 0, table
    header = ESCAPE.sub("", table).splitlines()[0].split()
    assert header == ["REQUESTED", "RUN", "STATUS", "BACKUP", "BY"]
    code, dumb = await on_a_terminal(
        "--config", str(config), "history", name, env={**env, "TERM": "dumb"}
    )
    assert code == 0 and "\x1b" not in dumb, dumb
    (line,) = dumb.splitlines()
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d rb-\w+ succeeded +{stage.backup.name}  by .+", line
    ), line

    # NO_COLOR: the backups as the plain lines, no escape sequence at all.
    code, backups = await on_a_terminal(
        "--config", str(config), "backups", name, env={**env, "NO_COLOR": "1"}
    )
    assert code == 0 and "\x1b" not in backups, backups
    assert backups.splitlines()[2].startswith("NAME ") and "SIZE" in backups
