"""A local Slack workspace: the Web API and ``response_url`` endpoints on a free port.

Speaks enough of Slack's Web API for slack_sdk's ``AsyncWebClient`` (and so Bolt) to run
against it, keeps what a person in the workspace would see, and records every call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn, Self, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web

from sandbox.slack.blocks import (
    MAX_MESSAGE_BLOCKS,
    MAX_VIEW_BLOCKS,
    InvalidBlocksError,
    decode_blocks,
    normalise_blocks,
    validate_blocks,
)
from sandbox.slack.models import (
    ApiCall,
    Channel,
    JsonDict,
    Message,
    MessageEdit,
    OpenedView,
    User,
    UserAction,
    UserGroup,
)
from sandbox.slack.ratelimit import DEFAULT_RATE_LIMITS, RateLimit, RateLimiter
from sandbox.slack.socket_mode import SocketModeServer

T = TypeVar("T")

MAX_TEXT_LENGTH = 40_000
BOT_SCOPES = "commands,chat:write,chat:write.public,im:write,users:read,usergroups:read"
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
"""Methods called with the app-level token (``xapp-``) instead of the bot token."""
_REDACTED = "(redacted)"


class SlackApiFailure(Exception):
    """Raised inside a method handler; becomes ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _fail(error: str, **extra: Any) -> NoReturn:
    raise SlackApiFailure(error, **extra)


def _flag(value: object) -> bool:
    return value in (True, 1, "1", "true", "True")


@dataclass
class _ResponseUrl:
    id: str
    channel: str
    user: str
    created: float
    original: Message | None
    uses: int = 0


@dataclass
class _Trigger:
    user: str
    created: float
    used: bool = False


class SandboxWorkspace:
    """A Slack workspace emulator: use as ``async with SandboxWorkspace(...) as ws``.

    ``base_url`` goes to ``AsyncWebClient(base_url=...)``. State is read with
    :meth:`messages`, :meth:`thread`, :meth:`ephemerals`, :meth:`dms` and
    :meth:`wait_for`; every request is in :attr:`calls`.
    """

    def __init__(
        self,
        *,
        bot_token: str,
        app_token: str | None = None,
        users: Iterable[User] = (),
        usergroups: Iterable[UserGroup] = (),
        channels: Iterable[Channel] = (),
        team_id: str = "T0SANDBOX",
        team_name: str = "Sandbox",
        team_domain: str = "sandbox",
        enterprise_id: str = "",
        enterprise_name: str = "",
        bot_user_id: str = "U0BOT",
        bot_name: str = "rollback-bot",
        bot_id: str = "B0BOT",
        app_id: str = "A0SANDBOX",
        rate_limits: Mapping[str, RateLimit | None] | None = None,
        rate_limiting: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """``rate_limits`` overrides :data:`DEFAULT_RATE_LIMITS` per method (``None`` lifts one);
        with an ``app_token`` (``xapp-…``) the app can connect in Socket Mode
        (:attr:`socket_mode`)."""
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.team_name = team_name
        self.team_domain = team_domain
        self.enterprise_id = enterprise_id
        self.enterprise_name = enterprise_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.host = host
        self.port = port

        self.trigger_id_ttl = 3.0
        self.response_url_ttl = 30 * 60.0
        self.response_url_max_uses = 5

        self.users: dict[str, User] = {}
        self.usergroups: dict[str, UserGroup] = {}
        self.channels: dict[str, Channel] = {}
        self.calls: list[ApiCall] = []
        self.views: list[OpenedView] = []
        self.user_actions: list[UserAction] = []
        self.ratelimited_count = 0
        self.ratelimited_by_method: Counter[str] = Counter()
        self.revision = 0
        """Counts state changes: a viewer redraws when it moves."""

        self.add_user(User(id=bot_user_id, name=bot_name, real_name="Rollback Bot", is_bot=True))
        for user in users:
            self.add_user(user)
        for group in usergroups:
            self.add_usergroup(group)
        for channel in channels:
            self.add_channel(channel)

        limits: dict[str, RateLimit | None] = dict(DEFAULT_RATE_LIMITS)
        limits.update(rate_limits or {})
        self.rate_limiter = RateLimiter(limits)
        self.rate_limiter.enabled = rate_limiting

        self._history: dict[str, list[Message]] = {}
        self._by_ts: dict[tuple[str, str], Message] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._last_ts = 0.0
        self._ids = itertools.count(1)
        self._changed: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self.socket_mode = SocketModeServer(self)
        self._methods: dict[str, Callable[[JsonDict], JsonDict]] = {
            "apps.connections.open": self.socket_mode.connections_open,
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.open": self._conversations_open,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "views.open": self._views_open,
        }

    # ------------------------------------------------------------------ life cycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Listen on ``host``:``port`` (a free port when 0)."""
        if self._runner is not None:
            raise RuntimeError("the sandbox workspace is already running")
        self._changed = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{id}", self._handle_response_url)
        self.socket_mode.add_routes(app.router)
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

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await self.socket_mode.close_connections()
            await runner.cleanup()

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """For ``AsyncWebClient(base_url=...)``."""
        return f"{self.origin}/api/"

    # ------------------------------------------------------------------ setup

    def add_user(self, user: User) -> User:
        self.users[user.id] = user
        return user

    def add_usergroup(self, group: UserGroup) -> UserGroup:
        self.usergroups[group.id] = group
        return group

    def add_channel(self, channel: Channel) -> Channel:
        self.channels[channel.id] = channel
        return channel

    def user_by_name(self, name: str) -> User:
        for user in self.users.values():
            if user.name == name:
                return user
        raise KeyError(name)

    def channel_by_name(self, name: str) -> Channel:
        name = name.removeprefix("#")
        for channel in self.channels.values():
            if channel.name == name and not channel.is_im:
                return channel
        raise KeyError(name)

    def set_rate_limit(self, method: str, limit: RateLimit | None) -> None:
        """Tighten, loosen or (``None``) lift the limit of one method."""
        self.rate_limiter.set(method, limit)

    # ------------------------------------------------------------------ what people see

    def messages(self, channel: str) -> list[Message]:
        """Messages shown in the channel, oldest first: top level and broadcast replies."""
        return [
            m
            for m in self._history.get(channel, [])
            if not m.deleted and not m.is_ephemeral and (not m.is_reply or m.reply_broadcast)
        ]

    def latest_message(self, channel: str) -> Message | None:
        shown = self.messages(channel)
        return shown[-1] if shown else None

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Replies to the message ``ts`` (not the parent itself), oldest first."""
        parent = self._by_ts.get((channel, ts))
        if parent is None:
            return []
        return [m for m in parent.replies if not m.deleted and not m.is_ephemeral]

    def ephemerals(self, user: str, channel: str | None = None) -> list[Message]:
        """Ephemeral messages shown to ``user``, oldest first."""
        return [
            m
            for history in self._history.values()
            for m in history
            if m.ephemeral_to == user
            and not m.deleted
            and (channel is None or m.channel == channel)
        ]

    def dms(self, user: str) -> list[Message]:
        """Messages in the bot's direct-message channel with ``user``."""
        channel = self._dm_channel_of(user)
        return [] if channel is None else self.messages(channel.id)

    def message(self, channel: str, ts: str) -> Message | None:
        return self._by_ts.get((channel, ts))

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every state change); return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = ", ".join(f"{c.method}:{c.error or c.status}" for c in self.calls[-8:])
                raise TimeoutError(
                    f"condition not met within {timeout}s; last API calls: {recent or 'none'}"
                )
            changed = self._changed or asyncio.Event()
            with contextlib.suppress(TimeoutError):
                # Re-check at least every 50 ms: predicates may look at more than our state.
                await asyncio.wait_for(changed.wait(), min(remaining, 0.05))

    # ------------------------------------------------------------------ for SlackUser

    def issue_trigger_id(self, user: str) -> str:
        trigger_id = f"{next(self._ids)}.{int(time.time())}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = _Trigger(user=user, created=time.monotonic())
        return trigger_id

    def issue_response_url(
        self, *, channel: str, user: str, original: Message | None = None
    ) -> str:
        url_id = secrets.token_urlsafe(12)
        self._response_urls[url_id] = _ResponseUrl(
            id=url_id, channel=channel, user=user, created=time.monotonic(), original=original
        )
        return f"{self.origin}/response/{url_id}"

    def record_user_action(self, user: str, channel: str, kind: str, summary: str) -> None:
        self.user_actions.append(UserAction(time.time(), user, channel, kind, summary))
        self._touch()

    def channel_name(self, channel_id: str) -> str:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise KeyError(channel_id)
        return "directmessage" if channel.is_im else channel.name

    def open_dm(self, user: str) -> Channel:
        """The bot's DM channel with ``user``, created on first use."""
        if user not in self.users:
            _fail("user_not_found")
        channel = self._dm_channel_of(user)
        if channel is None:
            channel = self.add_channel(
                Channel(id=f"D{next(self._ids):08d}", name=f"dm-{user}", user=user)
            )
            self._touch()
        return channel

    # ------------------------------------------------------------------ HTTP

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        token = params.pop("token", None)
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ").strip()

        status, body, headers = self._dispatch(method, params, token)
        self.calls.append(
            ApiCall(
                method=method,
                params=params,
                http_method=request.method,
                at=time.time(),
                status=status,
                error=None if body.get("ok") else str(body.get("error")),
                token=None if token is None else _REDACTED,
            )
        )
        self._touch()
        headers["X-OAuth-Scopes"] = BOT_SCOPES
        return web.json_response(body, status=status, headers=headers)

    def _dispatch(
        self, method: str, params: JsonDict, token: str | None
    ) -> tuple[int, JsonDict, dict[str, str]]:
        handler = self._methods.get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        expected = self.app_token if method in APP_TOKEN_METHODS else self.bot_token
        if token != expected:
            # The other kind of token is a valid token, just not for this method.
            wrong_kind = token in (self.app_token, self.bot_token)
            error = "not_allowed_token_type" if wrong_kind else "invalid_auth"
            return 200, {"ok": False, "error": error}, {}
        channel = params.get("channel")
        retry_after = self.rate_limiter.check(method, channel if isinstance(channel, str) else None)
        if retry_after is not None:
            self.ratelimited_count += 1
            self.ratelimited_by_method[method] += 1
            return (
                429,
                {"ok": False, "error": "ratelimited"},
                {"Retry-After": str(retry_after)},
            )
        try:
            result = handler(params)
        except SlackApiFailure as failure:
            return 200, {"ok": False, "error": failure.error, **failure.extra}, {}
        return 200, {"ok": True, **result}, {}

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        url = self._response_urls.get(request.match_info["id"])
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        status, error = 200, None
        if url is None:
            status, error = 404, "no_such_url"
        elif time.monotonic() - url.created > self.response_url_ttl:
            status, error = 404, "expired_url"
        elif url.uses >= self.response_url_max_uses:
            status, error = 404, "used_url"
        elif not isinstance(payload, dict):
            status, error = 400, "invalid_payload"
        else:
            url.uses += 1
            try:
                self._respond(url, payload)
            except SlackApiFailure as failure:
                status, error = 400, failure.error
        self.calls.append(
            ApiCall(
                method="response_url",
                params=payload if isinstance(payload, dict) else {},
                http_method=request.method,
                at=time.time(),
                status=status,
                error=error,
            )
        )
        self._touch()
        body: JsonDict = {"ok": True} if error is None else {"ok": False, "error": error}
        return web.json_response(body, status=status)

    def _respond(self, url: _ResponseUrl, payload: JsonDict) -> None:
        original = url.original
        if _flag(payload.get("delete_original")):
            if original is None or original.deleted:
                _fail("message_not_found")
            original.deleted = True
            return
        text, blocks = self._content(payload, max_blocks=MAX_MESSAGE_BLOCKS)
        if _flag(payload.get("replace_original")) and original is not None and not original.deleted:
            self._edit(original, text, blocks, via="response_url")
            return
        if payload.get("response_type") == "in_channel":
            message = self._store(
                channel=url.channel,
                text=text or "",
                blocks=blocks or [],
                thread_ts=payload.get("thread_ts"),
                via="response_url",
            )
        else:
            message = self._store(
                channel=url.channel,
                text=text or "",
                blocks=blocks or [],
                thread_ts=payload.get("thread_ts"),
                ephemeral_to=url.user,
                via="response_url",
            )
        if url.original is None:
            # Later replace_original / delete_original act on what this URL posted.
            url.original = message

    # ------------------------------------------------------------------ state changes

    def _touch(self) -> None:
        self.revision += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def _next_ts(self) -> str:
        now = max(time.time(), self._last_ts + 0.000001)
        self._last_ts = now
        return f"{now:.6f}"

    def _dm_channel_of(self, user: str) -> Channel | None:
        for channel in self.channels.values():
            if channel.user == user:
                return channel
        return None

    def _resolve_channel(self, value: object) -> Channel:
        if not isinstance(value, str) or not value:
            _fail("channel_not_found")
        if value in self.channels:
            return self.channels[value]
        if value.startswith(("U", "W")) and value in self.users:
            return self.open_dm(value)
        with contextlib.suppress(KeyError):
            return self.channel_by_name(value)
        _fail("channel_not_found")

    def _content(
        self, params: JsonDict, *, max_blocks: int, required: bool = True
    ) -> tuple[str | None, list[JsonDict] | None]:
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            text = str(text)
        try:
            blocks = decode_blocks(params.get("blocks"))
            if blocks is not None:
                validate_blocks(blocks, max_blocks=max_blocks)
        except InvalidBlocksError as exc:
            _fail("invalid_blocks", errors=exc.errors)
        if required and not text and not blocks and not params.get("attachments"):
            _fail("no_text")
        if text is not None and len(text) > MAX_TEXT_LENGTH:
            _fail("msg_too_long")
        return text, None if blocks is None else normalise_blocks(blocks)

    def _store(
        self,
        *,
        channel: str,
        text: str,
        blocks: list[JsonDict],
        thread_ts: object = None,
        reply_broadcast: bool = False,
        ephemeral_to: str | None = None,
        via: str,
    ) -> Message:
        parent: Message | None = None
        if thread_ts:
            parent = self._by_ts.get((channel, str(thread_ts)))
            if parent is None or parent.is_ephemeral:
                _fail("thread_not_found")
            while parent.is_reply:
                assert parent.thread_ts is not None
                parent = self._by_ts[(channel, parent.thread_ts)]
        message = Message(
            ts=self._next_ts(),
            channel=channel,
            text=text,
            blocks=blocks,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            app_id=self.app_id,
            thread_ts=None if parent is None else parent.ts,
            reply_broadcast=reply_broadcast and parent is not None,
            ephemeral_to=ephemeral_to,
            via=via,
            posted_at=time.time(),
        )
        self._history.setdefault(channel, []).append(message)
        if ephemeral_to is None:
            self._by_ts[(channel, message.ts)] = message
        if parent is not None and ephemeral_to is None:
            parent.thread_ts = parent.ts
            parent.replies.append(message)
        return message

    def _edit(
        self, message: Message, text: str | None, blocks: list[JsonDict] | None, via: str
    ) -> None:
        message.edits.append(
            MessageEdit(at=time.time(), text=message.text, blocks=tuple(message.blocks), via=via)
        )
        if text is not None:
            message.text = text
        if blocks is not None:
            message.blocks = blocks

    def _find(self, params: JsonDict, key: str = "ts") -> tuple[Channel, Message]:
        channel = self._resolve_channel(params.get("channel"))
        message = self._by_ts.get((channel.id, str(params.get(key, ""))))
        if message is None or message.deleted:
            _fail("message_not_found")
        return channel, message

    # ------------------------------------------------------------------ Web API methods

    def _auth_test(self, params: JsonDict) -> JsonDict:
        bot = self.users[self.bot_user_id]
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": bot.name,
            "team_id": self.team_id,
            "user_id": bot.id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: JsonDict) -> JsonDict:
        channel = self._resolve_channel(params.get("channel"))
        if not channel.is_im and not channel.has_member(self.bot_user_id):
            # As Slack: a private channel (or a DM) the bot is not in does not exist for it.
            _fail("channel_not_found" if channel.private else "not_in_channel")
        text, blocks = self._content(params, max_blocks=MAX_MESSAGE_BLOCKS)
        message = self._store(
            channel=channel.id,
            text=text or "",
            blocks=blocks or [],
            thread_ts=params.get("thread_ts"),
            reply_broadcast=_flag(params.get("reply_broadcast")),
            via="chat.postMessage",
        )
        return {"channel": channel.id, "ts": message.ts, "message": message.to_api(self.team_id)}

    def _chat_update(self, params: JsonDict) -> JsonDict:
        channel = self._resolve_channel(params.get("channel"))
        ts = str(params.get("ts", ""))
        if any(m.ts == ts and m.is_ephemeral for m in self._history.get(channel.id, [])):
            _fail("cant_update_message")
        _, message = self._find(params)
        if message.bot_id != self.bot_id:
            _fail("cant_update_message")
        text, blocks = self._content(params, max_blocks=MAX_MESSAGE_BLOCKS)
        self._edit(message, text, blocks, via="chat.update")
        return {
            "channel": channel.id,
            "ts": message.ts,
            "text": message.text,
            "message": message.to_api(self.team_id),
        }

    def _chat_delete(self, params: JsonDict) -> JsonDict:
        channel, message = self._find(params)
        if message.bot_id != self.bot_id:
            _fail("cant_delete_message")
        message.deleted = True
        return {"channel": channel.id, "ts": message.ts}

    def _chat_post_ephemeral(self, params: JsonDict) -> JsonDict:
        channel = self._resolve_channel(params.get("channel"))
        user = str(params.get("user", ""))
        if user not in self.users:
            _fail("user_not_found")
        if not channel.has_member(user):
            _fail("user_not_in_channel")
        text, blocks = self._content(params, max_blocks=MAX_MESSAGE_BLOCKS)
        thread_ts = params.get("thread_ts") or None
        message = self._store(
            channel=channel.id,
            text=text or "",
            blocks=blocks or [],
            ephemeral_to=user,
            via="chat.postEphemeral",
        )
        if thread_ts:
            message.thread_ts = str(thread_ts)
        return {"message_ts": message.ts}

    def _chat_get_permalink(self, params: JsonDict) -> JsonDict:
        channel, message = self._find(params, key="message_ts")
        archive = f"https://{self.team_domain}.slack.com/archives/{channel.id}"
        link = f"{archive}/p{message.ts.replace('.', '')}"
        if message.is_reply:
            link += f"?thread_ts={message.thread_ts}&cid={channel.id}"
        return {"channel": channel.id, "permalink": link}

    def _conversations_open(self, params: JsonDict) -> JsonDict:
        if params.get("channel"):
            channel = self._resolve_channel(params["channel"])
            return {"channel": {"id": channel.id}, "no_op": True, "already_open": True}
        raw = params.get("users") or ""
        users = [u.strip() for u in (raw if isinstance(raw, list) else str(raw).split(","))]
        users = [u for u in users if u and u != self.bot_user_id]
        if not users:
            _fail("users_list_not_supplied")
        if len(users) > 1:
            _fail("sandbox_unsupported", detail="group DMs are not emulated")
        existed = self._dm_channel_of(users[0]) is not None
        channel = self.open_dm(users[0])
        body: JsonDict = {"channel": {"id": channel.id}}
        if existed:
            body["no_op"] = True
            body["already_open"] = True
        if _flag(params.get("return_im")):
            body["channel"] = channel.to_api()
        return body

    def _conversations_history(self, params: JsonDict) -> JsonDict:
        channel = self._resolve_channel(params.get("channel"))
        shown = list(reversed(self.messages(channel.id)))  # newest first, as Slack does
        inclusive = _flag(params.get("inclusive"))
        if params.get("latest"):
            latest = float(params["latest"])
            shown = [
                m for m in shown if float(m.ts) < latest or (inclusive and float(m.ts) == latest)
            ]
        if params.get("oldest"):
            oldest = float(params["oldest"])
            shown = [
                m for m in shown if float(m.ts) > oldest or (inclusive and float(m.ts) == oldest)
            ]
        page, has_more, cursor = _page(shown, params)
        return {
            "messages": [m.to_api(self.team_id) for m in page],
            "has_more": has_more,
            "response_metadata": {"next_cursor": cursor},
        }

    def _conversations_replies(self, params: JsonDict) -> JsonDict:
        channel = self._resolve_channel(params.get("channel"))
        parent = self._by_ts.get((channel.id, str(params.get("ts", ""))))
        if parent is None or parent.deleted:
            _fail("thread_not_found")
        if parent.is_reply:
            assert parent.thread_ts is not None
            parent = self._by_ts[(channel.id, parent.thread_ts)]
        thread = [parent, *self.thread(channel.id, parent.ts)]
        page, has_more, cursor = _page(thread, params)
        return {
            "messages": [m.to_api(self.team_id) for m in page],
            "has_more": has_more,
            "response_metadata": {"next_cursor": cursor},
        }

    def _users_info(self, params: JsonDict) -> JsonDict:
        user = self.users.get(str(params.get("user", "")))
        if user is None:
            _fail("user_not_found")
        return {"user": user.to_api(self.team_id)}

    def _usergroups_users_list(self, params: JsonDict) -> JsonDict:
        group = self.usergroups.get(str(params.get("usergroup", "")))
        if group is None:
            _fail("no_such_subteam")
        return {"users": list(group.users)}

    def _views_open(self, params: JsonDict) -> JsonDict:
        trigger_id = str(params.get("trigger_id", ""))
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            _fail("invalid_trigger_id")
        if trigger.used:
            _fail("exchanged_trigger_id")
        if time.monotonic() - trigger.created > self.trigger_id_ttl:
            _fail("expired_trigger_id")
        view = params.get("view")
        if isinstance(view, str):
            try:
                view = json.loads(view)
            except ValueError:
                _fail("invalid_arguments")
        if not isinstance(view, dict) or view.get("type") not in ("modal", "home"):
            _fail("invalid_arguments")
        try:
            blocks = decode_blocks(view.get("blocks")) or []
            validate_blocks(blocks, max_blocks=MAX_VIEW_BLOCKS)
        except InvalidBlocksError as exc:
            _fail("invalid_arguments", errors=exc.errors)
        trigger.used = True
        stored = dict(view, blocks=normalise_blocks(blocks), id=f"V{next(self._ids):08d}")
        self.views.append(
            OpenedView(id=stored["id"], user=trigger.user, trigger_id=trigger_id, view=stored)
        )
        return {"view": stored}


def _page(items: list[Message], params: JsonDict) -> tuple[list[Message], bool, str]:
    try:
        limit = int(params.get("limit") or 100)
        cursor = str(params.get("cursor") or "")
        start = int(base64.b64decode(cursor).decode().removeprefix("offset:")) if cursor else 0
    except ValueError:
        _fail("invalid_cursor")
    limit = max(1, min(limit, 1000))
    page = items[start : start + limit]
    has_more = start + limit < len(items)
    next_cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode() if has_more else ""
    return page, has_more, next_cursor


async def _read_params(request: web.Request) -> JsonDict:
    """Arguments from the query string and the body, whether form-encoded or JSON."""
    params: JsonDict = dict(request.query)
    if request.method != "POST" or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            params.update(body)
    elif request.content_type == "application/x-www-form-urlencoded":
        raw = await request.text()
        params.update(parse_qsl(raw, keep_blank_values=True))
    else:
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params
