"""Which run, environment and step the current task works on, for every log line it writes.

Services set it where a run executes; bot/logs.py reads it. Context variables follow each
asyncio task, so concurrent runs never see each other's values. No logging set-up here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from contextvars import ContextVar, Token

_run_id: ContextVar[str | None] = ContextVar("rollback_run_id", default=None)
_environment: ContextVar[str | None] = ContextVar("rollback_environment", default=None)
_step: ContextVar[str | None] = ContextVar("rollback_step", default=None)


def current() -> dict[str, str]:
    """The run's fields for a log line: run_id, environment, step (those that are set)."""
    found = {"run_id": _run_id.get(), "environment": _environment.get(), "step": _step.get()}
    return {key: value for key, value in found.items() if value is not None}


class RunScope(AbstractContextManager[None], AbstractAsyncContextManager[None]):
    """Lines written inside carry the run's id and environment; the previous values come
    back on exit (usable in `with` and in `async with`, beside a lease)."""

    def __init__(self, run_id: str, environment: str) -> None:
        self.values = (run_id, environment)
        self.tokens: tuple[Token[str | None], ...] = ()

    def __enter__(self) -> None:
        run_id, environment = self.values
        self.tokens = (_run_id.set(run_id), _environment.set(environment), _step.set(None))

    def __exit__(self, *exc_info: object) -> None:
        for var, token in zip((_run_id, _environment, _step), self.tokens, strict=True):
            var.reset(token)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__()


def run_scope(run_id: str, environment: str) -> RunScope:
    return RunScope(run_id, environment)


@contextmanager
def step_scope(step: str) -> Iterator[None]:
    """Lines written inside carry the step's name."""
    token = _step.set(step)
    try:
        yield
    finally:
        _step.reset(token)
