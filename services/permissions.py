"""Who may do what: one table from every action to the roles allowed to do it.

Slack checks it in one middleware (handlers/listeners.py), the command line and the
services through the same `authorize`; an action missing from the table is denied.

The command line: whoever can run `rollback-bot` on the bot's host holds its environments
file and database passwords, so shell access makes an *operator*. Operators may do what
the command line offers (request, backup, cancel, undo, resume, abort, the read-only
commands); their typed confirmation stands in for Slack's approvals, and the audit log
names them (``user@host (command line)``). Slack roles never apply to them, nor the
operator role to anyone in Slack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from services.bundle import Services
from services.environments import Environment
from services.errors import PermissionDenied
from services.run_store import RunRecord


class Directory(Protocol):
    """Who is in a user group (S…); implemented by the chat side, cached briefly."""

    async def usergroup_members(self, usergroup: str) -> frozenset[str]: ...


class Action(StrEnum):
    REQUEST = "request"
    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"
    TICK = "tick"  # a person's item of the rollback checklist
    UNDO = "undo"
    RESUME = "resume"  # an interrupted run
    ABORT = "abort"  # an interrupted run: restore and stop there
    BACKUP = "backup"  # take a named backup now (reads the live database, writes a file)
    RETRY_CODE = "retry_code"  # a full rollback's code half, after it failed
    UNDO_DATABASE = "undo_database"  # a full rollback's database half, its code half failed
    STATUS = "status"
    HISTORY = "history"
    BACKUPS = "backups"
    HELP = "help"


class Role(StrEnum):
    RUN_REQUESTER = "the run's requester"
    APPROVER = "the environment's approvers"
    REQUESTER = "the environment's requesters"
    CONTACT = "the environment's contacts"
    ANYONE = "anyone in the workspace"
    OPERATOR = "an operator on the command line"


@dataclass(frozen=True)
class Rule:
    roles: frozenset[Role]
    what: str  # completes "You may not …"
    refusal: str  # why not, for someone holding none of the roles ({env}: the environment)
    own_run_refused: bool = False  # no self-approval: the run's requester is refused
    gated: bool = False  # needs the policy's approvals, like the rollback (approve_action)


def _rule(*roles: Role, what: str, refusal: str, **flags: bool) -> Rule:
    return Rule(frozenset(roles), what, refusal, **flags)


_APPROVER_ONLY = "you are not an approver of {env}"
_READ = (Role.ANYONE, Role.OPERATOR)


def _changes_again(what: str, *roles: Role) -> Rule:
    """An action that changes the environment again after its rollback: the same
    approvals as the rollback itself, never by the run's requester."""
    return _rule(
        Role.APPROVER, *roles, what=what, refusal=_APPROVER_ONLY, own_run_refused=True, gated=True
    )


PERMISSIONS: Mapping[Action, Rule] = MappingProxyType(
    {
        Action.REQUEST: _rule(
            Role.REQUESTER,
            Role.OPERATOR,
            what="request a rollback of {env}",
            refusal="you are not one of its requesters",
        ),
        Action.APPROVE: _rule(
            Role.APPROVER,
            what="approve this rollback",
            refusal=_APPROVER_ONLY,
            own_run_refused=True,
        ),
        Action.REJECT: _rule(Role.APPROVER, what="reject this rollback", refusal=_APPROVER_ONLY),
        Action.CANCEL: _rule(
            Role.RUN_REQUESTER,
            Role.APPROVER,
            Role.OPERATOR,
            what="cancel this rollback",
            refusal="only the requester or an approver may",
        ),
        # Ticks are the incident's record: the people running it and those told about it.
        Action.TICK: _rule(
            Role.RUN_REQUESTER,
            Role.APPROVER,
            Role.CONTACT,
            what="tick this rollback's checklist",
            refusal="only the requester, the approvers and the contacts of {env} may",
        ),
        # Undoing, resuming or aborting changes the live database again: the same
        # approvals as the rollback itself.
        Action.UNDO: _changes_again("undo this rollback", Role.OPERATOR),
        Action.RESUME: _changes_again("resume this rollback", Role.OPERATOR),
        Action.ABORT: _changes_again("abort this rollback", Role.OPERATOR),
        # A backup changes nothing but the backups folder: whoever may request a rollback.
        Action.BACKUP: _rule(
            Role.REQUESTER,
            Role.OPERATOR,
            what="take a backup of {env}",
            refusal="you are not one of its requesters",
        ),
        # After a full rollback's code half failed: push the approved plan again, or put
        # the database back; each changes the environment again, as the rollback did.
        Action.RETRY_CODE: _changes_again("retry this code rollback"),
        Action.UNDO_DATABASE: _changes_again("undo this database rollback"),
        Action.STATUS: _rule(*_READ, what="see the status", refusal="reading is not allowed"),
        Action.HISTORY: _rule(*_READ, what="see the history", refusal="reading is not allowed"),
        Action.BACKUPS: _rule(*_READ, what="list the backups", refusal="reading is not allowed"),
        Action.HELP: _rule(*_READ, what="see the help", refusal="reading is not allowed"),
    }
)


@dataclass(frozen=True)
class Actor:
    """Who acts: a Slack user ID, or an operator on the command line."""

    id: str
    operator: bool = False

    @classmethod
    def command_line(cls, who: str) -> Actor:
        return cls(who, operator=True)


class NoGroups:
    """The command line's Directory: operators need no user-group lookups."""

    async def usergroup_members(self, usergroup: str) -> frozenset[str]:
        return frozenset()


async def is_one_of(user: str, principals: Sequence[str], directory: Directory) -> bool:
    """Is `user` one of these user IDs, or in one of these user groups (S…)?"""
    if user in principals and not user.startswith("S"):  # a group's ID is no person's
        return True
    for principal in principals:
        if principal.startswith("S") and user in await directory.usergroup_members(principal):
            return True
    return False


async def _holds(
    role: Role,
    actor: Actor,
    environment: Environment | None,
    run: RunRecord | None,
    directory: Directory,
) -> bool:
    if role is Role.ANYONE:
        return True
    if actor.operator or role is Role.OPERATOR:
        return actor.operator and role is Role.OPERATOR
    if role is Role.RUN_REQUESTER:
        return run is not None and actor.id == run.requested_by
    if environment is None:
        return False
    policy, contacts = environment.approval, environment.contacts
    if role is Role.APPROVER:  # empty: anyone (the requester excluded by own_run_refused)
        return not policy.approvers or await is_one_of(actor.id, policy.approvers, directory)
    if role is Role.REQUESTER:  # empty: anyone in the workspace
        return not policy.requesters or await is_one_of(actor.id, policy.requesters, directory)
    people = (*contacts.users, *contacts.escalation_users)
    groups = (*contacts.usergroups, *contacts.escalation_usergroups)
    return await is_one_of(actor.id, (*people, *groups), directory)


def _allowed(rule: Rule, environment: Environment | None, run: RunRecord | None) -> list[str]:
    """The people and groups who may, for the refusal message."""
    if environment is None:
        return []
    named: list[str] = []
    if Role.RUN_REQUESTER in rule.roles and run is not None:
        named.append(run.requested_by)
    if Role.REQUESTER in rule.roles:
        named += environment.approval.requesters
    if Role.APPROVER in rule.roles:
        named += environment.approval.approvers
    if Role.CONTACT in rule.roles:
        contacts = environment.contacts
        named += [*contacts.users, *contacts.usergroups]
    return list(dict.fromkeys(named))


async def authorize(
    services: Services,
    directory: Directory,
    *,
    action: Action | str,
    actor: Actor,
    environment: str | None = None,
    run: RunRecord | None = None,
) -> Rule:
    """The rule that lets `actor` do `action` (on `run`, or in `environment`);
    PermissionDenied otherwise, and for any action the table does not name."""
    # Only the enum: a string from a payload ("help" as an action_id) never matches a row.
    rule = PERMISSIONS.get(action) if isinstance(action, Action) else None
    if rule is None:
        raise PermissionDenied(actor.id, f"do '{action}'", "it is not an action this bot knows")
    name = run.environment if run is not None else environment
    env = services.environment(name) if name is not None else None  # UnknownEnvironment
    what = rule.what.format(env=env.name if env else "it")
    if (
        rule.own_run_refused
        and not actor.operator  # the command line has no approvals to give (see above)
        and run is not None
        and env is not None
        and actor.id == run.requested_by
        and not env.approval.allow_self_approval
    ):
        raise PermissionDenied(actor.id, what, "you requested it; someone else must approve it")
    for role in rule.roles:
        if await _holds(role, actor, env, run, directory):
            return rule
    raise PermissionDenied(
        actor.id,
        what,
        rule.refusal.format(env=env.name if env else "it"),
        allowed=tuple(_allowed(rule, env, run)),
    )
