"""Telling the emergency contacts: people by direct message, user groups by a mention.

The services decide who is told and record it in the audit log; how a message reaches a
person is the `Notifier` the caller hands in (the Slack handlers implement it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from services.environments import Contacts
from services.errors import RollbackError
from services.run_store import RunStore

log = logging.getLogger(__name__)


class Notice(StrEnum):
    REQUESTED = "requested"
    ESCALATED = "escalated"
    EXPIRED = "expired"
    FINISHED = "finished"
    RECOVERED = "recovered"  # its process died; the environment was brought back
    DEGRADED = "degraded"  # health failing while the environment is watched after it
    HEALTHY_AGAIN = "healthy_again"  # and passing again


class Notifier(Protocol):
    async def message_user(self, user: str, text: str) -> None:
        """Send `text` to one person directly."""

    async def mention_usergroups(self, channel: str, usergroups: Sequence[str], text: str) -> None:
        """Post `text` in `channel`, mentioning the user groups."""


@dataclass(frozen=True)
class Notified:
    users: tuple[str, ...]
    usergroups: tuple[str, ...]
    failed: tuple[str, ...]  # "who: why", one per target not reached


async def notify_contacts(
    store: RunStore,
    notifier: Notifier,
    *,
    run_id: str,
    contacts: Contacts,
    notice: Notice,
    text: str,
    channel: str,
    requested_by: str | None = None,
) -> Notified:
    """Tell the contacts for `notice` (escalation: the escalation contacts; expiry: the
    requester too); never raises on a contact that cannot be reached, records who was told
    in the audit log."""
    escalation = notice is Notice.ESCALATED
    users = contacts.escalation_users if escalation else contacts.users
    if notice is Notice.EXPIRED and requested_by and requested_by not in users:
        users = (requested_by, *users)
    groups = contacts.escalation_usergroups if escalation else contacts.usergroups
    told: list[str] = []
    failed: list[str] = []
    for user in users:
        try:
            await notifier.message_user(user, text)
            told.append(user)
        except (RollbackError, OSError) as error:
            log.warning("could not notify %s about %s: %s", user, run_id, error)
            failed.append(f"{user}: {error}")
    mentioned: tuple[str, ...] = ()
    if groups:
        try:
            await notifier.mention_usergroups(contacts.channel or channel, groups, text)
            mentioned = tuple(groups)
        except (RollbackError, OSError) as error:
            log.warning("could not mention %s about %s: %s", groups, run_id, error)
            failed.append(f"{', '.join(groups)}: {error}")
    result = Notified(tuple(told), mentioned, tuple(failed))
    await store.append_event(
        run_id,
        "notified",
        detail={
            "notice": notice.value,
            "users": list(result.users),
            "usergroups": list(result.usergroups),
            "failed": list(result.failed),
        },
    )
    return result
