"""Requests while a dependency hangs: bounded answers, nothing queued forever (issue 7)."""

from __future__ import annotations

import time

import aiodocker

from services.containers import DockerRuntime
from tests.handlers.conftest import ALICE, BOB, INCIDENTS, MakeBot

DEADLINE = 1.0
HUNG = "Timed out after 1 s: the Docker engine did not answer (version)"


async def test_hung_engine_answers_each_request_within_its_deadline(
    make_bot: MakeBot,
    hung_engine: aiodocker.Docker,
) -> None:
    """Issue 7: a hung engine stalled pre-flight while holding the environment's planning
    lock, so every later request for it queued forever. Now each request is told within
    the deadline, and the bot answers other commands meanwhile."""
    bot = await make_bot(runtime=DockerRuntime(hung_engine, default_seconds=DEADLINE))
    began = time.monotonic()
    for user in (ALICE, BOB):
        delivery = await bot.slack.send_command(user.id, INCIDENTS.id, "/rollback", bot.environment)
        assert delivery.status == 200 and delivery.elapsed < 3
    status = await bot.slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", "status")
    assert status.status == 200
    answered = await bot.ephemeral(ALICE, timeout=DEADLINE)
    assert answered.text == "0 rollback(s) in progress", answered
    assert time.monotonic() - began < DEADLINE  # while both pre-flights still wait

    # The second request waited for the first one's pre-flight, then ran its own.
    failed = await bot.ephemeral(ALICE, count=2, timeout=2 * DEADLINE + 3)
    assert HUNG in failed.text
    assert HUNG in (await bot.ephemeral(BOB, timeout=2 * DEADLINE + 3)).text
    assert time.monotonic() - began < 2 * DEADLINE + 3
    assert await bot.runs() == []
    assert bot.workspace.messages(INCIDENTS.id) == []
