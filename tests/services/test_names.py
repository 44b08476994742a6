"""The name rules (services/names.py) over hostile inputs (issue 8)."""

from __future__ import annotations

import os.path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services import names
from services.errors import BackupError, InvalidName
from services.names import NameProblem
from tests import hostile
from tests.hostile import HOSTILE


@settings(HOSTILE, max_examples=400)
@given(hostile.anything)
def test_a_backup_name_is_refused_or_stays_one_file_in_the_folder(requested: str) -> None:
    """issue 8: whatever the input, the file name looked up cannot leave the folder."""
    try:
        file_name = names.backup_file_name(requested, "backups")
    except InvalidName as error:
        assert isinstance(error, BackupError)
        message = str(error)
        assert message.startswith("The backup name ") and "\n" not in message
        assert len(message) < 300 and message.isprintable()
        hostile.tried(touched=False)
        return
    hostile.tried(touched=False)
    assert file_name and file_name not in (".", "..")
    assert "/" not in file_name and "\\" not in file_name and "\x00" not in file_name
    assert file_name.isprintable() and len(file_name.encode()) <= 255
    folder = "/srv/backups"
    assert os.path.dirname(os.path.normpath(os.path.join(folder, file_name))) == folder


@settings(HOSTILE, max_examples=300)
@given(st.one_of(hostile.nul, hostile.control, hostile.invisible, hostile.too_long))
def test_nul_control_invisible_and_long_names_are_always_refused(requested: str) -> None:
    """issue 8: no trailing newline stripped, no 256-byte name reaching the file system."""
    with pytest.raises(InvalidName) as raised:
        names.backup_file_name(requested, "backups")
    assert raised.value.problem in {
        NameProblem.NUL,
        NameProblem.CONTROL,
        NameProblem.INVISIBLE,
        NameProblem.TOO_LONG,
    }
    hostile.tried(touched=False)


@pytest.mark.parametrize("requested", hostile.TRAVERSALS)
def test_every_traversal_form_is_refused(requested: str) -> None:
    """issue 8: ../, absolute, backslash, percent-encoded and look-alike forms."""
    with pytest.raises(InvalidName):
        names.backup_file_name(requested, "backups")
    hostile.tried(touched=False)


@pytest.mark.parametrize(
    ("requested", "problem", "words"),
    [
        ("", NameProblem.EMPTY, "is empty"),
        ("a" * 256, NameProblem.TOO_LONG, "256 bytes in one file name (at most 255)"),
        ("x" * 5000, NameProblem.TOO_LONG, "5,000 characters"),
        ("x\x00.dump", NameProblem.NUL, "NUL byte (character 2)"),
        ("x.dump\n", NameProblem.CONTROL, "U+000A (line feed), at character 7"),
        ("x\rRollback SUCCEEDED", NameProblem.CONTROL, "U+000D (carriage return)"),
        ("x\u202eprod.dump", NameProblem.INVISIBLE, "U+202E (right-to-left override)"),
        ("../x.dump", NameProblem.TRAVERSAL, "outside the backups folder"),
        ("/etc/passwd", NameProblem.ABSOLUTE, "outside the backups folder"),
        ("..\\x.dump", NameProblem.BACKSLASH, "backslash"),
        ("%2e%2e%2fx.dump", NameProblem.ENCODED, "percent-encoding (%2e)"),
        ("\uff0e\uff0e\uff0fx", NameProblem.LOOKALIKE, "U+FF0E (fullwidth full stop)"),
        ("x\u2215y.dump", NameProblem.LOOKALIKE, "U+2215 (division slash)"),
        ("other/x.dump", NameProblem.SUB_FOLDER, "sub-folder"),
    ],
)
def test_each_problem_has_its_own_message(requested: str, problem: str, words: str) -> None:
    with pytest.raises(InvalidName) as raised:
        names.backup_file_name(requested, "backups")
    assert raised.value.problem == problem
    assert raised.value.what == "backup name"
    assert words in str(raised.value)


@pytest.mark.parametrize(
    "requested",
    ["pre-deployment-20241203-120000.dump", "backups/nightly.dump", "données-été.dump", "a..b"],
)
def test_ordinary_names_pass(requested: str) -> None:
    assert names.backup_file_name(requested, "backups") == requested.removeprefix("backups/")


def test_environment_names_and_command_text() -> None:
    assert names.check_environment_name("production") == "production"
    with pytest.raises(InvalidName, match="environment name contains a control character"):
        names.check_environment_name("prod\n")
    with pytest.raises(InvalidName, match="command is too long: 5,000 characters"):
        names.check_command_text("x" * 5000)
    names.check_command_text("   ")  # nothing typed: the usage answers it


@settings(HOSTILE, max_examples=300)
@given(st.text(max_size=200))
def test_visible_leaves_no_control_or_invisible_character(text: str) -> None:
    shown = names.visible(text)
    assert shown.isprintable()
    assert shown == text or "\\" in shown
