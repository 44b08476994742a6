"""The Slack platform's side of a conversation with the bot: what a person's actions send.

A :class:`SlackUser` sends what Slack would send when a person in the
:class:`~sandbox.slack.workspace.SandboxWorkspace` types a slash command or clicks a
button, as signed HTTP requests to the app's request URL, signed with the app's signing
secret (or a forged one, or a stale timestamp). A :class:`SocketModeUser` sends the same
payloads as envelopes over the app's Socket Mode connection.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import aiohttp
from slack_sdk.signature import SignatureVerifier

from sandbox.slack.blocks import iter_elements
from sandbox.slack.models import JsonDict, Message
from sandbox.slack.socket_mode import ACK_TIMEOUT, Envelope
from sandbox.slack.workspace import SandboxWorkspace

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Delivery:
    """What the bot answered to one request, and the URLs Slack gave it."""

    status: int
    body: str
    elapsed: float
    headers: Mapping[str, str] = field(default_factory=dict)
    response_url: str | None = None
    trigger_id: str | None = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def acked(self) -> bool:
        """Answered 200 within Slack's 3 seconds (else the person sees a timeout)."""
        return self.status == 200 and self.elapsed <= ACK_TIMEOUT


@dataclass(frozen=True)
class SocketDelivery:
    """What the app answered to one envelope sent over Socket Mode, and the URLs in it."""

    envelope_id: str
    acked: bool
    """Acknowledged within the workspace's ack timeout (Slack: 3 s)."""
    elapsed: float
    """Seconds until the ack, or until Slack gave up waiting."""
    ack_payload: JsonDict | None = None
    error: str | None = None
    response_url: str | None = None
    trigger_id: str | None = None

    @classmethod
    def of(
        cls, envelope: Envelope, response_url: str | None, trigger_id: str | None
    ) -> SocketDelivery:
        waited = envelope.latency if envelope.acked else None
        return cls(
            envelope_id=envelope.envelope_id,
            acked=envelope.acked,
            elapsed=waited if waited is not None else time.time() - envelope.sent_at,
            ack_payload=envelope.ack_payload,
            error=envelope.error,
            response_url=response_url,
            trigger_id=trigger_id,
        )

    def json(self) -> Any:
        return self.ack_payload


class _PlatformSide:
    """What Slack sends when a person acts, whatever carries it: the payload builders."""

    def __init__(self, workspace: SandboxWorkspace, verification_token: str) -> None:
        self.workspace = workspace
        self.verification_token = verification_token
        # What each person has ticked in each message, as a Slack client would keep it.
        self._checkboxes: dict[tuple[str, str, str, str], list[JsonDict]] = {}

    def _command(
        self, user_id: str, channel_id: str, command: str, text: str
    ) -> tuple[dict[str, str], str, str]:
        """The slash command's fields (the HTTP form body, the Socket Mode payload), its
        response_url and trigger_id."""
        ws = self.workspace
        user = ws.users[user_id]
        response_url = ws.issue_response_url(channel=channel_id, user=user_id)
        trigger_id = ws.issue_trigger_id(user_id)
        fields = {
            "token": self.verification_token,
            "team_id": ws.team_id,
            "team_domain": ws.team_domain,
            "enterprise_id": ws.enterprise_id,
            "enterprise_name": ws.enterprise_name,
            "channel_id": channel_id,
            "channel_name": ws.channel_name(channel_id),
            "user_id": user_id,
            "user_name": user.name,
            "command": command,
            "text": text,
            "api_app_id": ws.app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id,
        }
        ws.record_user_action(user_id, channel_id, "command", f"{command} {text}".rstrip())
        return fields, response_url, trigger_id

    def _click(
        self,
        user_id: str,
        message: Message,
        action_id: str,
        value: str | None,
        block_id: str | None,
    ) -> tuple[JsonDict, str, str]:
        """The block_actions payload of a button click, its response_url and trigger_id."""
        block, element = _find_element(message, action_id, block_id, "button")
        action: JsonDict = {
            "type": "button",
            "action_id": action_id,
            "block_id": block["block_id"],
            "text": element.get("text"),
            "action_ts": f"{time.time():.6f}",
        }
        chosen = value if value is not None else element.get("value")
        if chosen is not None:
            action["value"] = chosen
        if "style" in element:
            action["style"] = element["style"]
        label = (element.get("text") or {}).get("text", action_id)
        return self._block_actions(user_id, message, action, summary=f"[ {label} ]")

    def _tick(
        self,
        user_id: str,
        message: Message,
        action_id: str,
        selected: Sequence[str],
        block_id: str | None,
    ) -> tuple[JsonDict, str, str]:
        """The block_actions payload of (un)ticking checkboxes, its URLs."""
        block, element = _find_element(message, action_id, block_id, "checkboxes")
        options = [o for o in element.get("options") or [] if o.get("value") in selected]
        missing = set(selected) - {str(o.get("value")) for o in options}
        if missing:
            raise LookupError(f"no checkbox option with value {sorted(missing)} in {action_id!r}")
        key = (user_id, message.ts, str(block["block_id"]), action_id)
        self._checkboxes[key] = options
        action: JsonDict = {
            "type": "checkboxes",
            "action_id": action_id,
            "block_id": block["block_id"],
            "selected_options": options,
            "action_ts": f"{time.time():.6f}",
        }
        ticked = ", ".join(str((o.get("text") or {}).get("text", "")) for o in options)
        return self._block_actions(user_id, message, action, summary=f"ticked [{ticked}]")

    def _block_actions(
        self, user_id: str, message: Message, action: JsonDict, *, summary: str
    ) -> tuple[JsonDict, str, str]:
        ws = self.workspace
        user = ws.users[user_id]
        response_url = ws.issue_response_url(
            channel=message.channel, user=user_id, original=message
        )
        trigger_id = ws.issue_trigger_id(user_id)
        container: JsonDict = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": message.is_ephemeral,
        }
        if message.thread_ts is not None:
            container["thread_ts"] = message.thread_ts
        payload: JsonDict = {
            "type": "block_actions",
            "user": {
                "id": user.id,
                "username": user.name,
                "name": user.name,
                "team_id": ws.team_id,
            },
            "api_app_id": ws.app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": trigger_id,
            "team": {"id": ws.team_id, "domain": ws.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": message.channel, "name": ws.channel_name(message.channel)},
            "state": {"values": self._state_values(user_id, message)},
            "response_url": response_url,
            "actions": [action],
        }
        if not message.is_ephemeral:
            # Slack leaves the message out of payloads from ephemeral messages.
            payload["message"] = message.to_api(ws.team_id)
        ws.record_user_action(user_id, message.channel, action["type"], summary)
        return payload, response_url, trigger_id

    def _state_values(self, user_id: str, message: Message) -> JsonDict:
        values: JsonDict = {}
        for block in message.blocks:
            for element in iter_elements(block):
                if element.get("type") != "checkboxes":
                    continue
                key = (user_id, message.ts, str(block["block_id"]), str(element["action_id"]))
                selected = self._checkboxes.get(key, element.get("initial_options") or [])
                values.setdefault(block["block_id"], {})[element["action_id"]] = {
                    "type": "checkboxes",
                    "selected_options": selected,
                }
        return values


class SlackUser(_PlatformSide):
    """Sends slash commands and interactions to the bot, as Slack does.

    Use as ``async with SlackUser(ws, request_url, signing_secret) as slack:``; it owns
    its aiohttp session unless one is passed in.
    """

    def __init__(
        self,
        workspace: SandboxWorkspace,
        request_url: str,
        signing_secret: str,
        *,
        session: aiohttp.ClientSession | None = None,
        verification_token: str = "sandbox-verification-token",
        timeout: float = 10.0,
    ) -> None:
        super().__init__(workspace, verification_token)
        self.request_url = request_url
        self.signing_secret = signing_secret
        self.timeout = timeout
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    # ------------------------------------------------------------------ commands

    async def send_command(
        self,
        user_id: str,
        channel_id: str,
        command: str,
        text: str = "",
        *,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        signing_secret: str | None = None,
        timestamp: float | None = None,
    ) -> Delivery:
        """Type ``command text`` in ``channel_id`` as ``user_id``."""
        fields, response_url, trigger_id = self._command(user_id, channel_id, command, text)
        delivery = await self.post_signed(
            urlencode(fields),
            retry_num=retry_num,
            retry_reason=retry_reason,
            signing_secret=signing_secret,
            timestamp=timestamp,
        )
        return _with_urls(delivery, response_url, trigger_id)

    # ------------------------------------------------------------------ interactions

    async def click(
        self,
        user_id: str,
        message: Message,
        action_id: str,
        *,
        value: str | None = None,
        block_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        signing_secret: str | None = None,
        timestamp: float | None = None,
    ) -> Delivery:
        """Click the button ``action_id`` in ``message`` (``value`` overrides the button's)."""
        payload, response_url, trigger_id = self._click(
            user_id, message, action_id, value, block_id
        )
        return await self._send_block_action(
            payload,
            response_url,
            trigger_id,
            retry_num=retry_num,
            retry_reason=retry_reason,
            signing_secret=signing_secret,
            timestamp=timestamp,
        )

    async def select_checkboxes(
        self,
        user_id: str,
        message: Message,
        action_id: str,
        selected: Sequence[str],
        *,
        block_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        signing_secret: str | None = None,
        timestamp: float | None = None,
    ) -> Delivery:
        """Leave exactly the options whose values are in ``selected`` ticked."""
        payload, response_url, trigger_id = self._tick(
            user_id, message, action_id, selected, block_id
        )
        return await self._send_block_action(
            payload,
            response_url,
            trigger_id,
            retry_num=retry_num,
            retry_reason=retry_reason,
            signing_secret=signing_secret,
            timestamp=timestamp,
        )

    async def _send_block_action(
        self,
        payload: JsonDict,
        response_url: str,
        trigger_id: str,
        *,
        retry_num: int | None,
        retry_reason: str | None,
        signing_secret: str | None,
        timestamp: float | None,
    ) -> Delivery:
        delivery = await self.send_interaction(
            payload,
            retry_num=retry_num,
            retry_reason=retry_reason,
            signing_secret=signing_secret,
            timestamp=timestamp,
        )
        return _with_urls(delivery, response_url, trigger_id)

    async def send_interaction(
        self,
        payload: JsonDict,
        *,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        signing_secret: str | None = None,
        timestamp: float | None = None,
    ) -> Delivery:
        """Send any interaction payload (``view_submission``…) as ``payload=<json>``."""
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
        return await self.post_signed(
            body,
            retry_num=retry_num,
            retry_reason=retry_reason,
            signing_secret=signing_secret,
            timestamp=timestamp,
        )

    # ------------------------------------------------------------------ transport

    async def post_signed(
        self,
        body: str,
        *,
        content_type: str = FORM,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        signing_secret: str | None = None,
        timestamp: float | None = None,
    ) -> Delivery:
        """POST ``body`` to the request URL with Slack's signature headers."""
        ts = str(int(time.time() if timestamp is None else timestamp))
        secret = self.signing_secret if signing_secret is None else signing_secret
        signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
        assert signature is not None
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        started = time.perf_counter()
        async with self._session.post(
            self.request_url,
            data=body.encode(),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        ) as response:
            text = await response.text()
            elapsed = time.perf_counter() - started
            return Delivery(
                status=response.status,
                body=text,
                elapsed=elapsed,
                headers=dict(response.headers),
            )


class SocketModeUser(_PlatformSide):
    """Sends the same commands and interactions as :class:`SlackUser`, as envelopes over
    the app's Socket Mode connection to the workspace (``workspace.socket_mode``).

    Each call waits for the app's ack, or for Slack's 3 s to pass; the envelope, ack and
    latency are also kept in ``workspace.socket_mode.envelopes``.
    """

    def __init__(
        self,
        workspace: SandboxWorkspace,
        *,
        verification_token: str = "sandbox-verification-token",
    ) -> None:
        super().__init__(workspace, verification_token)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def send_command(
        self, user_id: str, channel_id: str, command: str, text: str = ""
    ) -> SocketDelivery:
        """Type ``command text`` in ``channel_id`` as ``user_id``."""
        fields, response_url, trigger_id = self._command(user_id, channel_id, command, text)
        envelope = await self.workspace.socket_mode.deliver(
            "slash_commands", dict(fields), accepts_response_payload=True
        )
        return SocketDelivery.of(envelope, response_url, trigger_id)

    async def click(
        self,
        user_id: str,
        message: Message,
        action_id: str,
        *,
        value: str | None = None,
        block_id: str | None = None,
    ) -> SocketDelivery:
        """Click the button ``action_id`` in ``message`` (``value`` overrides the button's)."""
        payload, response_url, trigger_id = self._click(
            user_id, message, action_id, value, block_id
        )
        return await self._send(payload, response_url, trigger_id)

    async def select_checkboxes(
        self,
        user_id: str,
        message: Message,
        action_id: str,
        selected: Sequence[str],
        *,
        block_id: str | None = None,
    ) -> SocketDelivery:
        """Leave exactly the options whose values are in ``selected`` ticked."""
        payload, response_url, trigger_id = self._tick(
            user_id, message, action_id, selected, block_id
        )
        return await self._send(payload, response_url, trigger_id)

    async def send_interaction(self, payload: JsonDict) -> SocketDelivery:
        """Send any interaction payload (``view_submission``…) as an ``interactive`` envelope."""
        return await self._send(payload, None, None)

    async def send_event(
        self, event: JsonDict, *, retry_attempt: int = 0, retry_reason: str = ""
    ) -> SocketDelivery:
        """Send an Events API ``event`` (``{"type": "app_mention", ...}``) wrapped in its
        ``event_callback``, as an ``events_api`` envelope."""
        ws = self.workspace
        now = time.time()
        event = {"event_ts": f"{now:.6f}", **event}
        payload: JsonDict = {
            "token": self.verification_token,
            "team_id": ws.team_id,
            "api_app_id": ws.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(now),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": ws.team_id,
                    "user_id": ws.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        envelope = await ws.socket_mode.deliver(
            "events_api",
            payload,
            accepts_response_payload=False,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
        )
        return SocketDelivery.of(envelope, None, None)

    async def _send(
        self, payload: JsonDict, response_url: str | None, trigger_id: str | None
    ) -> SocketDelivery:
        # Only these interactions can be answered in the ack (view_submission's
        # response_action, block_suggestion's options); block_actions cannot.
        accepts = payload.get("type") in ("view_submission", "block_suggestion")
        envelope = await self.workspace.socket_mode.deliver(
            "interactive", payload, accepts_response_payload=accepts
        )
        return SocketDelivery.of(envelope, response_url, trigger_id)


def _with_urls(delivery: Delivery, response_url: str, trigger_id: str) -> Delivery:
    return Delivery(
        status=delivery.status,
        body=delivery.body,
        elapsed=delivery.elapsed,
        headers=delivery.headers,
        response_url=response_url,
        trigger_id=trigger_id,
    )


def _find_element(
    message: Message, action_id: str, block_id: str | None, kind: str
) -> tuple[JsonDict, JsonDict]:
    if message.deleted:
        raise LookupError(f"message {message.ts} was deleted")
    for block in message.blocks:
        if block_id is not None and block.get("block_id") != block_id:
            continue
        for element in iter_elements(block):
            if element.get("action_id") == action_id and element.get("type") == kind:
                return block, element
    raise LookupError(f"no {kind} with action_id {action_id!r} in message {message.ts}")
