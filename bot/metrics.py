"""What operators scrape: /healthz and /metrics (Prometheus text format).

The registry is made at start-up and handed in (no global one). Counters and histograms
are fed by the runs' step events (a RunObserver given to handlers/runs.py), Slack's
requests and Web API responses; the gauges are read from the run store at scrape time,
so they say what the store says, whichever process changed it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from services.bundle import Services
from services.events import EventKind, StepEvent
from services.run_store import ACTIVE, RunStatus

log = logging.getLogger(__name__)

STORE_TIMEOUT = 2.0  # /healthz answers within this even when the run store hangs
# Request kinds Slack sends; anything else is "other" (a label's values stay few).
_REQUEST_KINDS = {
    "block_actions",
    "block_suggestion",
    "event_callback",
    "message_action",
    "shortcut",
    "view_closed",
    "view_submission",
}
_ENDED = {s for s in RunStatus if s not in ACTIVE}


class BotMetrics:
    """The bot's metrics in one registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.runs = Counter(
            "rollback_runs",
            "Runs that ended in this process, by environment and outcome (the run's status)",
            ["environment", "outcome"],
            registry=r,
        )
        self.step_seconds = Histogram(
            "rollback_step_duration_seconds",
            "How long each step of a run took (finished or failed)",
            ["environment", "step"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.approval_wait = Histogram(
            "rollback_approval_wait_seconds",
            "From the request to the approval that let the run start",
            ["environment"],
            buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200),
            registry=r,
        )
        self.ack_seconds = Histogram(
            "rollback_slack_ack_seconds",
            "From a Slack request's arrival to its acknowledgement (Slack allows 3 s)",
            ["kind"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5),
            registry=r,
        )
        self.slack_errors = Counter(
            "rollback_slack_api_errors",
            "Slack Web API calls that failed: ok=false, HTTP errors, connection errors",
            ["method", "error"],
            registry=r,
        )
        self.slack_rate_limited = Counter(
            "rollback_slack_rate_limited",
            "Slack Web API responses with HTTP 429 (each is retried after Retry-After)",
            ["method"],
            registry=r,
        )
        self.active_runs = Gauge(
            "rollback_active_runs",
            "Runs pending, awaiting approval, approved or running (from the run store)",
            ["environment"],
            registry=r,
        )
        self.leases_held = Gauge(
            "rollback_leases_held", "Runs this process owns (leases in the run store)", registry=r
        )
        self.store_up = Gauge(
            "rollback_run_store_up", "1 if the run store answered at the last scrape", registry=r
        )

    def observe_ack(self, body: Mapping[str, Any], seconds: float) -> None:
        if body.get("command"):
            kind = "slash_command"
        else:
            kind = str(body.get("type"))
            kind = kind if kind in _REQUEST_KINDS else "other"
        self.ack_seconds.labels(kind=kind).observe(seconds)

    async def refresh_from_store(self, services: Services) -> bool:
        """Set the gauges from the run store; False (and store_up 0) if it does not answer."""
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                active = await services.store.active_runs()
        except Exception as error:  # any failure means "not answering"; cancellation is not
            log.warning("run store not answering: %s", type(error).__name__)
            self.store_up.set(0)
            return False
        counts = Tally(run.environment for run in active)
        self.active_runs.clear()  # an environment no longer configured disappears
        for environment in {*services.environments, *counts}:
            self.active_runs.labels(environment=environment).set(counts[environment])
        self.leases_held.set(sum(run.owner == services.owner for run in active))
        self.store_up.set(1)
        return True

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the scraper asked for (text 0.0.4 by default)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class RunMetrics:
    """The RunObserver handlers/runs.py tells about runs: steps, approvals, endings."""

    def __init__(self, metrics: BotMetrics, services: Services) -> None:
        self.metrics = metrics
        self.services = services
        self._environments: dict[str, str] = {}  # run id -> environment, while it runs

    async def _environment(self, run_id: str) -> str:
        if run_id not in self._environments:
            if len(self._environments) > 1000:  # runs whose end this process never saw
                self._environments.clear()
            self._environments[run_id] = (await self.services.store.get(run_id)).environment
        return self._environments[run_id]

    async def step(self, event: StepEvent) -> None:
        if event.kind not in (EventKind.FINISHED, EventKind.FAILED) or event.seconds is None:
            return
        try:
            environment = await self._environment(event.run_id)
        except Exception:  # a metric is never worth failing a run's display for
            log.debug("no environment for run %s", event.run_id, exc_info=True)
            return
        self.metrics.step_seconds.labels(environment=environment, step=event.step.value).observe(
            event.seconds
        )

    async def approved(self, run_id: str) -> None:
        try:
            run = await self.services.store.get(run_id)
            approvals = await self.services.store.approvals(run_id)
            granted = max((a.at for a in approvals if a.decision == "approve"), default=None)
        except Exception:
            log.debug("approval of run %s not measured", run_id, exc_info=True)
            return
        if granted is not None:
            waited = max((granted - run.requested_at).total_seconds(), 0.0)
            self.metrics.approval_wait.labels(environment=run.environment).observe(waited)

    async def finished(self, run_id: str) -> None:
        self._environments.pop(run_id, None)
        try:
            run = await self.services.store.get(run_id)
        except Exception:
            log.debug("outcome of run %s not counted", run_id, exc_info=True)
            return
        if run.status in _ENDED:
            self.metrics.runs.labels(environment=run.environment, outcome=run.status.value).inc()


class SlackCallMetrics(AsyncRetryHandler):
    """First among the Web API client's retry handlers: it sees every response and every
    connection error, counts failures and 429s, and never retries itself."""

    def __init__(self, metrics: BotMetrics) -> None:
        super().__init__(max_retry_count=0)
        self.metrics = metrics

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        method = request.url.rstrip("/").rsplit("/", 1)[-1] or "unknown"
        if error is not None:
            self.metrics.slack_errors.labels(method=method, error=type(error).__name__).inc()
        elif response is not None:
            body = response.body if isinstance(response.body, dict) else {}
            if response.status_code == 429:
                self.metrics.slack_rate_limited.labels(method=method).inc()
            elif response.status_code >= 400:
                self.metrics.slack_errors.labels(
                    method=method, error=f"http_{response.status_code}"
                ).inc()
            elif body.get("ok") is False:
                self.metrics.slack_errors.labels(
                    method=method, error=str(body.get("error", "unknown"))[:64]
                ).inc()
        return False


def add_routes(app: web.Application, metrics: BotMetrics, services: Services) -> None:
    """GET /healthz and /metrics on `app`."""

    async def healthz(request: web.Request) -> web.Response:
        began = time.monotonic()
        ok = await metrics.refresh_from_store(services)
        body = {
            "status": "ok" if ok else "unavailable",
            "run_store": "answering" if ok else "not answering",
            "seconds": round(time.monotonic() - began, 3),
        }
        return web.json_response(body, status=200 if ok else 503)

    async def scrape(request: web.Request) -> web.Response:
        await metrics.refresh_from_store(services)
        body, content_type = metrics.exposition(request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", scrape)


@asynccontextmanager
async def serving(app: web.Application, *, host: str, port: int) -> AsyncIterator[str]:
    """`app` served at `host`:`port` (0: a free port) until the block ends; yields its URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()
