"""What a user-given name may be, checked before it reaches the file system (issue 8).

Decided, for backup names, environment names and `/rollback` command text:

- not empty; at most 1,000 characters of command text, 255 bytes (UTF-8) per path part
  (the file system's own limit), 512 bytes for a whole backup name, 255 for an environment;
- no NUL, no control character (C0, DEL, C1: newline, CR and tab included, anywhere: a
  trailing newline is refused, not stripped), no invisible or non-printing character
  (format characters such as bidi overrides and zero-width spaces, line/paragraph
  separators, spaces other than U+0020, surrogates, private-use and unassigned code points);
- a backup name is `NAME` or `<backups folder>/NAME`: no absolute path, no `.` or `..` part,
  no empty part, no sub-folder, no backslash, no percent-encoding (`%2e`, `%2F`, …), and no
  character that looks like or normalizes (NFKC) to `.`, `/`, `\\` or `%` (fullwidth dots and
  solidus, one-dot leader, division and fraction slashes, …). Other letters, in any script,
  are accepted.

A backup label (`rollback-bot backup ENV LABEL`, the file's name before its date stamp) is
stricter: ASCII letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most
100 characters, without a date stamp of its own (the bot adds one).

Each problem is one `InvalidName` with its own message, which never repeats the input.

Git names (issue 9): a commit a user names is a hex sha prefix (7 to 40 digits) or a tag or
branch name that git's reference-name rules accept (no `..`, `~`, `^`, `:`, space, …), never
starting with `-`; the configured branch, remote and tag pattern follow the same rules.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

import pygit2

from services.errors import InvalidBackupName, InvalidCommit, InvalidName

BACKUP_NAME = "backup name"
BACKUP_LABEL = "backup label"
MAX_LABEL_CHARS = 100
MAX_COMMAND_CHARS = 1000
MAX_PART_BYTES = 255
MAX_BACKUP_NAME_BYTES = 512
MAX_ENVIRONMENT_BYTES = 255
COMMIT = "commit"
MAX_REF_BYTES = 255
SHORT_SHA = 7  # the fewest hex digits taken as a commit sha

_HEX = re.compile(r"[0-9a-fA-F]+")

_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LABEL_STAMP = re.compile(r"\d{8}-\d{6}")
_PERCENT_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
# Look-alikes that NFKC leaves alone.
_SLASH_LIKE = frozenset("\u2215\u2044\u29f8\u29f9\u2216\u2571\u2572\u0338\u20e5\u27cb\u27cd")
_DOT_LIKE = frozenset("\u3002\uff61\u2027\u00b7\u2219\u22c5\u0701\u0702")
_PATH_SIGNS = frozenset("./\\%")
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zl", "Zp", "Zs", "Cs", "Co", "Cn"})
_CONTROL_NAMES = {"\t": "tab", "\n": "line feed", "\r": "carriage return", "\x1b": "escape"}


class NameProblem(StrEnum):
    EMPTY = "empty"
    TOO_LONG = "too_long"
    NUL = "nul"
    CONTROL = "control"
    INVISIBLE = "invisible"
    ABSOLUTE = "absolute"
    TRAVERSAL = "traversal"
    SUB_FOLDER = "sub_folder"
    BACKSLASH = "backslash"
    ENCODED = "encoded"
    LOOKALIKE = "lookalike"
    OPTION = "option"
    SHORT_SHA = "short_sha"
    NOT_A_REF = "not_a_ref"
    STAMPED = "stamped"
    CHARACTERS = "characters"  # outside a label's safe set


def _code_point(char: str) -> str:
    name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name.lower()})" if name else "")


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc"


def _is_invisible(char: str) -> bool:
    return char != " " and unicodedata.category(char) in _INVISIBLE_CATEGORIES


def _refuse(what: str, problem: NameProblem, message: str, position: int | None = None) -> None:
    kind = {BACKUP_NAME: InvalidBackupName, COMMIT: InvalidCommit}.get(what, InvalidName)
    raise kind(what, problem, f"The {what} {message}", position=position)


def _check_characters(text: str, what: str, max_chars: int) -> None:
    """Empty, length in characters, NUL, control and invisible characters."""
    if not text:
        _refuse(what, NameProblem.EMPTY, "is empty.")
    if len(text) > max_chars:
        _refuse(
            what,
            NameProblem.TOO_LONG,
            f"is too long: {len(text):,} characters (at most {max_chars:,}).",
        )
    for index, char in enumerate(text, 1):
        if char == "\x00":
            _refuse(what, NameProblem.NUL, f"contains a NUL byte (character {index}).", index)
        if _is_control(char):
            _refuse(
                what,
                NameProblem.CONTROL,
                f"contains a control character, {_code_point(char)}, at character {index}.",
                index,
            )
        if _is_invisible(char):
            _refuse(
                what,
                NameProblem.INVISIBLE,
                f"contains an invisible or non-printing character, {_code_point(char)}, "
                f"at character {index}.",
                index,
            )


def _check_bytes(text: str, what: str, limit: int) -> None:
    size = len(text.encode())
    if size > limit:
        _refuse(what, NameProblem.TOO_LONG, f"is too long: {size:,} bytes (at most {limit:,}).")


def check_command_text(text: str) -> None:
    """The whole `/rollback …` text: bounded, printable (spaces separate the words)."""
    if text.strip(" "):
        _check_characters(text, "command", MAX_COMMAND_CHARS)


def check_environment_name(name: str) -> str:
    """A name to look up among the configured environments; returned unchanged."""
    _check_characters(name, "environment name", MAX_ENVIRONMENT_BYTES)
    _check_bytes(name, "environment name", MAX_ENVIRONMENT_BYTES)
    return name


def backup_file_name(requested: str, folder_name: str | None = None) -> str:
    """The file name inside the backups folder that `requested` names.

    `requested` is `NAME` or `<folder_name>/NAME` (the runbook's form); with no
    `folder_name`, any single folder part is let through (the folder is not known yet).
    """
    what = BACKUP_NAME
    _check_characters(requested, what, MAX_BACKUP_NAME_BYTES)
    _check_bytes(requested, what, MAX_BACKUP_NAME_BYTES)
    if "\\" in requested:
        _refuse(what, NameProblem.BACKSLASH, "contains a backslash; refused.")
    encoded = _PERCENT_ENCODED.search(requested)
    if encoded:
        _refuse(
            what,
            NameProblem.ENCODED,
            f"contains percent-encoding ({encoded.group()}); give the name as it is on disk.",
        )
    for index, char in enumerate(requested, 1):
        if char.isascii():
            continue
        normal = unicodedata.normalize("NFKC", char)
        if char in _SLASH_LIKE or char in _DOT_LIKE or _PATH_SIGNS.intersection(normal):
            _refuse(
                what,
                NameProblem.LOOKALIKE,
                f"contains {_code_point(char)}, a look-alike of a path sign "
                f"(., /, \\ or %), at character {index}; refused.",
                index,
            )
    if requested.startswith("/"):
        _refuse(
            what,
            NameProblem.ABSOLUTE,
            "is an absolute path, outside the backups folder; give the file's name.",
        )
    parts = requested.split("/")
    if any(part in (".", "..") for part in parts):
        _refuse(
            what, NameProblem.TRAVERSAL, "leads outside the backups folder ('..' or '.'); refused."
        )
    if "" in parts:
        _refuse(what, NameProblem.SUB_FOLDER, "has an empty path part ('//' or a trailing '/').")
    for part in parts:
        if len(part.encode()) > MAX_PART_BYTES:
            _refuse(
                what,
                NameProblem.TOO_LONG,
                f"is too long: {len(part.encode()):,} bytes in one file name "
                f"(at most {MAX_PART_BYTES}).",
            )
    if len(parts) > 2 or (len(parts) == 2 and folder_name is not None and parts[0] != folder_name):
        shown = f"{folder_name}/" if folder_name else "the folder's name and /"
        _refuse(
            what,
            NameProblem.SUB_FOLDER,
            f"names a sub-folder; give a file directly in the backups folder "
            f"(NAME, or NAME after {shown}).",
        )
    return parts[-1]


def _check_ref_form(text: str, what: str, full_name: str) -> None:
    if text.startswith("-"):
        _refuse(what, NameProblem.OPTION, "starts with '-'; refused.")
    if not pygit2.reference_is_valid_name(full_name):
        _refuse(
            what,
            NameProblem.NOT_A_REF,
            "is not a name git accepts (no '..', '~', '^', ':', '?', '*', '[', '\\', "
            "spaces, a leading or trailing '/' or '.', or '.lock' at the end).",
        )


def is_sha_prefix(text: str) -> bool:
    return SHORT_SHA <= len(text) <= 40 and _HEX.fullmatch(text) is not None


def check_commitish(text: str) -> str:
    """A commit a user names: a sha prefix (returned lowercased) or a tag or branch name."""
    what = COMMIT
    _check_characters(text, what, MAX_REF_BYTES)
    _check_bytes(text, what, MAX_REF_BYTES)
    if _HEX.fullmatch(text) and len(text) <= 40:
        if len(text) < SHORT_SHA:
            _refuse(
                what,
                NameProblem.SHORT_SHA,
                f"is too short for a commit sha: give at least {SHORT_SHA} hex digits.",
            )
        return text.lower()
    _check_ref_form(text, what, f"refs/tags/{text}")
    return text


def check_ref_name(text: str, what: str, prefix: str = "refs/heads/") -> str:
    """A configured branch or remote name (`prefix` + text must be a valid reference)."""
    _check_characters(text, what, MAX_REF_BYTES)
    _check_bytes(text, what, MAX_REF_BYTES)
    _check_ref_form(text, what, prefix + text)
    return text


def backup_label(label: str) -> str:
    """A label to name a new backup file `<label>-YYYYMMDD-HHMMSS.dump`; returned unchanged."""
    what = BACKUP_LABEL
    _check_characters(label, what, MAX_LABEL_CHARS)
    if "/" in label or "\\" in label or ".." in label:
        _refuse(what, NameProblem.TRAVERSAL, "must be a name, not a path; refused.")
    if not _LABEL.fullmatch(label):
        _refuse(
            what,
            NameProblem.CHARACTERS,
            "may hold only ASCII letters, digits, '.', '_' and '-', and must start with a "
            "letter or a digit.",
        )
    if _LABEL_STAMP.search(label):
        _refuse(
            what,
            NameProblem.STAMPED,
            "contains a date stamp (YYYYMMDD-HHMMSS); the bot adds the current one: give the "
            "label alone, e.g. pre-deployment.",
        )
    return label


def visible(text: str) -> str:
    """`text` with every control and invisible character shown as an escape (\\n, \\u202e)."""
    if text.isprintable():
        return text
    return "".join(
        repr(char)[1:-1] if _is_control(char) or _is_invisible(char) else char for char in text
    )
