"""Messages are pure functions of plain values, always within Block Kit's limits (issue #3)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from pydantic import SecretStr
from slack_sdk.models.blocks import Block

from handlers.commands import CommandKind, parse_command
from handlers.messages.backups_list import backups_message
from handlers.messages.incident_report import incident_report
from handlers.messages.run_message import run_message
from handlers.messages.step_detail import step_failure
from handlers.messages.text import as_dicts, escape, join_limited, truncate
from sandbox.slack import validate_blocks
from services.backups import Backup
from services.checklist import BOT, ChecklistItem, Tick
from services.cutover_modes import application_sees
from services.environments import ApprovalPolicy, CutoverMode, Environment, Strategy
from services.events import EventKind, Step, StepEvent
from services.run_store import ApprovalRecord, RunRecord, RunStatus
from services.run_view import RunView, StepState, StepStatus, TableRows, TimelineEntry
from tests import hostile
from tests.hostile import HOSTILE, strings

NOW = datetime(2024, 12, 3, 15, 0, tzinfo=UTC)
ENV = Environment(
    name="production",
    compose_project="production",
    database_url=SecretStr("postgresql://app:secret@db/app"),
    database_display="postgresql://app:***@db/app",
    backups_dir=Path("/srv/backups"),
    approval=ApprovalPolicy(approvers=("S0ONCALL",), required_approvals=2),
)


def make_view(
    *,
    status: RunStatus = RunStatus.AWAITING_APPROVAL,
    containers: int = 2,
    error: str | None = None,
    health: int = 2,
    timeline: int = 5,
) -> RunView:
    plan: dict[str, Any] = {
        "environment": "production",
        "database": "postgresql://app:***@db/app",
        "backup": "pre-deployment-20241203-120000.dump",
        "backup_size_bytes": 12_345_678,
        "backup_created_at": "2024-12-03T12:00:00+00:00",
        "tables_in_backup": 3,
        "containers": [f"production-service-{i}-1" for i in range(containers)],
        "safety_backup": "pre-rollback-20241203-150000.dump",
        "strategy": "in-place",
        "plan_hash": "0123456789abcdef",
    }
    finished = status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
    result = (
        {
            "ok": error is None,
            "error": error,
            "environment_state": "production is running on the backup; health checks pass",
            "safety_backup": "/srv/backups/pre-rollback-20241203-150000.dump",
            "downtime_seconds": 4.2,
            "health": [
                {"name": f"check-{i}", "ok": i % 2 == 0, "detail": "HTTP 200" * 50, "latency": 0.01}
                for i in range(health)
            ],
        }
        if finished
        else None
    )
    run = RunRecord(
        id="rb-0000beef",
        environment="production",
        kind="database",
        status=status,
        requested_by="U0ALICE",
        requested_at=NOW - timedelta(minutes=3),
        started_at=NOW - timedelta(minutes=1) if finished else None,
        finished_at=NOW if finished else None,
        backup_name=plan["backup"],
        current_step=None,
        plan=plan,
        result=result,
    )
    steps = tuple(
        StepState(
            s,
            StepStatus.FAILED if error and s is Step.RESTORE else StepStatus.DONE,
            1.5,
            error if error and s is Step.RESTORE else "ok",
        )
        for s in (Step.STOP, Step.SAFETY_BACKUP, Step.RESTORE, Step.START, Step.HEALTH)
    )
    return RunView(
        run=run,
        environment=ENV,
        approvals=(ApprovalRecord(run.id, "U0BOB", "approve", "0123456789abcdef", NOW),),
        stale_approvals=(ApprovalRecord(run.id, "U0ERIN", "approve", "old", NOW),),
        rejections=(),
        checklist={
            **dict.fromkeys(ChecklistItem),
            ChecklistItem.PROCEDURE_SELECTED: Tick(BOT, NOW),
            ChecklistItem.ASSESSED: Tick("U0ERIN", NOW),
        },
        steps=steps,
        plan_changes=("backup a.dump was replaced by b.dump",),
        timeline=tuple(
            TimelineEntry(NOW, f"event {i} " + "x" * 80, "U0BOB") for i in range(timeline)
        ),
        expires_at=NOW + timedelta(minutes=27),
        escalates_at=None,
        closed_by=None,
    )


def valid(blocks: list[Block]) -> list[dict[str, Any]]:
    wire = as_dicts(blocks)  # slack_sdk's own validators
    validate_blocks(wire)  # and Slack's limits as the sandbox checks them
    return wire


def test_plan_message_reads_as_expected() -> None:
    wire = valid(run_message(make_view(), now=NOW))
    assert [b["block_id"] for b in wire] == [
        "rollback.header",
        "rollback.plan",
        "rollback.containers",
        "rollback.notes",
        "rollback.approvals",
        "rollback.checklist",
        "rollback.checklist.ticks",
        "rollback.decision",
        "rollback.footer",
    ]
    assert wire[0]["text"]["text"] == "Rollback of production: awaiting approval"
    assert wire[2]["text"]["text"] == (
        "*Containers that will stop (2):* production-service-0-1, production-service-1-1"
    )
    assert wire[4]["text"]["text"] == (
        "*Approvals:* 1 of 2 — <@U0BOB> (2024-12-03 15:00 UTC)\n"
        "Given to an earlier plan, no longer counting: <@U0ERIN>\n"
        "Approvers: <!subteam^S0ONCALL> · expires 2024-12-03 15:27 UTC"
    )
    assert "*3 h 0 min* of data" in wire[1]["text"]["text"]
    buttons = wire[7]["elements"]
    assert [b["text"]["text"] for b in buttons] == ["Approve", "Reject", "Cancel"]
    assert {b["value"] for b in buttons} == {"rb-0000beef:0123456789abcdef"}
    assert all("confirm" in b for b in buttons)
    ticks = wire[6]["elements"][0]
    assert [o["value"] for o in ticks["options"]] == [
        "assessed",
        "monitoring",
        "root_cause",
        "documentation",
    ]
    assert [o["value"] for o in ticks["initial_options"]] == ["assessed"]


def test_sixty_containers_and_a_huge_error_stay_within_limits() -> None:
    error = "E" * 10_000 + " <!channel> & `ticks`"
    view = make_view(status=RunStatus.FAILED, containers=60, error=error, health=60, timeline=400)
    wire = valid(run_message(view, now=NOW))
    assert len(wire) <= 50
    text = str(wire)
    assert "and 0 more" not in text and "… and" in text  # containers cut, and said so
    assert "<!channel>" not in text  # escaped, never a mention
    report = valid(incident_report(view))
    assert len(report) <= 50
    failure = valid(step_failure(StepEvent("rb-1", Step.RESTORE, EventKind.FAILED, error * 3, 1.0)))
    assert len(failure) <= 6


@pytest.mark.parametrize("status", list(RunStatus))
def test_every_state_renders(status: RunStatus) -> None:
    valid(run_message(make_view(status=status), now=NOW))


def test_join_limited_and_truncate() -> None:
    assert truncate("abcdef", 4) == "abc…"
    lines = [f"line {i}" for i in range(100)]
    joined = join_limited(lines, 60)
    assert len(joined) <= 60 and joined.endswith("more")
    assert join_limited(["a", "b"], 10) == "a\nb"
    assert len(join_limited(["x" * 500], 100)) == 100


@pytest.mark.parametrize(
    ("text", "kind", "environment", "backup"),
    [
        ("production", CommandKind.ROLLBACK, "production", None),
        ("production backups/x.dump", CommandKind.ROLLBACK, "production", "backups/x.dump"),
        ("backups staging", CommandKind.BACKUPS, "staging", None),
        ("status", CommandKind.STATUS, None, None),
        ("status production", CommandKind.STATUS, "production", None),
        ("history production", CommandKind.HISTORY, "production", None),
        ("help", CommandKind.HELP, None, None),
        ("", CommandKind.USAGE, None, None),
        ("backups", CommandKind.USAGE, None, None),
        ("a b c", CommandKind.USAGE, None, None),
    ],
)
def test_parse_command(
    text: str, kind: CommandKind, environment: str | None, backup: str | None
) -> None:
    parsed = parse_command(text)
    assert (parsed.kind, parsed.environment, parsed.backup) == (kind, environment, backup)


HOSTILE_NAME = "x\n*Rollback SUCCEEDED* <!channel> <@U0MALLORY> &\u202e\x1b[2K.dump"


def assert_inert(texts: list[str]) -> None:
    """Nothing from the name draws a line, a mention, a link or moves a cursor."""
    for text in texts:
        assert "\n*Rollback SUCCEEDED*" not in text
        assert "<!channel>" not in text and "<@U0MALLORY>" not in text
        assert "\x1b" not in text and "\u202e" not in text


def test_a_hostile_backup_name_is_shown_inert_in_the_plan_and_the_list() -> None:
    """issue 8: a newline in a name printed a fake "Rollback SUCCEEDED" line."""
    view = make_view()
    view.plan["backup"] = HOSTILE_NAME
    wire = valid(run_message(view, now=NOW))
    texts = list(strings(wire))
    assert_inert(texts)
    assert any("x\\n*Rollback SUCCEEDED* &lt;!channel&gt;" in t for t in texts)
    backup = Backup(HOSTILE_NAME, Path("/srv/backups/x"), 10, NOW - timedelta(hours=1))
    listed = valid(backups_message("production", [backup], now=NOW))
    assert_inert(list(strings(listed)))


def test_future_and_own_backups_are_flagged() -> None:
    """issue 8: a future-dated backup showed as "0 s ago"."""
    view = make_view()
    view.plan["backup_created_at"] = "2099-01-01T00:00:00+00:00"
    view.plan["backup_notes"] = ["dated in the future: check the clock or the name's time zone"]
    text = json.dumps(valid(run_message(view, now=NOW)), ensure_ascii=False)
    assert "⚠️ dated in the future" in text and "0 s" not in text
    future = Backup("a-20990101-000000.dump", Path("/b/a"), 10, datetime(2099, 1, 1, tzinfo=UTC))
    own = Backup(
        "pre-rollback-20241203-140000.dump", Path("/b/p"), 10, NOW - timedelta(hours=1), own=True
    )
    listed = json.dumps(
        valid(backups_message("production", [future, own], now=NOW)), ensure_ascii=False
    )
    assert "⚠️ dated in the future" in listed
    assert "1 h 0 min old · the bot's own safety dump: used only when named" in listed


@settings(HOSTILE, max_examples=200)
@given(hostile.anything)
def test_escape_keeps_any_text_on_one_inert_line(text: str) -> None:
    shown = escape(text)
    assert "<" not in shown and ">" not in shown and shown.isprintable()


def test_data_loss_preview_marks_estimates() -> None:
    """issue 8: rows estimated from the planner's statistics are marked as such."""
    view = dataclasses.replace(
        make_view(),
        data_loss=(
            TableRows("public.events", 9_000_000, 8_500_000, estimated=True),
            TableRows("public.orders", 120, 100),
        ),
    )
    wire = valid(run_message(view, now=NOW))
    (section,) = [b for b in wire if b["block_id"] == "rollback.data_loss"]
    text = section["text"]["text"]
    assert "public.events" in text and "-500,000 ≈" in text
    assert "-20 ≈" not in text and "-20" in text
    assert "≈ an estimate from the planner's statistics" in text


@pytest.mark.parametrize(
    ("mode", "head", "field", "approving"),
    [
        (
            CutoverMode.PAUSE,
            "Containers that will be paused (2)",
            "*Containers to pause*\n2",
            "This pauses production, replaces its database with",
        ),
        (
            CutoverMode.KEEP,
            "Containers kept running (2)",
            "*Containers to keep running*\n2",
            "This replaces the database of production with",
        ),
    ],
)
def test_plan_message_says_the_cut_over_mode_and_what_the_application_sees(
    mode: CutoverMode, head: str, field: str, approving: str
) -> None:
    """Issue 10: approvers read what the containers go through and what the app will see."""
    view = make_view()
    sees = application_sees(Strategy.SWAP, mode, 10)
    plan = {**view.plan, "strategy": "swap", "cutover_mode": mode.value, "application_sees": sees}
    view = dataclasses.replace(view, run=dataclasses.replace(view.run, plan=plan))
    wire = valid(run_message(view, now=NOW))
    assert wire[2]["text"]["text"] == (
        f"*{head}:* production-service-0-1, production-service-1-1\n"
        f"*What the application sees:* {sees}"
    )
    assert field in [f["text"] for f in wire[1]["fields"]]
    assert wire[7]["elements"][0]["confirm"]["text"]["text"].startswith(approving)
