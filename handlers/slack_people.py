"""The services' Directory and Notifier, implemented with Slack's Web API."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers.messages.text import mention
from services.errors import NotificationError, RollbackError


class SlackDirectory:
    """User-group membership from `usergroups.users.list`, cached for `ttl` seconds."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    async def usergroup_members(self, usergroup: str) -> frozenset[str]:
        cached = self._cache.get(usergroup)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        try:
            response = await self._client.usergroups_users_list(usergroup=usergroup)
        except SlackApiError as error:
            raise RollbackError(
                f"Cannot read the members of user group {usergroup}: "
                f"{error.response.get('error', error)}"
            ) from error
        members = frozenset(str(u) for u in response.get("users") or [])
        self._cache[usergroup] = (self._clock() + self._ttl, members)
        return members


class SlackNotifier:
    """Direct messages through `conversations.open`; user groups mentioned in a channel."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def message_user(self, user: str, text: str) -> None:
        try:
            opened = await self._client.conversations_open(users=user)
            channel = opened["channel"]["id"]
            await self._client.chat_postMessage(channel=channel, text=text)
        except SlackApiError as error:
            raise NotificationError(str(error.response.get("error", error))) from error

    async def mention_usergroups(self, channel: str, usergroups: Sequence[str], text: str) -> None:
        groups = " ".join(mention(g) for g in usergroups)
        try:
            await self._client.chat_postMessage(channel=channel, text=f"{groups} {text}")
        except SlackApiError as error:
            raise NotificationError(str(error.response.get("error", error))) from error
