"""Bolt listeners: ack, parse, call one service, answer. Authorization is listener middleware."""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from handlers.commands import CommandKind, parse_command
from handlers.ids import ActionId, parse_button_value
from handlers.messages.backups_list import backups_message, backups_text
from handlers.messages.decision_reply import decision_reply
from handlers.messages.errors import error_text, unexpected_error_text
from handlers.messages.run_list import history_message, status_message
from handlers.messages.text import as_dicts
from handlers.messages.usage import usage_message, usage_text
from handlers.runs import Rollbacks
from services import backups as catalogue
from services.approvals import (
    Decision,
    authorize_decision,
    authorize_requester,
    authorize_undo,
)
from services.bundle import Services
from services.errors import RollbackError

log = logging.getLogger(__name__)

Next = Callable[[], Awaitable[None]]
DECISIONS = {
    ActionId.APPROVE.value: Decision.APPROVE,
    ActionId.REJECT.value: Decision.REJECT,
    ActionId.CANCEL.value: Decision.CANCEL,
}


# ---------------------------------------------------------------- global middleware


class Redeliveries:
    """Drops a request Slack delivers again (same trigger_id): it was handled already."""

    def __init__(self, *, keep_seconds: float = 600.0, max_entries: int = 10_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._keep = keep_seconds
        self._max = max_entries

    def seen_before(self, key: str) -> bool:
        now = time.monotonic()
        while self._seen and (
            len(self._seen) > self._max or next(iter(self._seen.values())) < now - self._keep
        ):
            self._seen.popitem(last=False)
        if key in self._seen:
            return True
        self._seen[key] = now
        return False

    def middleware(self) -> Callable[..., Awaitable[BoltResponse | None]]:
        async def drop_redeliveries(
            body: dict[str, Any], request: AsyncBoltRequest, next: Next
        ) -> BoltResponse | None:
            trigger = body.get("trigger_id")
            if isinstance(trigger, str) and trigger and self.seen_before(trigger):
                retry = request.headers.get("x-slack-retry-num", ["?"])[0]
                log.info("dropped a redelivered request (trigger %s, retry %s)", trigger, retry)
                return BoltResponse(status=200, body="")
            await next()
            return None

        return drop_redeliveries


# ---------------------------------------------------------------- listener middleware


async def authorize_rollback_request(
    command: dict[str, Any], services: Services, rollbacks: Rollbacks, next: Next
) -> None:
    """Only the environment's requesters may ask for a rollback of it."""
    parsed = parse_command(command.get("text", ""))
    if (
        parsed.kind is CommandKind.ROLLBACK
        and parsed.environment is not None
        and parsed.environment in services.environments
    ):
        await authorize_requester(
            services,
            rollbacks.directory,
            environment=parsed.environment,
            user=command["user_id"],
        )
    await next()


async def authorize_decision_click(
    body: dict[str, Any],
    action: dict[str, Any],
    services: Services,
    rollbacks: Rollbacks,
    next: Next,
) -> None:
    """Approvers approve and reject (not their own request); requester or approvers cancel."""
    run_id, _ = parse_button_value(str(action.get("value", "")))
    run = await services.store.get(run_id)
    await authorize_decision(
        services,
        rollbacks.directory,
        run=run,
        user=body["user"]["id"],
        decision=DECISIONS[action["action_id"]],
    )
    await next()


# ---------------------------------------------------------------- listeners


async def _reply(respond: AsyncRespond, text: str, blocks: list[Any] | None = None) -> None:
    await respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)


async def handle_rollback_command(
    ack: AsyncAck,
    command: dict[str, Any],
    respond: AsyncRespond,
    services: Services,
    rollbacks: Rollbacks,
) -> None:
    await ack()
    work = _rollback_command(command, respond, services, rollbacks)
    _after_ack(rollbacks, command, respond, work)


async def _rollback_command(
    command: dict[str, Any], respond: AsyncRespond, services: Services, rollbacks: Rollbacks
) -> None:
    parsed = parse_command(command.get("text", ""))
    now = datetime.now(UTC)
    if parsed.kind is CommandKind.ROLLBACK:
        assert parsed.environment is not None
        await rollbacks.request(
            environment=parsed.environment,
            backup=parsed.backup,
            user=command["user_id"],
            channel=command["channel_id"],
        )
    elif parsed.kind is CommandKind.BACKUPS:
        assert parsed.environment is not None
        environment = services.environment(parsed.environment)
        found = await catalogue.list_backups(environment)
        blocks = backups_message(environment.name, found, now=now)
        await _reply(respond, backups_text(environment.name, len(found)), as_dicts(blocks))
    elif parsed.kind is CommandKind.STATUS:
        runs = [
            r for r in await services.store.active_runs() if r.environment in services.environments
        ]
        if parsed.environment is not None:
            services.environment(parsed.environment)
            runs = [r for r in runs if r.environment == parsed.environment]
        blocks = status_message(runs, environment=parsed.environment, now=now)
        await _reply(respond, f"{len(runs)} rollback(s) in progress", as_dicts(blocks))
    elif parsed.kind is CommandKind.HISTORY:
        assert parsed.environment is not None
        environment = services.environment(parsed.environment)
        runs = await services.store.recent_runs(environment.name)
        blocks = history_message(environment.name, runs, now=now)
        await _reply(respond, f"Last rollbacks of {environment.name}", as_dicts(blocks))
    else:
        problem = parsed.problem if parsed.kind is CommandKind.USAGE else None
        blocks = usage_message(problem, sorted(services.environments))
        await _reply(respond, usage_text(problem), as_dicts(blocks))


async def handle_decision_button(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    rollbacks: Rollbacks,
) -> None:
    await ack()
    _after_ack(rollbacks, body, respond, _decision(body, action, respond, rollbacks))


async def _decision(
    body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, rollbacks: Rollbacks
) -> None:
    run_id, seen_plan_hash = parse_button_value(str(action.get("value", "")))
    outcome = await rollbacks.decide(
        run_id=run_id,
        user=body["user"]["id"],
        decision=DECISIONS[action["action_id"]],
        seen_plan_hash=seen_plan_hash,
    )
    await _reply(respond, decision_reply(outcome))


async def handle_checklist(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    rollbacks: Rollbacks,
) -> None:
    await ack()
    work = rollbacks.tick(
        channel=body["container"]["channel_id"],
        ts=body["container"]["message_ts"],
        user=body["user"]["id"],
        ticked=[str(o.get("value")) for o in action.get("selected_options") or []],
    )
    _after_ack(rollbacks, body, respond, work)


def _after_ack(
    rollbacks: Rollbacks,
    body: dict[str, Any],
    respond: AsyncRespond,
    work: Coroutine[Any, Any, Any],
) -> None:
    """Run the work after the ack, its errors answered like any other.

    Not in Bolt's own listener task: a listener that fails within ~10 ms of its ack makes
    Bolt (1.30) forget the ack and answer Slack 404, so the work runs as a task of ours
    (referenced, waited for at shut-down) and its errors go to `report_error`.
    """

    async def run() -> None:
        try:
            await work
        except Exception as error:
            await report_error(error, body, respond)

    rollbacks.tasks.spawn(run(), name="after-ack")


async def report_error(
    error: Exception, body: dict[str, Any], respond: AsyncRespond | None
) -> None:
    """Known errors: an ephemeral explanation. Anything else: a reference, and the traceback
    in the log under the same reference."""
    if isinstance(error, RollbackError):
        log.info("refused: %s", error)
        text = error_text(error)
    else:
        reference = secrets.token_hex(4)
        log.error("unexpected error %s", reference, exc_info=error)
        text = unexpected_error_text(reference)
    if respond is not None and body.get("response_url"):
        try:
            await _reply(respond, text)
        except Exception:
            log.exception("could not tell the user about an error")


async def handle_error(
    error: Exception,
    body: dict[str, Any],
    respond: AsyncRespond | None,
    response: BoltResponse | None,
) -> BoltResponse | None:
    """The app's one error handler (middleware refusals, anything Bolt catches)."""
    await report_error(error, body, respond)
    # A refusal in listener middleware comes before the ack: answer 200, not 500.
    return BoltResponse(status=200, body="") if response is not None else None


async def authorize_undo_click(
    body: dict[str, Any],
    action: dict[str, Any],
    services: Services,
    rollbacks: Rollbacks,
    next: Next,
) -> None:
    """Approvers of the environment may undo its rollback."""
    run = await services.store.get(str(action.get("value", "")))
    await authorize_undo(services, rollbacks.directory, run=run, user=body["user"]["id"])
    await next()


async def handle_undo_button(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    rollbacks: Rollbacks,
) -> None:
    await ack()
    work = rollbacks.undo(run_id=str(action.get("value", "")), user=body["user"]["id"])
    _after_ack(rollbacks, body, respond, work)


async def handle_recovery_button(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    rollbacks: Rollbacks,
) -> None:
    """Resume or Abort and restore, on a run that was interrupted and recovered."""
    await ack()
    run_id, user = str(action.get("value", "")), body["user"]["id"]
    if action["action_id"] == ActionId.RESUME.value:
        work = rollbacks.resume(run_id=run_id, user=user)
    else:
        work = rollbacks.abort(run_id=run_id, user=user)
    _after_ack(rollbacks, body, respond, work)


def register(app: AsyncApp) -> None:
    app.command("/rollback", middleware=[authorize_rollback_request])(handle_rollback_command)
    for action_id in (ActionId.APPROVE, ActionId.REJECT, ActionId.CANCEL):
        app.action(action_id.value, middleware=[authorize_decision_click])(handle_decision_button)
    app.action(ActionId.CHECKLIST.value)(handle_checklist)
    app.action(ActionId.UNDO.value, middleware=[authorize_undo_click])(handle_undo_button)
    for action_id in (ActionId.RESUME, ActionId.ABORT):
        app.action(action_id.value, middleware=[authorize_undo_click])(handle_recovery_button)
    app.error(handle_error)
