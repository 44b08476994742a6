"""The Slack side of a run's life: post the plan, keep it live, report in the thread, tell
the contacts. Listeners call one method here; the decisions are the services'."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import Block
from slack_sdk.web.async_client import AsyncWebClient

from handlers.live import LiveMessages
from handlers.messages.follow_ups import (
    follow_up_asked,
    follow_up_finished,
    follow_up_not_done,
    follow_up_started,
)
from handlers.messages.incident_report import incident_report, incident_report_text
from handlers.messages.notices import notice_text
from handlers.messages.recovery_report import recovery_report
from handlers.messages.run_message import run_message, run_message_text
from handlers.messages.step_detail import step_failure, step_failure_text
from handlers.messages.text import as_dicts, fallback
from handlers.messages.undo_notes import (
    undo_asked,
    undo_finished,
    undo_not_done,
    undo_started,
)
from handlers.tasks import BackgroundTasks
from handlers.watches import Watches
from services import approvals
from services.approvals import (
    ActionGate,
    Bound,
    Decision,
    DecisionOutcome,
    Directory,
    RequestExpired,
)
from services.bundle import Services
from services.checklist import tick_checklist
from services.environments import Strategy
from services.errors import NotPosted, PreparationFailed, RollbackError, RunOwned
from services.events import EventKind, Listener, NoObserver, RunObserver, Step, StepEvent
from services.execution import database_plan, execute_approved
from services.full_rollback import failed_half, retry_code_half, undo_database_half
from services.notifications import Notice, Notifier, notify_contacts
from services.permissions import Action, Actor
from services.recovery import abort_run, recover_orphans, resume_run
from services.run_store import RunKind, RunRecord, RunStatus
from services.run_view import load_run_view
from services.undo import expire_old_databases, undo_rollback, undoable_run
from services.workflow import (
    RollbackPlan,
    discard_staging,
    prepare_rollback,
)

log = logging.getLogger(__name__)


class Rollbacks:
    def __init__(
        self,
        *,
        services: Services,
        client: AsyncWebClient,
        tasks: BackgroundTasks,
        live: LiveMessages,
        directory: Directory,
        notifier: Notifier,
        observer: RunObserver | None = None,
    ) -> None:
        self.services = services
        self.observer = observer or NoObserver()  # the metrics
        self.client = client
        self.tasks = tasks
        self.live = live
        self.directory = directory
        self.notifier = notifier
        self._thread_posts: dict[str, list[asyncio.Task[None]]] = {}
        self._sweeps = 0
        self._planning: dict[str, asyncio.Lock] = {}
        self._bot_user: str | None = None
        # Watching each environment after its rollback (handlers/watches.py).
        self.watches = Watches(
            services=services, tasks=tasks, live=live, thread=self._thread, notify=self.notify
        )

    async def request(
        self,
        *,
        environment: str,
        backup: str | None,
        user: str,
        channel: str,
        kind: RunKind = RunKind.DATABASE,
        commit: str | None = None,
    ) -> RunRecord:
        """Plan and record the run, then post its message in the channel."""
        # One pre-flight at a time per environment in this process: a burst of requests
        # costs one plan, the others find the recorded run at once.
        known = self.services.environment(environment).name  # no lock for unknown names
        async with self._planning.setdefault(known, asyncio.Lock()):
            outcome = await approvals.request_rollback(
                self.services,
                self.directory,
                environment=environment,
                backup=backup,
                requested_by=user,
                kind=kind,
                commit=commit,
            )
        run = outcome.run
        try:
            view = await load_run_view(self.services, run.id)
            posted = await self.client.chat_postMessage(
                channel=channel,
                text=fallback(run_message_text(view)),
                blocks=as_dicts(run_message(view, now=datetime.now(UTC))),
            )
        except (Exception, asyncio.CancelledError) as error:
            # Nobody could approve or cancel a run without its message: cancel it now, so
            # the environment is not left locked until it expires.
            reason = str(error.response.get("error")) if isinstance(error, SlackApiError) else ""
            await asyncio.shield(
                approvals.withdraw(
                    self.services,
                    run.id,
                    reason=f"its message could not be posted ({reason or type(error).__name__})",
                )
            )
            if not reason:
                raise
            raise NotPosted(
                run.id, run.environment, channel, reason, bot=await self._own_user_id()
            ) from error
        await self.services.store.set_message(run.id, str(posted["channel"]), str(posted["ts"]))
        self.tasks.spawn(self.notify(run.id, Notice.REQUESTED), name=f"notify-{run.id}")
        database = database_plan(outcome.plan)
        if database is not None:
            self._prepare(run.id, database)
        if outcome.approved:
            self._start(run.id, outcome.plan)
        return run

    async def _own_user_id(self) -> str:
        """The bot's user ID (to say whom to invite); asked once, only when needed."""
        if self._bot_user is None:
            try:
                self._bot_user = str((await self.client.auth_test()).get("user_id") or "")
            except SlackApiError:
                return ""
        return self._bot_user

    async def decide(
        self, *, run_id: str, user: str, decision: Decision, seen_plan_hash: str | None
    ) -> DecisionOutcome:
        try:
            outcome = await approvals.decide(
                self.services,
                self.directory,
                run_id=run_id,
                user=user,
                decision=decision,
                seen_plan_hash=seen_plan_hash,
            )
        except RequestExpired as expired:
            if expired.expired_now:  # this click found it expired: tell them, as the sweep would
                self._closed(run_id, Notice.EXPIRED)
            raise
        finally:
            self.live.refresh(run_id)  # whatever happened (even expiry), show it
        if outcome.start is not None:
            self._start(run_id, outcome.start)
            await self.observer.approved(run_id)
        elif outcome.counted and decision is not Decision.APPROVE:
            self._closed(run_id, Notice.FINISHED, was=outcome.previous)
        return outcome

    async def cancel(self, *, environment: str, user: str) -> RunRecord:
        """`/rollback cancel <env>`: its run that has not started executing."""
        run = await approvals.cancel_run(
            self.services, self.directory, environment=environment, actor=Actor(user)
        )
        self.live.refresh(run.id)
        self._closed(run.id, Notice.FINISHED, was=run.status)
        return run

    def _closed(self, run_id: str, notice: Notice, *, was: RunStatus | None = None) -> None:
        """A run that will not execute: counted, no staging database left, the contacts
        told. An approved one being started here reports by itself when it finds it
        cancelled."""
        self._discard(run_id)
        if was is not RunStatus.APPROVED:

            async def tell() -> None:
                await self.observer.finished(run_id)
                await self.notify(run_id, notice)

            self.tasks.spawn(tell(), name=f"notify-{run_id}")

    def _prepare(self, run_id: str, plan: RollbackPlan) -> None:
        """Start the non-destructive work now; the cut-over waits for it (and approval).

        The preparation owns the run in the run store while it works, so an approval
        handled by any bot process waits for it; a rejection anywhere stops it."""
        if plan.strategy is not Strategy.SWAP:
            return

        async def show(event: StepEvent) -> None:
            await self.observer.step(event)
            self.live.refresh(run_id)

        async def prepare() -> None:
            try:
                await prepare_rollback(self.services, plan, run_id=run_id, listener=show)
            except PreparationFailed as error:
                log.warning("run %s: %s", run_id, error)  # shown by its step; execution stops
            except RunOwned:
                pass  # another process prepares or executes it
            finally:
                self.live.refresh(run_id)

        self.tasks.spawn(prepare(), name=f"prepare-{run_id}")

    def _discard(self, run_id: str) -> None:
        """A run that will not happen leaves no staging database behind."""
        self.tasks.spawn(discard_staging(self.services, run_id), name=f"discard-{run_id}")

    async def undo(self, *, run_id: str, user: str) -> ActionGate:
        """One approval of undoing exactly this run; the click that completes the policy's
        approvals swaps the pre-rollback database back, reporting in the run's thread."""
        run = await self.services.store.get(run_id)
        await undoable_run(self.services, run.environment, run_id=run.id)  # refuse early
        gate = await approvals.approve_action(
            self.services, self.directory, run_id=run.id, action=Action.UNDO, user=user
        )
        if gate.go:
            self.tasks.spawn(self._undo(run, user), name=f"undo-{run.id}", critical=True)
        elif gate.counted:  # the other approvers learn of it where they look
            await self._thread(run, *undo_asked(user, gate.approvals, gate.required))
        return gate

    async def _undo(self, run: RunRecord, user: str) -> None:
        await self._thread(run, *undo_started(user))

        async def show(event: StepEvent) -> None:
            await self.observer.step(event)
            self.live.refresh(run.id)

        ok = False
        try:
            # Exactly the clicked run, never an older run's database.
            result = await undo_rollback(
                self.services, run.environment, requested_by=user, listener=show, run_id=run.id
            )
            ok = result.ok
            await self._thread(run, *undo_finished(result))
        except RollbackError as error:  # refused before anything changed: say so there
            await self._thread(run, *undo_not_done(str(error)))
        finally:
            self.live.refresh(run.id)
            if not ok:  # the approvals are spent: an undo may be asked for again
                await asyncio.shield(
                    approvals.release_action(self.services, run_id=run.id, action=Action.UNDO)
                )

    async def follow_up(self, *, run_id: str, action: Action, user: str) -> ActionGate:
        """One approval of Retry code rollback or Undo database rollback on a full rollback
        whose code half failed; the click that completes the approvals does it, reporting in
        the run's thread."""
        run = await failed_half(self.services, run_id, action)  # refuse early
        gate = await approvals.approve_action(
            self.services, self.directory, run_id=run.id, action=action, user=user
        )
        if gate.go:
            work = self._follow_up(run, action, user)
            self.tasks.spawn(work, name=f"{action.value}-{run.id}", critical=True)
        elif gate.counted:
            await self._thread(run, *follow_up_asked(action, user, gate.approvals, gate.required))
        return gate

    async def _follow_up(self, run: RunRecord, action: Action, user: str) -> None:
        await self._thread(run, *follow_up_started(action, user))

        async def show(event: StepEvent) -> None:
            await self.observer.step(event)
            self.live.refresh(run.id)

        act = retry_code_half if action is Action.RETRY_CODE else undo_database_half
        ok = False
        try:
            result = await act(self.services, run.id, requested_by=user, listener=show)
            ok = result.ok
            await self._thread(run, *follow_up_finished(action, result))
        except RollbackError as error:  # refused before anything changed: say so there
            await self._thread(run, *follow_up_not_done(action, str(error)))
        finally:
            self.live.refresh(run.id)
            if not ok:  # the approvals are spent: it may be asked for again
                await asyncio.shield(
                    approvals.release_action(self.services, run_id=run.id, action=action)
                )

    async def tick(
        self,
        *,
        channel: str,
        ts: str,
        user: str,
        ticked: Sequence[str],
        shown: Sequence[str] | None,
    ) -> None:
        """Apply what `user` changed since the view they clicked in (`shown`)."""
        run = await self.services.store.run_for_message(channel, ts)
        if await tick_checklist(
            self.services.store, run_id=run.id, user=user, ticked=ticked, shown=shown
        ):
            self.live.refresh(run.id)

    def _start(self, run_id: str, plan: Bound) -> None:
        self.tasks.spawn(self._execute(run_id, plan), name=f"rollback-{run_id}", critical=True)

    async def _execute(self, run_id: str, plan: Bound) -> None:
        # Owns the run from here (waiting for a preparation still running anywhere) until
        # it is reported; if this process dies first, another one reports it.
        await execute_approved(
            self.services,
            plan,
            run_id=run_id,
            listener=self._step_listener(run_id),
            report=lambda: self._report(run_id),
        )

    def _step_listener(self, run_id: str) -> Listener:
        async def show(event: StepEvent) -> None:
            # Called inline by the workflow: never wait on Slack here.
            await self.observer.step(event)
            self.live.refresh(run_id)
            if event.kind is EventKind.FAILED:
                self._post_in_thread(run_id, step_failure(event), step_failure_text(event))
                if event.step is Step.HEALTH:  # then what the failing containers wrote last
                    posts = self._thread_posts.setdefault(run_id, [])
                    posts.append(
                        self.tasks.spawn(
                            self.watches.post_health_excerpts(run_id, after=list(posts)),
                            name=f"excerpts-{run_id}",
                        )
                    )

        return show

    async def approve(self, *, run_id: str, action: Action, user: str) -> ActionGate:
        """One approval of a gated action (resume, abort) on the run."""
        return await approvals.approve_action(
            self.services, self.directory, run_id=run_id, action=action, user=user
        )

    async def resume(self, *, run_id: str, user: str) -> None:
        """Continue an interrupted, recovered run (an approver chose Resume)."""
        try:
            await resume_run(
                self.services, run_id, requested_by=user, listener=self._step_listener(run_id)
            )
        finally:
            await asyncio.shield(self._report(run_id))

    async def abort(self, *, run_id: str, user: str) -> None:
        """Put an interrupted run's environment back on its pre-rollback data."""
        try:
            result = await abort_run(
                self.services, run_id, requested_by=user, listener=self._step_listener(run_id)
            )
        finally:
            self.live.refresh(run_id)
        await self.observer.finished(run_id)
        run = await self.services.store.get(run_id)
        await self._thread(run, *undo_finished(result))
        await self.notify(run_id, Notice.FINISHED)

    async def recover(self) -> int:
        """Take over runs whose bot process died, then tell their channels (any process
        may have recovered them: each recovery is announced once)."""
        recoveries = await recover_orphans(self.services)
        for recovery in recoveries:
            log.warning(
                "run %s of %s recovered: %s",
                recovery.run_id,
                recovery.environment,
                recovery.environment_state,
            )
        for run in await self.services.store.unannounced_recoveries():
            self.live.refresh(run.id)
            await self._thread(run, *recovery_report(run))
            await self.notify(run.id, Notice.RECOVERED)
        for run in await self.services.store.unreported_runs():
            log.warning("run %s finished but was not reported; reporting it", run.id)
            await self._report(run.id)
        return len(recoveries)

    async def _report(self, run_id: str) -> None:
        await self.observer.finished(run_id)
        await self.watches.start(run_id)  # a success is watched for monitor_minutes
        await self.live.flush(run_id)
        await asyncio.gather(*self._thread_posts.pop(run_id, []), return_exceptions=True)
        view = await load_run_view(self.services, run_id)
        await self._thread(view.run, incident_report(view), incident_report_text(view))
        await self.services.store.record(run_id, None, reported=True)
        await self.notify(run_id, Notice.FINISHED)

    def _post_in_thread(self, run_id: str, blocks: list[Block], text: str) -> None:
        async def post() -> None:
            await self._thread(await self.services.store.get(run_id), blocks, text)

        task = self.tasks.spawn(post(), name=f"thread-{run_id}")
        self._thread_posts.setdefault(run_id, []).append(task)

    async def _thread(self, run: RunRecord, blocks: list[Block], text: str) -> None:
        if run.slack_channel is None or run.slack_ts is None:
            return
        await self.client.chat_postMessage(
            channel=run.slack_channel,
            thread_ts=run.slack_ts,
            text=fallback(text),
            blocks=as_dicts(blocks),
        )

    async def _permalink(self, run: RunRecord) -> str | None:
        if run.slack_channel is None or run.slack_ts is None:
            return None
        try:
            found = await self.client.chat_getPermalink(
                channel=run.slack_channel, message_ts=run.slack_ts
            )
        except SlackApiError:
            log.warning("no permalink for run %s", run.id, exc_info=True)
            return None
        return str(found["permalink"])

    async def notify(self, run_id: str, notice: Notice) -> None:
        """Tell the environment's contacts (escalation: the next contacts), with a link."""
        view = await load_run_view(self.services, run_id)
        link = await self._permalink(view.run)
        await notify_contacts(
            self.services.store,
            self.notifier,
            run_id=run_id,
            contacts=view.environment.contacts,
            notice=notice,
            text=notice_text(view, notice, link=link),
            channel=view.run.slack_channel or "",
            requested_by=view.run.requested_by,
        )
        self.live.refresh(run_id)

    async def sweep_once(self) -> None:
        await self.recover()
        await self.watches.take_over()
        result = await approvals.sweep(self.services)
        for run in result.expired:
            self.live.refresh(run.id)
            self._closed(run.id, Notice.EXPIRED)
        self._sweeps += 1
        if self._sweeps % 60 == 1:  # now and then: old databases past their time
            for name in await expire_old_databases(self.services):
                log.info("dropped %s (kept past its time)", name)
        for escalation in result.escalated:
            self.live.refresh(escalation.run.id)
            await self.notify(escalation.run.id, Notice.ESCALATED)

    async def watch(self, interval: float) -> None:
        """Expire and escalate requests waiting for approval, every `interval` seconds."""
        while True:
            try:
                await self.sweep_once()
            except Exception:  # the sweeper must outlive one bad round
                log.exception("approval sweep failed")
            await asyncio.sleep(interval)
