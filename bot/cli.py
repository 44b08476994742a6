"""`rollback-bot`: the command line (rollback, backups, check-config, history, demo, serve)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from bot import terminal
from bot.environments_file import load_environments, store_problems
from bot.logs import configure_logging, configured_secrets
from bot.resources import open_services
from bot.settings import Settings, load_settings
from services import backups as catalogue
from services import humanize
from services.environments import Environment
from services.errors import BackupError, ConfigError, RollbackError, UnknownEnvironment
from services.undo import expire_old_databases, undo_rollback, undoable_run
from services.workflow import (
    plan_rollback,
    rollback_database,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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
    configure_logging(logging.WARNING, secrets=configured_secrets(settings, environments))
    return settings, environments


def _who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (command line)"


def _confirm(environment: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigError(["stdin is not a terminal: pass --yes to confirm the rollback"])
    answer = input(f"Type the environment name ({environment}) to roll it back: ")
    return answer.strip() == environment


async def cmd_rollback(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    async with open_services(settings, environments) as services:
        interrupted = await services.store.recover_interrupted()
        for run in interrupted:
            print(
                f"warning: run {run.id} of {run.environment} was interrupted during "
                f"'{run.current_step}'; check that environment's state",
                file=sys.stderr,
            )
        plan = await plan_rollback(services, args.environment, args.backup)
        _out(terminal.plan_lines(plan))
        if args.dry_run:
            _out(["", "Dry run: nothing was changed."])
            return EXIT_OK
        if not args.yes and not _confirm(plan.environment.name):
            _out(["Not confirmed; nothing was changed."])
            return EXIT_FAILED
        print()
        view = terminal.StepView()
        result = await rollback_database(services, plan, requested_by=_who(), listener=view)
        _out(terminal.result_lines(result))
        return EXIT_OK if result.ok else EXIT_FAILED


async def cmd_undo(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    async with open_services(settings, environments) as services:
        original = await undoable_run(services, args.environment)
        if original is None:
            services.environment(args.environment)  # unknown environment: its own message
            raise RollbackError(
                f"Nothing to undo for {args.environment}: its last rollback kept no old "
                "database (undo an in-place rollback by rolling back to its safety backup)."
            )
        _out(
            [
                f"Undo run {original.id} of {args.environment} (to {original.backup_name}): "
                f"swap {original.result and original.result.get('old_database')} back in."
            ]
        )
        if not args.yes and not _confirm(args.environment):
            _out(["Not confirmed; nothing was changed."])
            return EXIT_FAILED
        result = await undo_rollback(
            services, args.environment, requested_by=_who(), listener=terminal.StepView()
        )
        _out(terminal.result_lines(result))
        return EXIT_OK if result.ok else EXIT_FAILED


async def cmd_expire(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    async with open_services(settings, environments) as services:
        dropped = await expire_old_databases(services)
    _out([f"dropped {name}" for name in dropped] or ["No old database is past its time."])
    return EXIT_OK


async def cmd_backups(args: argparse.Namespace) -> int:
    _, environments = _load(args)
    if args.environment not in environments:
        raise UnknownEnvironment(args.environment, sorted(environments))
    environment = environments[args.environment]
    found = await catalogue.list_backups(environment)
    _out([f"Backups of {environment.name} in {environment.backups_dir}:", ""])
    _out(terminal.backup_lines(found))
    return EXIT_OK


async def cmd_check_config(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    lines = [f"{settings.rollback_config}: {len(environments)} environment(s) OK"]
    for environment in environments.values():
        found = await catalogue.list_backups(environment)
        newest = (
            f"newest {found[0].name}, {humanize.age(found[0].age_seconds())} old"
            if found
            else "no backups yet"
        )
        lines.append(
            f"  {environment.name}: project {environment.compose_project}, "
            f"database {environment.database_display}, {len(found)} backup(s), {newest}"
        )
    _out(lines)
    return EXIT_OK


async def cmd_history(args: argparse.Namespace) -> int:
    settings, environments = _load(args)
    if args.environment not in environments:
        raise UnknownEnvironment(args.environment, sorted(environments))
    async with open_services(settings, environments) as services:
        runs = await services.store.recent_runs(args.environment, args.limit)
    if not runs:
        _out([f"No rollbacks of {args.environment} yet."])
    for run in runs:
        _out(
            [
                f"{run.requested_at:%Y-%m-%d %H:%M:%S} {run.id} {run.status.value:<18} "
                f"{run.backup_name or '-'}  by {run.requested_by}"
            ]
        )
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

    return await run_demo(rows=args.rows, slack=not args.cli)


async def cmd_serve(args: argparse.Namespace) -> int:
    from bot.app import serve

    settings, environments = _load(args)
    logging.getLogger().setLevel(settings.log_level.upper())
    await serve(settings, environments)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollback-bot",
        description="Roll back a Docker Compose environment's PostgreSQL database, safely.",
    )
    parser.add_argument("--config", help="environments file (default: $ROLLBACK_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    rollback = sub.add_parser("rollback", help="roll an environment back to a backup")
    rollback.add_argument("environment")
    rollback.add_argument("backup", nargs="?", help="backup file name (default: the newest)")
    rollback.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rollback.add_argument("--dry-run", action="store_true", help="print the plan only")
    rollback.set_defaults(handler=cmd_rollback)

    undo = sub.add_parser("undo", help="swap the pre-rollback database back (swap strategy)")
    undo.add_argument("environment")
    undo.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    undo.set_defaults(handler=cmd_undo)

    expire = sub.add_parser(
        "expire-old", help="drop old databases kept past keep_old_database_hours (for cron)"
    )
    expire.set_defaults(handler=cmd_expire)

    listing = sub.add_parser("backups", help="list an environment's backups")
    listing.add_argument("environment")
    listing.set_defaults(handler=cmd_backups)

    check = sub.add_parser("check-config", help="validate the environments file")
    check.set_defaults(handler=cmd_check_config)

    history = sub.add_parser("history", help="the last rollbacks of an environment")
    history.add_argument("environment")
    history.add_argument("--limit", type=int, default=10)
    history.set_defaults(handler=cmd_history)

    demo = sub.add_parser(
        "demo",
        help="an incident played in a sandbox Slack workspace: a real rollback on throwaway "
        "PostgreSQL and containers",
    )
    demo.add_argument("--rows", type=int, default=20_000, help="rows in the demo database")
    demo.add_argument(
        "--cli", action="store_true", help="the same rollback through the command line, no Slack"
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
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except (UnknownEnvironment, BackupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except RollbackError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.WARNING)
    return run(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
