"""Hostile inputs for the property-based tests (issue 8), and the tally the run reports.

Every family the issue names: traversal in every encoding, NUL, control characters
(trailing newline, CR, terminal escapes), invisible characters, 256+ bytes and 5,000
characters, look-alikes, markup that would be a mention in Slack, and arbitrary unicode.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Reproducible in CI: no example database, derandomized, no per-example deadline.
HOSTILE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

TALLY: Counter[str] = Counter()


def tried(touched: bool) -> None:
    """Count one hostile input; `touched`: it reached anything it should not have."""
    TALLY["tried"] += 1
    TALLY["touched"] += int(touched)


_SAFE = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=0, max_size=12)

TRAVERSALS = (
    "../x.dump",
    "../../etc/passwd",
    "/etc/passwd",
    "/tmp/x.dump",
    "backups/../../x.dump",
    "..",
    ".",
    "a/../../b.dump",
    "./x.dump",
    "..\\x.dump",
    "C:\\x.dump",
    "x\\..\\..\\y",
    "%2e%2e%2fx.dump",
    "%2E%2E/x.dump",
    "..%2fx.dump",
    "%252e%252e%252f",
    "x%00.dump",
    "\uff0e\uff0e\uff0fx.dump",  # fullwidth dots and solidus
    "\u2024\u2024/x.dump",  # one-dot leaders
    "\u2025/x.dump",  # two-dot leader
    "x\u2215y.dump",  # division slash
    "x\u2044y.dump",  # fraction slash
    "\ufe52\ufe52/x.dump",  # small full stops
    "x\uff3cy.dump",  # fullwidth reverse solidus
    "x\u3002dump",  # ideographic full stop
    "x\uff05\uff12\uff45",  # fullwidth percent
    "backups//x.dump",
    "x.dump/",
    "a/b/c.dump",
    "elsewhere/x.dump",
)
CONTROLS = (
    "\n",
    "\r",
    "\r\n",
    "\t",
    "\x1b[2K",
    "\x1b[1A",
    "\x07",
    "\x7f",
    "\x85",
    "\x9b",
    "\nRollback SUCCEEDED (run 1234)",
)
INVISIBLES = ("\u202e", "\u200b", "\u2028", "\u2029", "\xa0", "\ufeff", "\u2066", "\ue000")
MARKUP = ("<!channel>", "<@U0BOB>", "<!subteam^S0ONCALL>", "&lt;", "<https://evil|ok>", "*x*")


@st.composite
def _wrapped(draw: Any, middle: st.SearchStrategy[str]) -> str:
    return draw(_SAFE) + draw(middle) + draw(_SAFE)


traversal = st.one_of(
    st.sampled_from(TRAVERSALS),
    _wrapped(st.sampled_from(TRAVERSALS)),
)
nul = _wrapped(st.just("\x00"))
control = st.one_of(
    _wrapped(st.sampled_from(CONTROLS)),
    _SAFE.filter(bool).map(lambda s: s + ".dump\n"),  # a trailing newline is not stripped
    _wrapped(st.characters(categories=["Cc"], exclude_characters="\x00")),
)
invisible = _wrapped(st.sampled_from(INVISIBLES))
too_long = st.one_of(
    st.integers(256, 5000).map(lambda n: "a" * n),
    st.integers(129, 2500).map(lambda n: "é" * n),  # 256+ bytes in fewer characters
    st.integers(86, 300).map(lambda n: "漢" * n + ".dump"),
    st.just("x" * 5000),
)
# Not refused by the name rules (they are ordinary characters), but must be shown inert.
markup = _wrapped(st.sampled_from(MARKUP)).map(lambda s: s + ".dump")

# Every family refused by the name rules.
refused = st.one_of(traversal, nul, control, invisible, too_long)
# Anything at all, for "never raises, always a clear answer".
anything = st.one_of(refused, markup, st.text(max_size=300))


def strings(value: object) -> Iterator[str]:
    """Every string inside a JSON-like value (what the emulator received)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings(item)


def raw_control(text: str) -> bool:
    """A control character other than a line break (which our own messages use)."""
    return any(unicodedata.category(c) == "Cc" and c != "\n" for c in text)
