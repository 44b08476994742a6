"""Socket Mode in the sandbox workspace: ``apps.connections.open`` and the websocket.

As Slack does it (https://docs.slack.dev/apis/events-api/using-socket-mode/): the app
calls ``apps.connections.open`` with its app-level token (``xapp-…``) and gets a
``wss://…/link/?ticket=…`` URL (here ``ws://``); on connecting it receives
``{"type": "hello", ...}``; Slack then sends envelopes::

    {"envelope_id": "...", "type": "slash_commands" | "interactive" | "events_api",
     "payload": {...}, "accepts_response_payload": true | false,
     "retry_attempt": 0, "retry_reason": ""}          # the last two: events_api only

and the app acknowledges each with ``{"envelope_id": "...", "payload": {...}}`` (payload
optional) within 3 seconds, or the person sees ``operation_timeout``. Slack may also send
``{"type": "disconnect", "reason": "warning" | "refresh_requested" | "link_disabled"}``.

Every envelope, with its ack, latency or timeout, is kept in :attr:`SocketModeServer.envelopes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from sandbox.slack.models import JsonDict

if TYPE_CHECKING:
    from sandbox.slack.workspace import SandboxWorkspace

LINK_PATH = "/link/"
ACK_TIMEOUT = 3.0
ENVELOPE_TYPES = ("slash_commands", "interactive", "events_api")
DISCONNECT_REASONS = ("warning", "refresh_requested", "link_disabled")


@dataclass
class Envelope:
    """One envelope sent to the app, and whether and how it was acknowledged."""

    envelope_id: str
    type: str
    payload: JsonDict
    accepts_response_payload: bool
    connection: int | None
    """Id of the :class:`SocketConnection` it went over (``None``: there was none)."""
    sent_at: float
    retry_attempt: int | None = None
    retry_reason: str | None = None
    acked_at: float | None = None
    latency: float | None = None
    """Seconds from sending to the ack (also for an ack that came too late)."""
    ack_payload: JsonDict | None = None
    error: str | None = None
    """``operation_timeout`` (no ack within the timeout), ``connection_closed`` or
    ``no_connection`` (the sandbox's own words for an app that is not connected)."""

    @property
    def acked(self) -> bool:
        """Acknowledged in time: what Slack counts as handled."""
        return self.acked_at is not None and self.error is None

    @property
    def timed_out(self) -> bool:
        return self.error == "operation_timeout"

    def to_message(self) -> JsonDict:
        message: JsonDict = {
            "envelope_id": self.envelope_id,
            "type": self.type,
            "payload": self.payload,
            "accepts_response_payload": self.accepts_response_payload,
        }
        if self.type == "events_api":
            message["retry_attempt"] = self.retry_attempt or 0
            message["retry_reason"] = self.retry_reason or ""
        return message


@dataclass
class SocketConnection:
    """One websocket the app opened."""

    id: int
    ws: web.WebSocketResponse = field(repr=False)
    opened_at: float
    closed_at: float | None = None
    sent: list[JsonDict] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)
    """Every text frame from the app, decoded when it was JSON."""

    @property
    def is_open(self) -> bool:
        return self.closed_at is None and not self.ws.closed


class SocketModeServer:
    """The Socket Mode side of a :class:`~sandbox.slack.workspace.SandboxWorkspace`
    (its ``socket_mode`` attribute); the workspace must be given an ``app_token``."""

    def __init__(self, workspace: SandboxWorkspace) -> None:
        self._ws = workspace
        self.ack_timeout = ACK_TIMEOUT
        self.connections: list[SocketConnection] = []
        self.envelopes: list[Envelope] = []
        self.stray_messages: list[Any] = []
        """Frames from the app that acknowledge no envelope we are waiting for."""
        self._tickets: set[str] = set()
        self._acks: dict[str, asyncio.Future[None]] = {}
        self._by_id: dict[str, Envelope] = {}
        self._ids = itertools.count(1)
        self._turn = itertools.count()

    @property
    def open_connections(self) -> list[SocketConnection]:
        return [c for c in self.connections if c.is_open]

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(LINK_PATH, self._handle_link)

    # ------------------------------------------------------------------ Web API

    def connections_open(self, params: JsonDict) -> JsonDict:
        """``apps.connections.open`` (the workspace has checked the app-level token)."""
        ticket = secrets.token_hex(16)
        self._tickets.add(ticket)
        ws = self._ws
        return {"url": f"ws://{ws.host}:{ws.port}{LINK_PATH}?ticket={ticket}&app_id={ws.app_id}"}

    # ------------------------------------------------------------------ the websocket

    async def _handle_link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            # A URL from apps.connections.open is good for one connection.
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        connection = SocketConnection(id=next(self._ids), ws=ws, opened_at=time.time())
        self.connections.append(connection)
        try:
            await self._send(
                connection,
                {
                    "type": "hello",
                    "num_connections": len(self.open_connections),
                    "debug_info": {
                        "host": "applink-sandbox",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self._ws.app_id},
                },
            )
            self._ws._touch()
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._receive(connection, frame.data)
        finally:
            connection.closed_at = time.time()
            self._ws._touch()
        return ws

    async def _send(self, connection: SocketConnection, message: JsonDict) -> None:
        connection.sent.append(message)
        await connection.ws.send_str(json.dumps(message, separators=(",", ":")))

    def _receive(self, connection: SocketConnection, data: str) -> None:
        try:
            message: Any = json.loads(data)
        except ValueError:
            message = data
        connection.received.append(message)
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        envelope = self._by_id.get(envelope_id) if isinstance(envelope_id, str) else None
        if envelope is None or envelope.acked_at is not None:
            self.stray_messages.append(message)
            return
        assert isinstance(message, dict)
        envelope.acked_at = time.time()
        envelope.latency = envelope.acked_at - envelope.sent_at
        payload = message.get("payload")
        envelope.ack_payload = payload if isinstance(payload, dict) else None
        waiter = self._acks.pop(envelope.envelope_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._ws._touch()

    # ------------------------------------------------------------------ sending

    async def deliver(
        self,
        type: str,
        payload: JsonDict,
        *,
        accepts_response_payload: bool,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
    ) -> Envelope:
        """Send an envelope over one of the app's connections (in turn, when it has
        several, as Slack spreads them) and wait up to :attr:`ack_timeout` for its ack."""
        if type not in ENVELOPE_TYPES:
            raise ValueError(f"unknown envelope type {type!r}")
        connections = self.open_connections
        connection = connections[next(self._turn) % len(connections)] if connections else None
        envelope = Envelope(
            envelope_id=str(uuid.uuid4()),
            type=type,
            payload=payload,
            accepts_response_payload=accepts_response_payload,
            connection=None if connection is None else connection.id,
            sent_at=time.time(),
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
        )
        self.envelopes.append(envelope)
        self._by_id[envelope.envelope_id] = envelope
        if connection is None:
            envelope.error = "no_connection"
            self._ws._touch()
            return envelope
        waiter = asyncio.get_running_loop().create_future()
        self._acks[envelope.envelope_id] = waiter
        try:
            await self._send(connection, envelope.to_message())
            await asyncio.wait_for(_closed_or(waiter, connection), self.ack_timeout)
        except TimeoutError:
            envelope.error = "operation_timeout"
        except ConnectionError:
            envelope.error = "connection_closed"
        finally:
            self._acks.pop(envelope.envelope_id, None)
        if envelope.acked_at is None and envelope.error is None:
            envelope.error = "connection_closed"
        self._ws._touch()
        return envelope

    async def disconnect(self, reason: str = "refresh_requested", *, close: bool = True) -> None:
        """Send ``{"type": "disconnect", "reason": reason}`` on every open connection, as
        Slack does before it refreshes or disables a link; with ``close``, close them
        too (a well-behaved app has already opened a new one)."""
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"unknown disconnect reason {reason!r}")
        message = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "applink-sandbox"},
        }
        for connection in self.open_connections:
            with contextlib.suppress(ConnectionError):
                await self._send(connection, message)
        if close:
            await self.close_connections()

    async def close_connections(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        for connection in self.open_connections:
            await connection.ws.close(code=code)

    async def wait_for_connection(self, count: int = 1, timeout: float = 5.0) -> SocketConnection:
        """The newest open connection, once ``count`` connections have been opened in all."""
        await self._ws.wait_for(
            lambda: len(self.connections) >= count and self.open_connections, timeout=timeout
        )
        return self.open_connections[-1]


async def _closed_or(waiter: asyncio.Future[None], connection: SocketConnection) -> None:
    """Until the ack arrives; ConnectionError when the connection closes first."""
    while not waiter.done():
        if not connection.is_open:
            raise ConnectionError("the app's connection closed")
        await asyncio.wait({waiter}, timeout=0.05)
