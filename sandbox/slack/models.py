"""Typed state of the sandbox Slack workspace."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class User:
    """A workspace member (``U…``)."""

    id: str
    name: str
    real_name: str = ""
    is_bot: bool = False
    is_admin: bool = False
    tz: str = "UTC"

    def to_api(self, team_id: str) -> JsonDict:
        real_name = self.real_name or self.name
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "deleted": False,
            "real_name": real_name,
            "tz": self.tz,
            "is_admin": self.is_admin,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "profile": {
                "real_name": real_name,
                "display_name": self.name,
                "team": team_id,
            },
        }


@dataclass(frozen=True)
class UserGroup:
    """A user group (``S…``), mentioned as ``<!subteam^S…>``."""

    id: str
    handle: str
    users: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class Channel:
    """A conversation: public channel ``C…`` or direct message ``D…`` (``user`` is set)."""

    id: str
    name: str
    members: frozenset[str] | None = None
    """``None`` means every workspace member is in the channel."""
    user: str | None = None
    """For a DM channel, the person the bot talks to."""
    private: bool = False
    """A private channel: who is not in it cannot see it (``channel_not_found``)."""

    @property
    def is_im(self) -> bool:
        return self.user is not None

    def has_member(self, user_id: str) -> bool:
        if self.user is not None:
            return user_id == self.user
        return self.members is None or user_id in self.members

    def to_api(self) -> JsonDict:
        if self.is_im:
            return {"id": self.id, "is_im": True, "user": self.user}
        return {"id": self.id, "name": self.name, "is_channel": True, "is_im": False}


@dataclass(frozen=True)
class MessageEdit:
    """A previous version of a message, kept when it is replaced."""

    at: float
    text: str
    blocks: tuple[JsonDict, ...]
    via: str


@dataclass
class Message:
    """A message as the workspace stores it; updated in place by edits."""

    ts: str
    channel: str
    text: str
    blocks: list[JsonDict]
    user: str | None
    bot_id: str | None = None
    app_id: str | None = None
    thread_ts: str | None = None
    """Set on replies only (and on a parent once it has replies, as Slack does)."""
    reply_broadcast: bool = False
    ephemeral_to: str | None = None
    """The only user who sees this message, for ephemeral messages."""
    via: str = "chat.postMessage"
    posted_at: float = 0.0
    replies: list[Message] = field(default_factory=list)
    edits: list[MessageEdit] = field(default_factory=list)
    deleted: bool = False

    @property
    def is_ephemeral(self) -> bool:
        return self.ephemeral_to is not None

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def is_from_bot(self) -> bool:
        return self.bot_id is not None

    @property
    def edited(self) -> bool:
        return bool(self.edits)

    def to_api(self, team_id: str) -> JsonDict:
        """The message object Slack returns in API responses and interaction payloads."""
        data: JsonDict = {
            "type": "message",
            "text": self.text,
            "ts": self.ts,
            "team": team_id,
        }
        if self.user is not None:
            data["user"] = self.user
        if self.bot_id is not None:
            data["bot_id"] = self.bot_id
            data["app_id"] = self.app_id
        if self.blocks:
            data["blocks"] = copy.deepcopy(self.blocks)
        if self.thread_ts is not None:
            data["thread_ts"] = self.thread_ts
        if self.reply_broadcast:
            data["subtype"] = "thread_broadcast"
        if self.replies:
            data["reply_count"] = len(self.replies)
            data["latest_reply"] = self.replies[-1].ts
        if self.edits:
            data["edited"] = {"user": self.user, "ts": f"{self.edits[-1].at:.6f}"}
        return data


@dataclass(frozen=True)
class ApiCall:
    """One request received by the Web API (or a ``response_url``), as recorded."""

    method: str
    params: JsonDict
    http_method: str
    at: float
    status: int
    error: str | None
    token: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass(frozen=True)
class OpenedView:
    """A modal opened with ``views.open``."""

    id: str
    user: str
    trigger_id: str
    view: JsonDict


@dataclass(frozen=True)
class UserAction:
    """Something a person did in the sandbox (a command, a click), for transcripts."""

    at: float
    user: str
    channel: str
    kind: str
    summary: str
