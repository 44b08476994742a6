"""Issue 9: log excerpts and monitoring lines as people read them, whatever the logs hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from handlers.messages.log_excerpt import log_excerpt_blocks
from handlers.messages.monitoring import monitoring_reply
from handlers.messages.text import MAX_SECTION_TEXT
from services.log_excerpts import LOG_BYTES, LogExcerpt, bounded_lines
from services.monitor_events import MonitorKind, Outcome, monitoring_state, report_line
from services.monitoring import MonitorEvent, Watch
from services.run_store import EventRecord
from services.scrub import Scrubber

SCRUBBER = Scrubber(["hunter2-password", "sk_live_abcdef"])


def test_log_lines_are_scrubbed_escaped_and_bounded() -> None:
    raw = "\n".join(
        [
            *(f"line {i} " + "x" * 200 for i in range(60)),
            "password hunter2-password, key sk_live_abcdef, token xoxb-99-abcdefgh",
            "dsn postgres://app:p4ss@db/app \x1b[31mred\x1b[0m \u202eevil\r",
        ]
    )
    text, left_out = bounded_lines(raw, SCRUBBER)

    assert len(text.encode()) <= LOG_BYTES and left_out > 0
    last = text.split("\n")
    assert last[-2] == "password ***, key ***, token ***"
    assert last[-1] == "dsn postgres://app:***@db/app \\x1b[31mred\\x1b[0m \\u202eevil"
    for secret in ("hunter2", "sk_live", "xoxb-99", "p4ss"):
        assert secret not in text


def test_one_huge_line_is_cut_at_the_bound() -> None:
    text, _ = bounded_lines("é" * 10_000, SCRUBBER)
    assert len(text.encode()) <= LOG_BYTES and text.endswith("…")


def test_an_excerpt_cannot_break_out_of_its_code_block() -> None:
    hostile = "\n".join(
        ["z" * 150] * 80
        + ["```", "*bold* <!channel> <@U0ALICE> <https://evil.example|click> & done", "`````"]
    )
    blocks = [
        b.to_dict()
        for b in log_excerpt_blocks([LogExcerpt("app-web-1", hostile)], title="Last lines:")
    ]

    texts = [str(b["text"]["text"]) for b in blocks]  # type: ignore[index]
    assert all(len(t) <= MAX_SECTION_TEXT for t in texts)
    for code_block in texts[2:]:
        assert code_block.startswith("```") and code_block.endswith("```")
        assert "`" not in code_block[3:-3]  # no fence inside
    sent = json.dumps(texts)
    assert "<!channel>" not in sent and "<@U0ALICE>" not in sent and "<https" not in sent
    assert "&lt;!channel&gt;" in sent and "&amp; done" in sent
    assert "zzz" in texts[2] and "older left out" in texts[1]  # the newest are kept


def _event(kind: MonitorKind, at: datetime, **detail: object) -> EventRecord:
    return EventRecord("rb-1", at, kind.value, None, None, dict(detail))


def test_the_report_line_of_a_window_degraded_twice() -> None:
    start = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    failed = [{"name": "web", "detail": "HTTP 502, expected 200"}]
    events = [
        _event(
            MonitorKind.STARTED,
            start,
            started_at=start.isoformat(),
            until=(start + timedelta(minutes=10)).isoformat(),
            interval_seconds=30,
        ),
        _event(MonitorKind.DEGRADED, start + timedelta(minutes=3), failed=failed),
        _event(MonitorKind.RECOVERED, start + timedelta(minutes=3, seconds=40), seconds=40),
        _event(MonitorKind.DEGRADED, start + timedelta(minutes=7), failed=failed),
    ]
    state = monitoring_state(events)
    assert state is not None and state.degraded is not None
    end = start + timedelta(minutes=10)

    line = report_line(state, end=end, outcome=Outcome.DEGRADED)

    assert line == (
        "Monitoring 10 min: degraded 2 times, first at 12:03 UTC (web: HTTP 502, expected "
        "200), 3 min 40 s in all; still failing at the end"
    )


def test_the_end_line_cannot_mention_anyone_in_blocks_or_fallback() -> None:
    """The line carries a probe's error text: `<!channel>` in it stays text in both places
    Slack reads as markup (the blocks and the notification's fallback)."""
    start = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    watch = Watch("rb-1", "production", start, start + timedelta(minutes=10), 30)
    line = "Monitoring 10 min: degraded at 12:03 UTC (web: <!channel> & <@U0EVE>)"

    reply = monitoring_reply(MonitorEvent(watch, MonitorKind.ENDED, line=line))

    assert reply is not None
    blocks, fallback = reply
    shown = json.dumps([block.to_dict() for block in blocks])
    for text in (shown, fallback):
        assert "<!channel>" not in text and "<@U0EVE>" not in text
        assert "&lt;!channel&gt; &amp; &lt;@U0EVE&gt;" in text
