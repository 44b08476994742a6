"""Parsing `/rollback …` text into what was asked; anything else is a usage answer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services import names
from services.errors import InvalidName


class CommandKind(StrEnum):
    ROLLBACK = "rollback"
    CODE = "code"  # /rollback code ENV [commit]
    FULL = "full"  # /rollback full ENV [backup [commit]]
    BACKUPS = "backups"
    STATUS = "status"
    HISTORY = "history"
    CANCEL = "cancel"
    HELP = "help"
    USAGE = "usage"  # not understood: answer with the usage


@dataclass(frozen=True)
class ParsedCommand:
    kind: CommandKind
    environment: str | None = None
    backup: str | None = None
    commit: str | None = None  # CODE, FULL: the commit to bring the code back to
    problem: str | None = None  # for USAGE: what was wrong


def _usage(problem: str) -> ParsedCommand:
    return ParsedCommand(CommandKind.USAGE, problem=problem)


def parse_command(text: str) -> ParsedCommand:
    """What `text` asks for; never raises: anything else is USAGE with the problem."""
    try:
        return _parse(text)
    except InvalidName as error:
        return _usage(str(error))


def _parse(text: str) -> ParsedCommand:
    # Only spaces separate words: any other whitespace or control character is refused
    # with its own message (a trailing newline is not stripped), before anything is looked up.
    names.check_command_text(text)
    words = [word for word in text.split(" ") if word]
    if not words:
        return _usage("Name the environment to roll back.")
    first, rest = words[0].lower(), words[1:]
    if first == "help":
        return ParsedCommand(CommandKind.HELP)
    if first in ("backups", "history", "cancel"):
        if len(rest) != 1:
            return _usage(f"`{first}` takes one environment.")
        return ParsedCommand(CommandKind(first), environment=names.check_environment_name(rest[0]))
    if first == "status":
        if len(rest) > 1:
            return _usage("`status` takes at most one environment.")
        environment = names.check_environment_name(rest[0]) if rest else None
        return ParsedCommand(CommandKind.STATUS, environment=environment)
    if first in ("code", "full"):
        return _parse_code_or_full(CommandKind(first), rest)
    if len(words) > 2:
        return _usage("Too many words.")
    backup = words[1] if len(words) == 2 else None
    if backup is not None:
        names.backup_file_name(backup)  # the folder's own check comes with the environment
    return ParsedCommand(
        CommandKind.ROLLBACK, environment=names.check_environment_name(words[0]), backup=backup
    )


def _parse_code_or_full(kind: CommandKind, rest: list[str]) -> ParsedCommand:
    """`code ENV [commit]`; `full ENV [backup [commit]]` (a backup comes before a commit: to
    pair the newest backup with a commit, name the backup)."""
    form = (
        "`code <environment> [commit]`"
        if kind is CommandKind.CODE
        else ("`full <environment> [backup [commit]]`")
    )
    most = 2 if kind is CommandKind.CODE else 3
    if not rest:
        return _usage(f"Name the environment: {form}.")
    if len(rest) > most:
        return _usage(f"Too many words: {form}.")
    environment = names.check_environment_name(rest[0])
    backup = rest[1] if kind is CommandKind.FULL and len(rest) >= 2 else None
    if backup is not None:
        names.backup_file_name(backup)
    commit_word = rest[-1] if len(rest) == most else None
    commit = names.check_commitish(commit_word) if commit_word is not None else None
    return ParsedCommand(kind, environment=environment, backup=backup, commit=commit)
