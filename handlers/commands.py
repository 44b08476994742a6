"""Parsing `/rollback …` text into what was asked; anything else is a usage answer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CommandKind(StrEnum):
    ROLLBACK = "rollback"
    BACKUPS = "backups"
    STATUS = "status"
    HISTORY = "history"
    HELP = "help"
    USAGE = "usage"  # not understood: answer with the usage


@dataclass(frozen=True)
class ParsedCommand:
    kind: CommandKind
    environment: str | None = None
    backup: str | None = None
    problem: str | None = None  # for USAGE: what was wrong


def _usage(problem: str) -> ParsedCommand:
    return ParsedCommand(CommandKind.USAGE, problem=problem)


def parse_command(text: str) -> ParsedCommand:
    words = text.split()
    if not words:
        return _usage("Name the environment to roll back.")
    first, rest = words[0].lower(), words[1:]
    if first == "help":
        return ParsedCommand(CommandKind.HELP)
    if first in ("backups", "history"):
        if len(rest) != 1:
            return _usage(f"`{first}` takes one environment.")
        return ParsedCommand(CommandKind(first), environment=rest[0])
    if first == "status":
        if len(rest) > 1:
            return _usage("`status` takes at most one environment.")
        return ParsedCommand(CommandKind.STATUS, environment=rest[0] if rest else None)
    if first in ("code", "full"):
        return _usage(f"A {first} rollback cannot be started from Slack yet.")
    if len(words) > 2:
        return _usage("Too many words.")
    return ParsedCommand(
        CommandKind.ROLLBACK, environment=words[0], backup=words[1] if len(words) == 2 else None
    )
