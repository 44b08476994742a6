"""Hostile names through Slack: `/rollback <env> <name>` to a running bot (issue 8)."""

from __future__ import annotations

import aiodocker
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.demo_environment import table_checksums
from tests import hostile
from tests.handlers.conftest import ALICE, INCIDENTS, Bot
from tests.hostile import HOSTILE
from tests.services.conftest import container_states


def command_texts(environment: str) -> st.SearchStrategy[str]:
    names = st.one_of(hostile.refused, hostile.markup, st.text(max_size=80)).filter(
        lambda name: name.strip(" ")  # a bare `/rollback env` is an ordinary request
    )
    return st.one_of(
        names.map(lambda name: f"{environment} {name}"),
        names.map(lambda name: f"{environment} backups/{name}"),
        names.map(lambda name: f"backups {name}"),
        names.map(lambda name: f"{name} latest.dump"),
    )


@settings(HOSTILE, max_examples=40)
@given(data=st.data())
async def test_a_hostile_name_gets_a_clear_ephemeral_answer_and_touches_nothing(
    bot: Bot, docker: aiodocker.Docker, data: st.DataObject
) -> None:
    """issue 8: every answer is ephemeral and readable; no run, no stop, no change."""
    text = data.draw(command_texts(bot.environment))
    before = await table_checksums(bot.stage.dsn)
    shown = len(bot.workspace.ephemerals(ALICE.id))

    delivery = await bot.slack.send_command(ALICE.id, INCIDENTS.id, "/rollback", text)
    assert delivery.status == 200
    reply = await bot.ephemeral(ALICE, shown + 1)

    words = list(hostile.strings([reply.text, reply.blocks]))
    touched = (
        await bot.runs() != []
        or bot.workspace.calls_to("chat.postMessage") != []
        or set((await container_states(docker, bot.stage.project)).values()) != {"running"}
        or await table_checksums(bot.stage.dsn) != before
    )
    hostile.tried(touched)
    assert not touched
    assert not any(hostile.raw_control(w) or "Traceback" in w or "💥" in w for w in words)
    for markup in hostile.MARKUP[:3]:  # what would notify people, had it been sent raw
        assert not any(markup in w for w in words)
    # Everything the workspace received from the bot, not only the reply.
    received = list(hostile.strings([c.params for c in bot.workspace.calls]))
    assert not any(hostile.raw_control(w) or "Traceback" in w for w in received)
