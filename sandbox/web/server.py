"""The sandbox workspace as a channel view in a browser (`rollback-bot demo --web`).

The page reads the workspace's state as JSON, pushed again by server-sent events whenever
the workspace changes; what a person does on the page (a slash command, a click, a tick)
is sent to the bot by :class:`~sandbox.slack.SlackUser`, signed as Slack signs it. The
page is plain HTML and one vanilla JS file shipped in this package: nothing is built or
fetched from the internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from sandbox.slack import Delivery, Message, SandboxWorkspace, SlackUser
from sandbox.web.panel import EnvironmentPanel

JsonDict = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PANEL_INTERVAL = 1.0  # seconds between looks at the containers and the database
_STATIC = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "index.html": "text/html",
}


@dataclass(frozen=True)
class Person:
    """Someone the page can act as, with the part they play (requester, approver …)."""

    user_id: str
    role: str


class WorkspacePage:
    """Serves the page on ``host``:``port`` (a free port when 0): ``async with`` it."""

    def __init__(
        self,
        workspace: SandboxWorkspace,
        slack: SlackUser,
        *,
        channel: str,
        people: Sequence[Person],
        panel: EnvironmentPanel | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.workspace = workspace
        self.slack = slack
        self.channel = channel
        self.people = list(people)
        self.panel = panel
        self.host = host
        self.port = port
        self._panel_state: JsonDict | None = None
        self._panel_revision = 0
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def __aenter__(self) -> Self:
        app = web.Application(middlewares=[self._same_origin])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/state", self._state)
        app.router.add_get("/events", self._events)
        app.router.add_post("/command", self._command)
        app.router.add_post("/action", self._action)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        if self.panel is not None:
            self._tasks.append(asyncio.create_task(self._watch_panel(self.panel)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()  # ends the event streams, which would hold the server open
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ------------------------------------------------------------------ what the page reads

    def snapshot(self) -> JsonDict:
        """Everything the page draws: people, channels, messages, DMs, the environment."""
        ws = self.workspace
        channels = [c for c in ws.channels.values() if not c.is_im]
        ephemerals = [m for user in ws.users for m in ws.ephemerals(user)]
        messages = {
            c.id: sorted(
                [self._message(m) for m in ws.messages(c.id)]
                + [self._message(m) for m in ephemerals if m.channel == c.id],
                key=lambda m: float(m["ts"]),
            )
            for c in channels
        }
        return {
            "team": ws.team_name,
            "bot": {"id": ws.bot_user_id, "name": ws.users[ws.bot_user_id].name},
            "channel": self.channel,
            "users": {
                u.id: {"name": u.name, "real_name": u.real_name or u.name, "is_bot": u.is_bot}
                for u in ws.users.values()
            },
            "groups": {g.id: g.handle for g in ws.usergroups.values()},
            "channels": [{"id": c.id, "name": c.name} for c in channels],
            "people": [{"id": p.user_id, "role": p.role} for p in self.people],
            "messages": messages,
            "dms": {
                user: [self._message(m) for m in ws.dms(user)] for user in ws.users if ws.dms(user)
            },
            "environment": self._panel_state,
        }

    def _message(self, message: Message) -> JsonDict:
        replies = [] if message.is_ephemeral else self.workspace.thread(message.channel, message.ts)
        return {
            "ts": message.ts,
            "channel": message.channel,
            "user": message.user,
            "text": message.text,
            "blocks": message.blocks,
            "posted_at": message.posted_at,
            "edited": message.edited,
            "ephemeral_to": message.ephemeral_to,
            "replies": [self._message(r) for r in replies],
        }

    async def _watch_panel(self, panel: EnvironmentPanel) -> None:
        while True:
            state = await panel.read()
            if state != self._panel_state:
                self._panel_state = state
                self._panel_revision += 1
            await asyncio.sleep(PANEL_INTERVAL)

    # ------------------------------------------------------------------ HTTP

    @web.middleware
    async def _same_origin(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Only this page may act: another site open in the browser cannot post here (its
        JSON request would need a preflight we never answer), nor a name rebound to us."""
        if request.host not in (f"{self.host}:{self.port}", f"localhost:{self.port}"):
            raise web.HTTPForbidden(text="unknown host")
        if request.method == "POST" and request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send JSON")
        return await handler(request)

    async def _index(self, request: web.Request) -> web.Response:
        return _file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC or name == "index.html":
            raise web.HTTPNotFound()
        return _file(name)

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the whole state, again each time it changes."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        sent = ""
        while not self._closing.is_set():
            state = json.dumps(self.snapshot())
            if state != sent:
                try:
                    await response.write(f"data: {state}\n\n".encode())
                except ConnectionError:
                    break  # the page was closed
                sent = state
            await self._changed()
        return response

    async def _changed(self) -> None:
        """Return when the workspace or the panel may have changed (or soon, regardless)."""
        seen = (self.workspace.revision, self._panel_revision)
        with contextlib.suppress(TimeoutError):
            await self.workspace.wait_for(
                lambda: (
                    self._closing.is_set()
                    or (self.workspace.revision, self._panel_revision) != seen
                ),
                timeout=PANEL_INTERVAL,
            )

    async def _command(self, request: web.Request) -> web.Response:
        body = await _json(request)
        user, channel = self._person(body), self._channel(body)
        typed = str(body.get("text") or "").strip()
        command, _, text = typed.partition(" ")
        if not command.startswith("/") or len(command) < 2:
            raise web.HTTPBadRequest(text="type a slash command, e.g. /rollback demo")
        delivery = await self.slack.send_command(user, channel, command, text.strip())
        return _delivered(delivery)

    async def _action(self, request: web.Request) -> web.Response:
        body = await _json(request)
        user = self._person(body)
        message = self._find(user, self._channel(body), str(body.get("ts") or ""))
        action_id = str(body.get("action_id") or "")
        block_id = body.get("block_id")
        block = None if block_id is None else str(block_id)
        try:
            if body.get("kind") == "checkboxes":
                selected = [str(v) for v in body.get("selected") or []]
                delivery = await self.slack.select_checkboxes(
                    user, message, action_id, selected, block_id=block
                )
            else:
                delivery = await self.slack.click(user, message, action_id, block_id=block)
        except LookupError as error:
            raise web.HTTPConflict(text=str(error)) from error
        return _delivered(delivery)

    def _person(self, body: JsonDict) -> str:
        user = str(body.get("user") or "")
        if user not in self.workspace.users or self.workspace.users[user].is_bot:
            raise web.HTTPBadRequest(text=f"no such person: {user!r}")
        return user

    def _channel(self, body: JsonDict) -> str:
        channel = str(body.get("channel") or "")
        if channel not in self.workspace.channels:
            raise web.HTTPBadRequest(text=f"no such channel: {channel!r}")
        return channel

    def _find(self, user: str, channel: str, ts: str) -> Message:
        message = self.workspace.message(channel, ts)
        if message is None:  # an ephemeral message is only the person's own
            shown = self.workspace.ephemerals(user, channel)
            message = next((m for m in shown if m.ts == ts), None)
        if message is None:
            raise web.HTTPNotFound(text="that message is gone")
        return message


def _file(name: str) -> web.Response:
    data = resources.files("sandbox.web").joinpath("static", name).read_bytes()
    return web.Response(
        body=data, content_type=_STATIC[name], headers={"Cache-Control": "no-store"}
    )


async def _json(request: web.Request) -> JsonDict:
    try:
        body = await request.json()
    except ValueError as error:
        raise web.HTTPBadRequest(text="expected a JSON body") from error
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


def _delivered(delivery: Delivery) -> web.Response:
    """What the bot answered Slack's request: the page shows a refusal or a timeout."""
    return web.json_response(
        {"status": delivery.status, "acked": delivery.acked, "body": delivery.body[:2000]}
    )
