"""How the containers are treated while the database is replaced, and what the application
sees of it: the words the plan shows before anyone approves."""

from __future__ import annotations

from services.environments import CutoverMode, Strategy, mode_problem


def effective_mode(configured: CutoverMode, strategy: Strategy) -> tuple[CutoverMode, str]:
    """The mode a run uses with the strategy that will actually run, and why when that is
    not the configured one (a swap that falls back to in-place cannot keep the app running)."""
    if mode_problem(strategy, configured) is None:
        return configured, ""
    return CutoverMode.STOP, (
        f"stop instead of {configured.value}: the rollback runs in place, where a running "
        "application would write into the database being restored"
    )


def application_sees(strategy: Strategy, mode: CutoverMode, stop_timeout: float) -> str:
    """One sentence for the plan: what the application and its clients go through."""
    swap = strategy is Strategy.SWAP
    window = "the cut-over" if swap else "the safety backup and the whole restore"
    reconnect = "its database sessions are ended, so it must reconnect (a connection pool does)"
    if mode is CutoverMode.PAUSE:
        how_long = (
            "requests wait about a tenth of a second and are answered after"
            if swap
            else "requests wait that long (those past their client's timeout fail)"
        )
        return f"frozen (docker pause) during {window}, no boot: {how_long}; {reconnect}"
    if mode is CutoverMode.KEEP:
        return (
            "keeps running: at the rename new connections are refused for milliseconds and "
            f"queries in flight fail; {reconnect}, then it reads the backup's data"
        )
    return (
        f"stopped (SIGTERM, SIGKILL after {stop_timeout:g} s) during {window}, started "
        "after: unreachable from the stop until it has booted again"
    )
