"""A disposable PostgreSQL cluster in a temp dir, for the demo, the tests and the bench."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

import asyncpg

from services.pgtools import find_pg_bin

logger = logging.getLogger(__name__)

SUPERUSER = "postgres"
HOST = "127.0.0.1"

FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

_LOG_TAIL_LINES = 30
_BIND_RETRIES = 5


class ThrowawayPostgresError(RuntimeError):
    """The throwaway cluster could not be found, created, started or stopped."""


def find_pg_bin_dir() -> Path:
    """Where initdb and postgres live: $PG_BIN, newest /usr/lib/postgresql/*/bin, or PATH."""
    explicit = os.environ.get("PG_BIN")
    found = find_pg_bin(SERVER_PROGRAMS, explicit)
    if found is not None:
        return found
    if explicit:
        raise ThrowawayPostgresError(
            f"PG_BIN={explicit} does not contain executable initdb and postgres"
        )
    raise ThrowawayPostgresError(
        "PostgreSQL server binaries (initdb, postgres) not found: set PG_BIN, or install "
        "the server package (e.g. apt-get install postgresql)"
    )


SERVER_PROGRAMS = ("initdb", "postgres")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _setting_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


class ThrowawayPostgres:
    """Async context manager: initdb + postgres on 127.0.0.1 at a free port, removed on exit.

    When running as root the cluster runs as `os_user` (default: ``postgres`` if that
    user exists, else ``nobody``), because PostgreSQL refuses to run as root.
    """

    def __init__(
        self,
        *,
        fast: bool = False,
        settings: Mapping[str, str | int | float | bool] | None = None,
        bin_dir: str | Path | None = None,
        os_user: str | None = None,
        base_dir: str | Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self._fast = fast
        self._settings = dict(settings or {})
        self._bin_dir_arg = Path(bin_dir) if bin_dir is not None else None
        self._os_user_arg = os_user
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self.startup_timeout = startup_timeout

        self._bin_dir: Path | None = None
        self._tmp: Path | None = None
        self._port: int | None = None
        self._uid: int | None = None
        self._gid: int | None = None
        self._os_user: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log_file: IO[bytes] | None = None

    # -- properties ------------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise ThrowawayPostgresError("the throwaway cluster has not been started")
        return self._port

    @property
    def bin_dir(self) -> Path:
        """Directory holding the server binaries and pg_dump/pg_restore/psql of the same version."""
        if self._bin_dir is None:
            self._bin_dir = self._bin_dir_arg or find_pg_bin_dir()
        return self._bin_dir

    @property
    def base_path(self) -> Path:
        if self._tmp is None:
            raise ThrowawayPostgresError("the throwaway cluster has not been started")
        return self._tmp

    @property
    def data_dir(self) -> Path:
        return self.base_path / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_path / "socket"

    @property
    def log_path(self) -> Path:
        return self.base_path / "server.log"

    @property
    def os_user(self) -> str:
        """The operating-system user the server runs as."""
        if self._os_user is None:
            raise ThrowawayPostgresError("the throwaway cluster has not been started")
        return self._os_user

    @property
    def pid(self) -> int | None:
        """PID of the postmaster while it runs."""
        if self._proc is None or self._proc.returncode is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def superuser_dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{quote(dbname, safe='')}"

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the cluster on first use, start the server, wait until it accepts connections."""
        if self.running:
            return
        if self._tmp is None:
            await self._init_cluster()
        if self._port is not None:
            # Restart: keep the port, clients hold DSNs pointing at it.
            await self._start_server(self._port)
            return
        for attempt in range(_BIND_RETRIES):
            port = _free_port()
            try:
                await self._start_server(port)
            except _PortInUseError:
                logger.debug("port %d taken before postgres bound it (attempt %d)", port, attempt)
                continue
            self._port = port
            return
        raise ThrowawayPostgresError(f"no free port found after {_BIND_RETRIES} attempts")

    async def stop(self, *, immediate: bool = False, kill_after: float = 30.0) -> None:
        """Stop the server (fast shutdown, or immediate = crash-like); the data dir is kept."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.returncode is None:
                self._signal_postmaster(signal.SIGQUIT if immediate else signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.wait(), kill_after)
                except TimeoutError:
                    logger.warning("postgres did not stop within %.0f s, killing it", kill_after)
                    self._kill_process_group()
                    await proc.wait()
        except BaseException:
            # Cancelled or interrupted while waiting: never leave the server behind.
            self._kill_process_group()
            raise
        finally:
            self._proc = None
            self._close_log()

    async def restart(self, *, immediate: bool = False) -> None:
        """Stop (immediate: no checkpoint, start-up runs crash recovery) and start again."""
        await self.stop(immediate=immediate)
        await self.start()

    async def close(self) -> None:
        """Stop the server and delete the temp dir; safe to call more than once."""
        try:
            await self.stop()
        finally:
            self._kill_process_group()
            self._close_log()
            self._proc = None
            self._port = None
            tmp, self._tmp = self._tmp, None
            if tmp is not None:
                _remove_tree(tmp)

    # -- databases -------------------------------------------------------------------

    async def create_database(self, name: str, owner: str | None = None) -> None:
        sql = f"CREATE DATABASE {_quote_ident(name)}"
        if owner is not None:
            sql += f" OWNER {_quote_ident(owner)}"
        conn = await asyncpg.connect(self.superuser_dsn())
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def drop_database(self, name: str) -> None:
        """Drop the database if it exists, terminating its sessions first."""
        conn = await asyncpg.connect(self.superuser_dsn())
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)}{force}")
        finally:
            await conn.close()

    # -- internals -------------------------------------------------------------------

    def _resolve_os_user(self) -> None:
        if os.geteuid() != 0:
            if (
                self._os_user_arg is not None
                and self._os_user_arg != pwd.getpwuid(os.geteuid()).pw_name
            ):
                raise ThrowawayPostgresError(
                    f"os_user={self._os_user_arg!r} needs root to switch users"
                )
            self._os_user = pwd.getpwuid(os.geteuid()).pw_name
            return
        names = [self._os_user_arg] if self._os_user_arg else ["postgres", "nobody"]
        for name in names:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            if entry.pw_uid == 0:
                continue
            self._os_user, self._uid, self._gid = name, entry.pw_uid, entry.pw_gid
            return
        raise ThrowawayPostgresError(
            f"running as root and none of the users {names} exists to run PostgreSQL as"
        )

    def _process_kwargs(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        kwargs: dict[str, Any] = {"env": env, "cwd": str(self.base_path)}
        if self._uid is not None:
            kwargs.update(user=self._uid, group=self._gid, extra_groups=[])
        return kwargs

    async def _init_cluster(self) -> None:
        bin_dir = self.bin_dir
        self._resolve_os_user()
        self._tmp = Path(
            tempfile.mkdtemp(
                prefix="rollback-bot-pg-", dir=str(self._base_dir) if self._base_dir else None
            )
        )
        self.socket_dir.mkdir(mode=0o700)
        if self._uid is not None and self._gid is not None:
            for path in (self._tmp, self.socket_dir):
                os.chown(path, self._uid, self._gid)
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            str(bin_dir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            **self._process_kwargs(),
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            raise ThrowawayPostgresError(
                f"initdb failed (exit {proc.returncode}) as user {self._os_user}:\n"
                + _tail(output.decode(errors="replace"))
            )
        logger.debug("initdb took %.2f s", time.monotonic() - started)

    def _server_args(self, port: int) -> list[str]:
        settings: dict[str, str] = {
            "listen_addresses": HOST,
            "port": str(port),
            "unix_socket_directories": str(self.socket_dir),
            "logging_collector": "off",
        }
        if self._fast:
            settings.update(FAST_SETTINGS)
        settings.update({k: _setting_value(v) for k, v in self._settings.items()})
        args = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        return args

    async def _start_server(self, port: int) -> None:
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._log_file = self.log_path.open("ab")
        # Own session: Ctrl-C in a terminal reaches us, not the server, and the whole
        # server (postmaster and its children) can be killed as one process group.
        self._proc = await asyncio.create_subprocess_exec(
            *self._server_args(port),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            **self._process_kwargs(),
        )
        try:
            await self._wait_ready(port, log_offset)
        except BaseException:
            await self.stop(immediate=True, kill_after=10)
            raise

    async def _wait_ready(self, port: int, log_offset: int) -> None:
        assert self._proc is not None
        started = time.monotonic()
        deadline = started + self.startup_timeout
        last_error: BaseException | None = None
        while True:
            if self._proc.returncode is not None:
                log = self._read_log(log_offset)
                if "Address already in use" in log:
                    raise _PortInUseError(port)
                raise ThrowawayPostgresError(
                    f"postgres exited with code {self._proc.returncode} during start-up; "
                    f"server log ({self.log_path}):\n{_tail(log)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ThrowawayPostgresError(
                    f"postgres did not accept connections on {HOST}:{port} within "
                    f"{self.startup_timeout:.0f} s (last error: {last_error!r}); server log:\n"
                    + _tail(self._read_log(log_offset))
                )
            try:
                conn = await asyncpg.connect(
                    host=HOST,
                    port=port,
                    user=SUPERUSER,
                    database="postgres",
                    timeout=min(2.0, max(remaining, 0.1)),
                )
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                last_error = exc
                await asyncio.sleep(0.05)
                continue
            await conn.close()
            logger.debug("postgres ready on port %d after %.2f s", port, time.monotonic() - started)
            return

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError as exc:
            return f"(server log unreadable: {exc})"

    def _signal_postmaster(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, sig)

    def _kill_process_group(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


class _PortInUseError(ThrowawayPostgresError):
    pass


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty)"


def _remove_tree(path: Path) -> None:
    # Killed children may still be exiting for a moment; retry briefly, then give up loudly.
    for _ in range(20):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.05)
    logger.warning("could not remove throwaway PostgreSQL directory %s", path)
