"""The `/rollback` grammar (handlers/commands.py) over any text (issue 8)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.commands import CommandKind, parse_command
from tests import hostile
from tests.hostile import HOSTILE

WORDS = st.sampled_from(["help", "backups", "history", "status", "code", "full", "production"])


@settings(HOSTILE, max_examples=400)
@given(
    st.one_of(
        st.text(max_size=400),
        st.lists(st.one_of(WORDS, hostile.anything), max_size=4).map(" ".join),
        hostile.refused.map(lambda name: f"production {name}"),
    )
)
def test_parse_command_never_raises_and_junk_gets_a_usage_problem(text: str) -> None:
    """issue 8: any text is a command or a usage answer with one printable problem."""
    parsed = parse_command(text)
    hostile.tried(touched=False)
    if parsed.kind is CommandKind.USAGE:
        assert parsed.problem and parsed.problem.isprintable() and len(parsed.problem) < 300
        return
    for value in (parsed.environment, parsed.backup, parsed.commit):
        assert value is None or (value.isprintable() and " " not in value)


@settings(HOSTILE, max_examples=200)
@given(
    st.one_of(
        hostile.nul,
        hostile.control,
        hostile.invisible,
        hostile.too_long,
        st.sampled_from([t for t in hostile.TRAVERSALS if t.count("/") != 1 or "." in t[:2]]),
    )
)
def test_a_refused_backup_name_is_a_usage_answer_that_does_not_repeat_it(name: str) -> None:
    """issue 8: refused before the folder is known (a sub-folder waits for the folder)."""
    parsed = parse_command(f"production {name}")
    hostile.tried(touched=False)
    if " " in name.strip(" "):
        return  # more words than a rollback takes: answered as such
    assert parsed.kind is CommandKind.USAGE, parsed
    assert parsed.problem is not None
    assert len(name) < 4 or name.strip(" ") not in parsed.problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("production x.dump\n", "control character, U+000A (line feed), at character 18"),
        ("production\tx.dump", "control character, U+0009 (tab)"),
        ("production x\x00.dump", "NUL byte"),
        ("production " + "a" * 300, "too long: 300 bytes"),
        ("production ../../etc/passwd", "outside the backups folder"),
        ("x" * 5000, "command is too long: 5,000 characters"),
        ("backups prod\u202e", "invisible or non-printing character, U+202E"),
    ],
)
def test_hostile_commands_get_one_clear_problem(text: str, problem: str) -> None:
    parsed = parse_command(text)
    assert parsed.kind is CommandKind.USAGE
    assert parsed.problem is not None and problem in parsed.problem


def test_ordinary_commands() -> None:
    assert parse_command("  production   backups/x.dump ") == parse_command(
        "production backups/x.dump"
    )
    parsed = parse_command("production backups/x.dump")
    assert (parsed.kind, parsed.environment, parsed.backup) == (
        CommandKind.ROLLBACK,
        "production",
        "backups/x.dump",
    )
    assert parse_command("backups production").kind is CommandKind.BACKUPS
    assert parse_command("").problem == "Name the environment to roll back."


@pytest.mark.parametrize(
    ("text", "kind", "environment", "backup", "commit"),
    [
        ("code production", CommandKind.CODE, "production", None, None),
        ("code production ABC1234", CommandKind.CODE, "production", None, "abc1234"),
        ("code production v1.2", CommandKind.CODE, "production", None, "v1.2"),
        ("full production", CommandKind.FULL, "production", None, None),
        ("full production x.dump", CommandKind.FULL, "production", "x.dump", None),
        ("full production x.dump 0a1b2c3d", CommandKind.FULL, "production", "x.dump", "0a1b2c3d"),
    ],
)
def test_code_and_full_commands(
    text: str, kind: CommandKind, environment: str, backup: str | None, commit: str | None
) -> None:
    parsed = parse_command(text)
    assert (parsed.kind, parsed.environment, parsed.backup, parsed.commit) == (
        kind,
        environment,
        backup,
        commit,
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("code", "Name the environment: `code <environment> [commit]`."),
        ("code production abc1234 more", "Too many words: `code <environment> [commit]`."),
        ("full production x.dump abc1234 more", "Too many words"),
        ("code production abc12", "too short for a commit sha: give at least 7 hex digits"),
        ("code production --force", "starts with '-'"),
        ("code production HEAD~1", "is not a name git accepts"),
        ("full production ../x.dump", "outside the backups folder"),
    ],
)
def test_code_and_full_commands_refused(text: str, problem: str) -> None:
    parsed = parse_command(text)
    assert parsed.kind is CommandKind.USAGE and parsed.problem is not None
    assert problem in parsed.problem
