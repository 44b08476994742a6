"""Bolt listeners: ack, parse, call one service, answer. Authorization is one middleware:
every slash sub-command and action_id is looked up in the permission table."""

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
from handlers.messages.decision_reply import cancel_reply, decision_reply
from handlers.messages.errors import error_text, unexpected_error_text
from handlers.messages.gate_reply import gate_reply
from handlers.messages.run_list import history_message, status_message
from handlers.messages.text import as_dicts
from handlers.messages.usage import usage_message, usage_text
from handlers.runs import Rollbacks
from services import approvals, provenance
from services.approvals import Decision
from services.bundle import Services
from services.errors import RollbackError, RunNotFound
from services.permissions import Action, Actor, authorize
from services.run_store import RunKind, RunRecord

log = logging.getLogger(__name__)

Next = Callable[[], Awaitable[None]]
DECISIONS = {
    ActionId.APPROVE.value: Decision.APPROVE,
    ActionId.REJECT.value: Decision.REJECT,
    ActionId.CANCEL.value: Decision.CANCEL,
}
# What each request asks to do, in the permission table's words.
COMMAND_ACTIONS = {
    CommandKind.ROLLBACK: Action.REQUEST,
    CommandKind.CODE: Action.REQUEST,
    CommandKind.FULL: Action.REQUEST,
    CommandKind.CANCEL: Action.CANCEL,
    CommandKind.BACKUPS: Action.BACKUPS,
    CommandKind.STATUS: Action.STATUS,
    CommandKind.HISTORY: Action.HISTORY,
    CommandKind.HELP: Action.HELP,
    CommandKind.USAGE: Action.HELP,  # answered with the usage
}
BUTTON_ACTIONS = {
    ActionId.APPROVE.value: Action.APPROVE,
    ActionId.REJECT.value: Action.REJECT,
    ActionId.CANCEL.value: Action.CANCEL,
    ActionId.CHECKLIST.value: Action.TICK,
    ActionId.UNDO.value: Action.UNDO,
    ActionId.RESUME.value: Action.RESUME,
    ActionId.ABORT.value: Action.ABORT,
    ActionId.RETRY_CODE.value: Action.RETRY_CODE,
    ActionId.UNDO_DATABASE.value: Action.UNDO_DATABASE,
}
COMMAND = "/rollback"
RUN_KINDS = {
    CommandKind.ROLLBACK: RunKind.DATABASE,
    CommandKind.CODE: RunKind.CODE,
    CommandKind.FULL: RunKind.FULL,
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


# ---------------------------------------------------------------- the permission check


async def authorize_request(
    body: dict[str, Any], services: Services, rollbacks: Rollbacks, next: Next
) -> None:
    """The one permission check for Slack: each request's action against the table.

    Anything not mapped (another command, an action_id the bot never sent, a payload type
    it does not handle) reaches `authorize` as an unknown action and is denied."""
    directory = rollbacks.directory
    if "command" in body:
        user = str(body.get("user_id", ""))
        parsed = parse_command(str(body.get("text", "")))
        action: Action | str = (
            COMMAND_ACTIONS[parsed.kind] if body["command"] == COMMAND else str(body["command"])
        )
        run = None
        if action is Action.CANCEL and parsed.environment is not None:
            run = await approvals.cancellable_run(services, parsed.environment)
        await authorize(
            services,
            directory,
            action=action,
            actor=Actor(user),
            environment=parsed.environment,
            run=run,
        )
    elif body.get("type") == "block_actions" and body.get("actions"):
        user = str((body.get("user") or {}).get("id", ""))
        for clicked in body["actions"]:
            action_id = str(clicked.get("action_id", ""))
            action = BUTTON_ACTIONS.get(action_id, action_id)
            known = isinstance(action, Action)
            run = await _clicked_run(body, clicked, services) if known else None
            await authorize(services, directory, action=action, actor=Actor(user), run=run)
    else:
        user = str((body.get("user") or {}).get("id", "") or body.get("user_id", ""))
        kind = str(body.get("type") or "unknown request")
        await authorize(services, directory, action=kind, actor=Actor(user))
    await next()


async def _clicked_run(
    body: dict[str, Any], clicked: dict[str, Any], services: Services
) -> RunRecord:
    """The run a click is about: the button's value, or the message's run (checkboxes)."""
    if clicked.get("action_id") == ActionId.CHECKLIST.value:
        container = body.get("container") or {}
        channel = str(container.get("channel_id", ""))
        ts = str(container.get("message_ts", ""))
        if not (_plain(channel) and _plain(ts)):
            raise RunNotFound("for this message")
        return await services.store.run_for_message(channel, ts)
    run_id, _ = parse_button_value(str(clicked.get("value", "")))
    if not _plain(run_id):
        raise RunNotFound("(the button carried no run ID)")
    return await services.store.get(run_id)


def _plain(identifier: str) -> bool:
    """Could this be an ID the bot or Slack made? (NUL and the like never reach the store.)"""
    return 0 < len(identifier) <= 64 and identifier.isascii() and identifier.isprintable()


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
    if parsed.kind in RUN_KINDS:
        assert parsed.environment is not None
        await rollbacks.request(
            environment=parsed.environment,
            backup=parsed.backup,
            user=command["user_id"],
            channel=command["channel_id"],
            kind=RUN_KINDS[parsed.kind],
            commit=parsed.commit,
        )
    elif parsed.kind is CommandKind.CANCEL:
        assert parsed.environment is not None
        run = await rollbacks.cancel(environment=parsed.environment, user=command["user_id"])
        await _reply(respond, cancel_reply(run))
    elif parsed.kind is CommandKind.BACKUPS:
        assert parsed.environment is not None
        environment = services.environment(parsed.environment)
        found = await provenance.list_with_provenance(environment)
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
        shown=_shown_ticks(body, action),
    )
    _after_ack(rollbacks, body, respond, work)


def _shown_ticks(body: dict[str, Any], action: dict[str, Any]) -> list[str] | None:
    """What the clicked view showed ticked (the checkboxes' `initial_options` in the message
    the click came from); None when the payload carries no message."""
    message = body.get("message")
    if not isinstance(message, dict):
        return None
    for block in message.get("blocks") or []:
        if block.get("block_id") != action.get("block_id"):
            continue
        for element in block.get("elements") or []:
            if element.get("action_id") == action.get("action_id"):
                return [str(o.get("value")) for o in element.get("initial_options") or []]
    return None


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


async def handle_undo_button(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    rollbacks: Rollbacks,
) -> None:
    await ack()
    _after_ack(rollbacks, body, respond, _undo(body, action, respond, rollbacks))


async def _undo(
    body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, rollbacks: Rollbacks
) -> None:
    run_id, _ = parse_button_value(str(action.get("value", "")))
    gate = await rollbacks.undo(run_id=run_id, user=body["user"]["id"])
    await _reply(respond, gate_reply(gate))


async def handle_recovery_button(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    rollbacks: Rollbacks,
) -> None:
    """Resume or Abort and restore, on a run that was interrupted and recovered."""
    await ack()
    _after_ack(rollbacks, body, respond, _recovery(body, action, respond, rollbacks))


async def _recovery(
    body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, rollbacks: Rollbacks
) -> None:
    """One approval; the click that completes the policy's approvals does it."""
    run_id, _ = parse_button_value(str(action.get("value", "")))
    user = body["user"]["id"]
    chosen = Action.RESUME if action["action_id"] == ActionId.RESUME.value else Action.ABORT
    gate = await rollbacks.approve(run_id=run_id, action=chosen, user=user)
    await _reply(respond, gate_reply(gate))
    if gate.go:
        act = rollbacks.resume if chosen is Action.RESUME else rollbacks.abort
        await act(run_id=run_id, user=user)


async def handle_follow_up_button(
    ack: AsyncAck,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    rollbacks: Rollbacks,
) -> None:
    """Retry code rollback or Undo database rollback, after a full rollback's code half
    failed; one approval, the click that completes the policy's approvals does it."""
    await ack()
    _after_ack(rollbacks, body, respond, _follow_up(body, action, respond, rollbacks))


async def _follow_up(
    body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, rollbacks: Rollbacks
) -> None:
    run_id, _ = parse_button_value(str(action.get("value", "")))
    chosen = BUTTON_ACTIONS[action["action_id"]]
    gate = await rollbacks.follow_up(run_id=run_id, action=chosen, user=body["user"]["id"])
    await _reply(respond, gate_reply(gate))


def register(app: AsyncApp) -> None:
    """The permission check first (after the services are in the context), then listeners."""
    app.use(authorize_request)
    app.command(COMMAND)(handle_rollback_command)
    for action_id in (ActionId.APPROVE, ActionId.REJECT, ActionId.CANCEL):
        app.action(action_id.value)(handle_decision_button)
    app.action(ActionId.CHECKLIST.value)(handle_checklist)
    app.action(ActionId.UNDO.value)(handle_undo_button)
    for action_id in (ActionId.RESUME, ActionId.ABORT):
        app.action(action_id.value)(handle_recovery_button)
    for action_id in (ActionId.RETRY_CODE, ActionId.UNDO_DATABASE):
        app.action(action_id.value)(handle_follow_up_button)
    app.error(handle_error)
