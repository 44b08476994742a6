"""`rollback-bot`: the command line (rollback, backup(s), check-config, history, demo, serve)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from bot import terminal, watch_view
from bot.docker_endpoints import describe_engine
from bot.environments_file import load_environments, store_problems
from bot.logs import configure_logging, configured_secrets
from bot.resources import open_services
from bot.settings import Settings, load_settings
from services import approved_copy, humanize, names, provenance
from services import backups as catalogue
from services.approvals import bind_request, cancel_run
from services.backup_now import DEFAULT_LABEL, take_backup
from services.bundle import Services
from services.code_rollback import plan_code, rollback_code
from services.environments import Environment
from services.errors import (
    BackupError,
    ConfigError,
    InvalidName,
    RollbackError,
    UnknownEnvironment,
)
from services.full_rollback import FullRollbackPlan, rollback_full
from services.git import describe_target
from services.permissions import Action, Actor, NoGroups, authorize
from services.recovery import Recovery, abort_run, interrupted_run, recover_orphans, resume_run
from services.run_store import RunKind
from services.undo import expire_old_databases, undo_rollback, undoable_run
from services.workflow import (
    RollbackResult,
    plan_rollback,
    rollback_database,
)

# Documented in the README: 3 is "you said no", distinct from a rollback that failed.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_CONFIRMED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class ArgumentError(Exception):
    """A bad command line; argparse's own message, shown as one line."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting (subparsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        raise ArgumentError(message)


def _error(message: object) -> None:
    print(f"error: {terminal.shown(message)}", file=sys.stderr)


def _count(maximum: int) -> Callable[[str], int]:
    """An argparse type: a whole number from 1 to `maximum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: '{text}'") from None
        if not 1 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be from 1 to {maximum:,}, not {value}")
        return value

    return parse


def _version() -> str:
    try:
        return metadata.version("rollback-bot")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _out(lines: Sequence[str]) -> None:
    print("\n".join(lines), flush=True)


def _load(args: argparse.Namespace) -> tuple[Settings, dict[str, Environment]]:
    """Settings, then the environments file they name (--config wins over ROLLBACK_CONFIG)."""
    settings = load_settings(**({"rollback_config": Path(args.config)} if args.config else {}))
    environments = load_environments(settings.rollback_config)
    # Every command refuses it (check-config included): a rollback would wipe the store.
    store = settings.database_url.get_secret_value() if settings.database_url else None
    problems = store_problems(store, environments)
    if problems:
        raise ConfigError(problems)
    # From here on no log line carries a configured secret.
    configure_logging(
        logging.WARNING,
        secrets=configured_secrets(settings, environments),
        log_format=settings.log_format,
    )
    return settings, environments


def _who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (command line)"


def _operator() -> Actor:
    """Shell access to the bot's configuration makes an operator (services/permissions.py)."""
    return Actor.command_line(_who())


def _confirm(environment: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigError(["stdin is not a terminal: pass --yes to confirm the rollback"])
    answer = input(f"Type the environment name ({environment}) to roll it back: ")
    return answer.strip() == environment


async def cmd_rollback(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    kind, commit = _rollback_kind(args)
    async with open_services(settings, environments) as services:
        await _recover(services)
        operator = _operator()
        await authorize(
            services,
            NoGroups(),
            action=Action.REQUEST,
            actor=operator,
            environment=args.environment,
        )
        if kind is RunKind.CODE:
            return await _code_rollback(args, services, operator, commit)
        if kind is RunKind.FULL:
            return await _full_rollback(args, services, operator, commit)
        plan = await plan_rollback(services, args.environment, args.backup)
        terminal.show(terminal.plan_lines(plan), terminal.plan_table(plan))
        if not _go_ahead(args, plan.environment.name):
            return EXIT_OK if args.dry_run else EXIT_NOT_CONFIRMED
        with terminal.StepView() as view:
            result = await rollback_database(
                services, plan, requested_by=operator.id, listener=view
            )
        return await _finished(services, args, result)


def _rollback_kind(args: argparse.Namespace) -> tuple[RunKind, str | None]:
    """--code [COMMIT], --full [COMMIT] or neither; the commit checked before anything."""
    if args.code is not None and args.backup is not None:
        raise ConfigError(["a code rollback takes no backup (--full rolls back both)"])
    kind = (
        RunKind.CODE
        if args.code is not None
        else RunKind.FULL
        if args.full is not None
        else RunKind.DATABASE
    )
    given = args.code or args.full
    return kind, names.check_commitish(given) if given else None


def _go_ahead(args: argparse.Namespace, environment: str) -> bool:
    """Dry run: no. Otherwise --yes or the environment's name typed at the prompt."""
    if args.dry_run:
        _out(["", "Dry run: nothing was changed."])
        return False
    if not args.yes and not _confirm(environment):
        _out(["Not confirmed; nothing was changed."])
        return False
    print()
    return True


async def _finished(services: Services, args: argparse.Namespace, result: RollbackResult) -> int:
    _out([*terminal.result_lines(result), *terminal.code_result_lines(result)])
    if result.ok:  # the runbook's "After Rollback": watched for monitor_minutes
        await watch_view.monitor_after_rollback(services, result.run_id, here=args.watch)
    return EXIT_OK if result.ok else EXIT_FAILED


async def _code_rollback(
    args: argparse.Namespace, services: Services, operator: Actor, commit: str | None
) -> int:
    plan = await plan_code(services, args.environment, commit)
    title = f"Code rollback plan for {terminal.shown(plan.environment.name)}"
    rows = terminal.code_plan_rows(plan)
    terminal.show(terminal.rows_lines(title, rows), terminal.rows_table(title, rows))
    if not _go_ahead(args, plan.environment.name):
        return EXIT_OK if args.dry_run else EXIT_NOT_CONFIRMED
    with terminal.StepView() as view:
        result = await rollback_code(services, plan, requested_by=operator.id, listener=view)
    return await _finished(services, args, result)


async def _full_rollback(
    args: argparse.Namespace, services: Services, operator: Actor, commit: str | None
) -> int:
    plan = await bind_request(
        services,
        kind=RunKind.FULL,
        environment=args.environment,
        backup=args.backup,
        commit=commit,
    )
    assert isinstance(plan, FullRollbackPlan)
    environment = plan.database.plan.environment
    title = f"Full rollback plan for {terminal.shown(environment.name)}"
    rows = terminal.full_plan_rows(plan)
    terminal.show(terminal.rows_lines(title, rows), terminal.rows_table(title, rows))
    if not _go_ahead(args, environment.name):
        # The bound plan's copy of the backup is not needed any more.
        await approved_copy.discard_copy(services, environment, plan.database.sha256)
        return EXIT_OK if args.dry_run else EXIT_NOT_CONFIRMED
    with terminal.StepView() as view:
        result = await rollback_full(services, plan, requested_by=operator.id, listener=view)
    return await _finished(services, args, result)


async def _recover(services: Services) -> list[Recovery]:
    """Any command that touches an environment first takes over runs whose process died."""
    recoveries = await recover_orphans(services)
    for recovery in recoveries:
        print(
            f"warning: run {recovery.run_id} of {recovery.environment} was interrupted during "
            f"'{recovery.interrupted_at}' and has been recovered in {recovery.seconds:.1f} s: "
            f"{terminal.shown(recovery.environment_state)}",
            file=sys.stderr,
        )
        for line in (*recovery.actions, *recovery.problems):
            print(f"  - {terminal.shown(line)}", file=sys.stderr)
    if recoveries:
        print("  choose: rollback-bot resume ENV | rollback-bot abort ENV", file=sys.stderr)
    return recoveries


async def cmd_recover(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    async with open_services(settings, environments) as services:
        recoveries = await _recover(services)
    if not recoveries:
        _out(["No interrupted run to recover."])
    return EXIT_FAILED if any(r.problems for r in recoveries) else EXIT_OK


async def cmd_resume(args: argparse.Namespace) -> int:
    return await _act_on_interrupted(args, resume_run, "Resume", Action.RESUME)


async def cmd_abort(args: argparse.Namespace) -> int:
    return await _act_on_interrupted(args, abort_run, "Abort and restore", Action.ABORT)


async def _act_on_interrupted(
    args: argparse.Namespace,
    action: Callable[..., Coroutine[Any, Any, RollbackResult]],
    label: str,
    permission: Action,
) -> int:
    settings, environments = _load(args)
    async with open_services(settings, environments) as services:
        await _recover(services)
        run = await interrupted_run(services, args.environment, args.run)
        operator = _operator()
        await authorize(services, NoGroups(), action=permission, actor=operator, run=run)
        state = (run.result or {}).get("environment_state", "")
        _out([f"{label} run {run.id} of {run.environment} (now: {terminal.shown(state)})."])
        if not args.yes and not _confirm(run.environment):
            _out(["Not confirmed; nothing was changed."])
            return EXIT_NOT_CONFIRMED
        with terminal.StepView() as view:
            result = await action(services, run.id, requested_by=operator.id, listener=view)
        _out(terminal.result_lines(result))
        return EXIT_OK if result.ok else EXIT_FAILED


async def cmd_undo(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    async with open_services(settings, environments) as services:
        await _recover(services)
        original = await undoable_run(services, args.environment, run_id=args.run)
        operator = _operator()
        await authorize(services, NoGroups(), action=Action.UNDO, actor=operator, run=original)
        _out(
            [
                f"Undo run {original.id} of {args.environment} (to {original.backup_name}): "
                f"swap {original.result and original.result.get('old_database')} back in."
            ]
        )
        if not args.yes and not _confirm(args.environment):
            _out(["Not confirmed; nothing was changed."])
            return EXIT_NOT_CONFIRMED
        with terminal.StepView() as view:
            result = await undo_rollback(
                services,
                args.environment,
                requested_by=operator.id,
                listener=view,
                run_id=original.id,
            )
        _out(terminal.result_lines(result))
        return EXIT_OK if result.ok else EXIT_FAILED


async def cmd_watch(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    _environment(environments, args.environment)
    async with open_services(settings, environments) as services:
        if not await watch_view.watch_window(services, args.environment):
            _out([f"No monitoring window of {args.environment} is open."])
    return EXIT_OK


async def cmd_status(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    if args.environment is not None:
        _environment(environments, args.environment)
    async with open_services(settings, environments) as services:
        _out(await watch_view.status_lines(services, args.environment))
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    async with open_services(settings, environments) as services:
        run = await cancel_run(
            services, NoGroups(), environment=args.environment, actor=_operator()
        )
    _out(
        [
            f"Cancelled run {run.id} of {run.environment} (requested by {run.requested_by}, "
            f"{run.status.value.replace('_', ' ')}); nothing was changed."
        ]
    )
    return EXIT_OK


async def cmd_expire(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    async with open_services(settings, environments) as services:
        await _recover(services)  # a dead run's staging database is judged after this
        dropped = await expire_old_databases(services)
    _out([f"dropped {name}" for name in dropped] or ["No old database is past its time."])
    return EXIT_OK


def _environment(environments: dict[str, Environment], name: str) -> Environment:
    names.check_environment_name(name)
    if name not in environments:
        raise UnknownEnvironment(name, sorted(environments))
    return environments[name]


async def cmd_backups(args: argparse.Namespace) -> int:
    _, environments = _load(args)
    environment = _environment(environments, args.environment)
    found = await provenance.list_with_provenance(environment)
    _out([f"Backups of {environment.name} in {terminal.shown(environment.backups_dir)}:", ""])
    terminal.show(terminal.backup_lines(found), terminal.backup_table(found))
    return EXIT_OK


async def cmd_backup(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    # Checked before anything is opened: a bad label touches nothing.
    names.backup_label(args.label if args.label is not None else DEFAULT_LABEL)
    async with open_services(settings, environments) as services:
        await _recover(services)
        operator = _operator()
        await authorize(
            services, NoGroups(), action=Action.BACKUP, actor=operator, environment=args.environment
        )
        taken = await take_backup(
            services, args.environment, label=args.label, requested_by=operator.id
        )
    _out(terminal.taken_backup_lines(taken))
    return EXIT_OK


async def cmd_check_config(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    lines = [f"{settings.rollback_config}: {len(environments)} environment(s) OK"]
    for environment in environments.values():
        found = await catalogue.list_backups(environment)
        default = next((b for b in found if b.default_candidate()), None)
        newest = (
            f"newest {terminal.shown(default.name)}, {humanize.age(default.age_seconds())} old"
            if default
            else "no backups yet"
            if not found
            else "no backup to take by default (only the bot's own dumps, links or future dates)"
        )
        workload = (
            f"stack {environment.stack}"
            if environment.stack is not None
            else f"project {environment.compose_project}"
        )
        lines.append(
            f"  {environment.name}: {workload}{describe_engine(environment)}, "
            f"database {environment.database_display}, {len(found)} backup(s), {newest}"
        )
        if environment.git is not None:
            lines.append(f"    code: {describe_target(environment.git)}")
    _out(lines)
    return EXIT_OK


async def cmd_history(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    _environment(environments, args.environment)
    async with open_services(settings, environments) as services:
        runs = await services.store.recent_runs(args.environment, args.limit)
    if not runs:
        _out([f"No rollbacks of {args.environment} yet."])
    else:
        terminal.show(terminal.history_lines(runs), terminal.history_table(runs))
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace) -> int:
    # The one place bot/ hands over to the sandbox; serving and rolling back never need it.
    try:
        from sandbox.demo import run_demo
    except ImportError as error:
        raise ConfigError(
            [
                f"the demo needs the sandbox package, which is not installed ({error}); "
                "install the project with `pip install .[demo]`"
            ]
        ) from error

    return await run_demo(
        rows=args.rows,
        slack=not args.cli,
        web_port=(args.port or 0) if args.web else None,
        scenario=args.scenario,
    )


async def cmd_serve(args: argparse.Namespace) -> int:
    from bot.app import serve

    settings, environments = _load(args)
    logging.getLogger().setLevel(settings.log_level.upper())
    await serve(settings, environments)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="rollback-bot",
        description="Roll back a Docker Compose environment's PostgreSQL database, safely.",
        epilog="Exit codes: 0 done, 1 failed, 2 bad input or configuration, "
        "3 not confirmed, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"rollback-bot {_version()}")
    parser.add_argument("--config", help="environments file (default: $ROLLBACK_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    rollback = sub.add_parser(
        "rollback",
        help="roll an environment back to a backup (--code: its code; --full: both)",
        epilog="Put a backup before --full: rollback ENV BACKUP --full [COMMIT].",
    )
    rollback.add_argument("environment")
    rollback.add_argument("backup", nargs="?", help="backup file name (default: the newest)")
    what = rollback.add_mutually_exclusive_group()
    what.add_argument(
        "--code",
        nargs="?",
        const="",
        metavar="COMMIT",
        help="roll the code back instead: revert the last deployed change, or every commit "
        "after COMMIT (revert commits pushed to the deployed branch)",
    )
    what.add_argument(
        "--full",
        nargs="?",
        const="",
        metavar="COMMIT",
        help="the database, then the code: back to COMMIT, by default the commit recorded "
        "with the backup (else the last deployed change is reverted)",
    )
    rollback.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rollback.add_argument("--dry-run", action="store_true", help="print the plan only")
    rollback.add_argument(
        "--watch",
        action="store_true",
        help="after a success, watch health here for monitor_minutes (default: leave it to "
        "a running serve)",
    )
    rollback.set_defaults(handler=cmd_rollback)

    watch = sub.add_parser(
        "watch",
        help="watch an environment's open monitoring window here to its end (taking it over "
        "once no other process watches it)",
    )
    watch.add_argument("environment")
    watch.set_defaults(handler=cmd_watch)

    status = sub.add_parser(
        "status", help="rollbacks in progress and open monitoring windows (who watches them)"
    )
    status.add_argument("environment", nargs="?")
    status.set_defaults(handler=cmd_status)

    undo = sub.add_parser("undo", help="swap the pre-rollback database back (swap strategy)")
    undo.add_argument("environment")
    undo.add_argument("--run", help="the run to undo (default: the last that changed the data)")
    undo.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    undo.set_defaults(handler=cmd_undo)

    recover = sub.add_parser(
        "recover",
        help="take over runs whose bot process died and bring their environments back to a "
        "consistent, running state (for cron; every command does it first)",
    )
    recover.set_defaults(handler=cmd_recover)
    for name, handler, text in (
        ("resume", cmd_resume, "continue an interrupted, recovered run"),
        ("abort", cmd_abort, "put an interrupted run's environment back on its pre-rollback data"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("environment")
        command.add_argument("--run", help="the interrupted run (default: the newest)")
        command.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        command.set_defaults(handler=handler)

    cancel = sub.add_parser(
        "cancel", help="cancel an environment's rollback that has not started executing"
    )
    cancel.add_argument("environment")
    cancel.set_defaults(handler=cmd_cancel)

    expire = sub.add_parser(
        "expire-old", help="drop old databases kept past keep_old_database_hours (for cron)"
    )
    expire.set_defaults(handler=cmd_expire)

    listing = sub.add_parser("backups", help="list an environment's backups")
    listing.add_argument("environment")
    listing.set_defaults(handler=cmd_backups)

    backup = sub.add_parser(
        "backup",
        help="take a named backup now: <label>-YYYYMMDD-HHMMSS.dump with its provenance",
    )
    backup.add_argument("environment")
    backup.add_argument(
        "label", nargs="?", help=f"letters, digits, . _ - (default: {DEFAULT_LABEL})"
    )
    backup.set_defaults(handler=cmd_backup)

    check = sub.add_parser("check-config", help="validate the environments file")
    check.set_defaults(handler=cmd_check_config)

    history = sub.add_parser("history", help="the last rollbacks of an environment")
    history.add_argument("environment")
    history.add_argument(
        "--limit", type=_count(1000), default=10, help="how many runs (1-1000, default 10)"
    )
    history.set_defaults(handler=cmd_history)

    demo = sub.add_parser(
        "demo",
        help="an incident played in a sandbox Slack workspace: a real rollback on throwaway "
        "PostgreSQL and containers",
    )
    demo.add_argument(
        "--rows", type=_count(10_000_000), default=20_000, help="rows in the demo database"
    )
    how = demo.add_mutually_exclusive_group()
    how.add_argument(
        "--cli", action="store_true", help="the same rollback through the command line, no Slack"
    )
    how.add_argument(
        "--web",
        action="store_true",
        help="serve the sandbox workspace as a page in the browser and play it there",
    )
    how.add_argument(
        "--scenario",
        metavar="NAME",
        help="a game day: deployment-failure, migration-failure, failing-health, "
        "approver-never-answers, or all; prints a pass/fail report",
    )
    demo.add_argument(
        "--port", type=_count(65535), help="with --web: the page's port (default: a free one)"
    )
    demo.set_defaults(handler=cmd_demo)

    serve = sub.add_parser(
        "serve", help="run the Slack bot (HTTP on PORT, or Socket Mode with SLACK_APP_TOKEN)"
    )
    serve.set_defaults(handler=cmd_serve)
    return parser


def run(
    handler: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], args: argparse.Namespace
) -> int:
    try:
        return asyncio.run(handler(args))
    except ConfigError as error:
        for problem in error.problems:
            _error(problem)
        return EXIT_USAGE
    except (UnknownEnvironment, BackupError, InvalidName) as error:
        _error(error)
        return EXIT_USAGE
    except RollbackError as error:
        _error(error)
        return EXIT_FAILED
    except OSError as error:  # the file system said no: one line, not a traceback
        _error(f"{error.strerror or error}: {error.filename or ''}".rstrip(": "))
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ArgumentError as error:
        _error(f"{error} (see rollback-bot --help)")
        return EXIT_USAGE
    configure_logging(logging.WARNING)
    return run(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
