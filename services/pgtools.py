"""Where the PostgreSQL client programs are, and how to hand them a connection safely."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from services import processes
from services.errors import ConfigError, ToolsIncompatible


@dataclass(frozen=True)
class PgTools:
    bin_dir: Path

    @property
    def pg_dump(self) -> str:
        return str(self.bin_dir / "pg_dump")

    @property
    def pg_restore(self) -> str:
        return str(self.bin_dir / "pg_restore")

    @property
    def psql(self) -> str:
        return str(self.bin_dir / "psql")


CLIENT_PROGRAMS = ("pg_dump", "pg_restore", "psql")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())


def find_pg_bin(programs: Sequence[str], explicit: str | None = None) -> Path | None:
    """The folder holding all `programs`: PG_BIN if given, else the newest
    /usr/lib/postgresql/*/bin, else the folder of the first program on PATH."""
    if explicit:
        candidates = [Path(explicit)]
    else:
        versioned = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)
        candidates = list(reversed(versioned))
        on_path = shutil.which(programs[0])
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / program, os.X_OK) for program in programs):
            return directory
    return None


def find_pg_tools(explicit: str | None = None) -> PgTools:
    """The client programs the rollback runs (see `find_pg_bin`)."""
    found = find_pg_bin(CLIENT_PROGRAMS, explicit)
    if found is None:
        where = explicit or "/usr/lib/postgresql/*/bin or PATH"
        raise ConfigError(
            [
                f"PG_BIN: pg_dump, pg_restore and psql not found in {where} "
                "(install postgresql-client)"
            ]
        )
    return PgTools(found)


# Connection parameters libpq reads from the environment, and the variable for each
# (libpq "Environment Variables"); a URL's query parameters pass to the pg tools this way.
LIBPQ_VARIABLES = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "passfile": "PGPASSFILE",
    "channel_binding": "PGCHANNELBINDING",
    "service": "PGSERVICE",
    "servicefile": "PGSERVICEFILE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "requiressl": "PGREQUIRESSL",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "require_auth": "PGREQUIREAUTH",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}
# Parameters that hold a secret: never in a URL that is written down or shown.
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
# The bot's own connections (asyncpg) send unknown query parameters to the server as
# settings, which it refuses. These only tune how libpq connects: asyncpg gets them removed.
LIBPQ_ONLY = frozenset({"connect_timeout", "hostaddr", "load_balance_hosts", "sslsni"})
# These ask for a protection asyncpg cannot give: refused rather than silently weakened.
NOT_FOR_ASYNCPG = frozenset(
    {
        "channel_binding",
        "require_auth",
        "requirepeer",
        "requiressl",
        "sslcompression",
        "sslcertmode",
        "sslcrldir",
        "gssencmode",
        "gssdelegation",
        "servicefile",
    }
)


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def has_password(url: str) -> bool:
    """A password in the user info (`user:secret@`) or the query (`?password=`)."""
    return urlsplit(url).password is not None or any(
        key in SECRET_PARAMETERS for key, _ in _query(url)
    )


def url_problems(url: str) -> list[str]:
    """What makes a database URL unusable (a password aside), one line each: another
    scheme, or a parameter that pg_dump/pg_restore/psql would not receive."""
    problems = []
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        problems.append("must start with postgresql://")
    for key, _ in _query(url):
        if key in NOT_FOR_ASYNCPG:
            problems.append(f"?{key}= is not supported by the bot's own connections (asyncpg)")
        elif key not in LIBPQ_VARIABLES and key not in SECRET_PARAMETERS:
            problems.append(
                f"?{key}= cannot be passed to pg_dump/pg_restore/psql "
                "(no PG* variable; put it in a service file and use ?service=)"
            )
    return problems


def asyncpg_url(url: str) -> str:
    """The URL for asyncpg: without the parameters only libpq understands."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in _query(url) if k not in LIBPQ_ONLY]
    if len(kept) == len(_query(url)):
        return url
    return parts._replace(query=urlencode(kept)).geturl()


def installed_tool_sets(explicit: str | None = None) -> tuple[PgTools, ...]:
    """Every folder holding the client programs: PG_BIN alone if given, else each
    /usr/lib/postgresql/*/bin and the folder of pg_dump on PATH."""
    if explicit:
        folders = [Path(explicit)]
    else:
        folders = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)
        on_path = shutil.which(CLIENT_PROGRAMS[0])
        if on_path:
            folders.append(Path(on_path).resolve().parent)
    found: dict[Path, PgTools] = {}
    for folder in folders:
        if all(os.access(folder / program, os.X_OK) for program in CLIENT_PROGRAMS):
            found.setdefault(folder.resolve(), PgTools(folder))
    return tuple(found.values())


_MAJOR = re.compile(r"\(PostgreSQL\) (\d+)")
_majors: dict[Path, int] = {}


async def tools_major(tools: PgTools) -> int:
    """The major version of a tool set (15 for `pg_dump (PostgreSQL) 15.18`), asked once."""
    if tools.bin_dir not in _majors:
        result = await processes.run([tools.pg_dump, "--version"], timeout=30)
        match = _MAJOR.search(result.stdout)
        if not result.ok or match is None:
            raise ToolsIncompatible(
                f"Cannot tell the version of {tools.pg_dump}: {result.error_text(200)}"
            )
        _majors[tools.bin_dir] = int(match.group(1))
    return _majors[tools.bin_dir]


TRANSACTION_TIMEOUT_MAJOR = 17  # the first server with transaction_timeout


@dataclass(frozen=True)
class ToolChoice:
    """The client tools a run uses, and why: shown in the plan."""

    tools: PgTools
    major: int
    server_major: int

    @property
    def restores_directly(self) -> bool:
        """Whether pg_restore --dbname (the swap's staging restore) works on this server:
        17+ sends `SET transaction_timeout`, which a 15 or 16 server rejects."""
        return not (self.major >= TRANSACTION_TIMEOUT_MAJOR > self.server_major)

    def describe(self) -> str:
        if self.major == self.server_major:
            why = "the server's own version"
        else:
            why = f"the newest installed for a PostgreSQL {self.server_major} server"
        return f"client tools {self.major} ({self.tools.bin_dir}), {why}"


async def choose_tools(
    candidates: Sequence[PgTools], *, server_major: int, archive: Path | None, timeout: float
) -> ToolChoice:
    """A tool set that can work with this server and read this dump, or a clear refusal.
    With no `archive` (a new backup), one that can dump this server.

    pg_dump refuses a server newer than itself (the safety backup and the old database's
    dump would fail after the stop), and pg_restore cannot read an archive written by a
    newer pg_dump; so the server's own major is preferred, else the newest not older than
    the server that reads the archive. (What 17+ tools write that a 15 or 16 server
    rejects is made conditional where their script is relayed, services.database; a
    direct restore, the swap's, cannot be: see ToolChoice.restores_directly.)
    """
    majors = [(await tools_major(tools), tools) for tools in candidates]
    usable = [(major, tools) for major, tools in majors if major >= server_major]
    installed = ", ".join(f"{major} ({tools.bin_dir})" for major, tools in majors) or "none"
    if not usable:
        raise ToolsIncompatible(
            f"The PostgreSQL client tools installed here are older than the server "
            f"(PostgreSQL {server_major}; installed: {installed}): pg_dump cannot back up "
            f"a newer server. Install postgresql-client-{server_major} or point PG_BIN at "
            "its bin folder. Nothing was stopped."
        )
    # The server's own major; else tools on the same side of 17 as the server (see
    # ToolChoice.restores_directly); else the newest.
    usable.sort(
        key=lambda item: (
            item[0] != server_major,
            (item[0] >= TRANSACTION_TIMEOUT_MAJOR) != (server_major >= TRANSACTION_TIMEOUT_MAJOR),
            -item[0],
        )
    )
    if archive is None:
        return ToolChoice(usable[0][1], usable[0][0], server_major)
    unreadable: list[str] = []
    for major, tools in usable:
        listed = await processes.run(
            [tools.pg_restore, "--list", str(archive)],
            timeout=timeout,
            what=f"reading the table of contents of {archive.name}",
        )
        if listed.ok:
            return ToolChoice(tools, major, server_major)
        if "unsupported version" not in listed.stderr:
            # Not a version problem: the archive check reports the file itself.
            return ToolChoice(tools, major, server_major)
        unreadable.append(f"{major}: {listed.error_text(200)}")
    raise ToolsIncompatible(
        f"{archive.name} was written by a newer pg_dump than any client tools installed "
        f"here that suit the PostgreSQL {server_major} server ({'; '.join(unreadable)}). "
        "Install newer client tools or point PG_BIN at them. Nothing was stopped."
    )


def libpq_environment(url: str) -> dict[str, str]:
    """PG* variables for a postgresql:// URL, every libpq parameter of its query included
    (so `sslmode=verify-full` reaches pg_dump), and the password never in argv."""
    parts = urlsplit(url)
    env = {
        "PGHOST": unquote(parts.hostname or "localhost"),
        "PGPORT": str(parts.port or 5432),
        "PGDATABASE": unquote(parts.path.lstrip("/")) or "postgres",
        "PGAPPNAME": "rollback-bot",
        "PGCONNECT_TIMEOUT": "10",
    }
    if parts.username:
        env["PGUSER"] = unquote(parts.username)
    if parts.password:
        env["PGPASSWORD"] = unquote(parts.password)
    for key, value in _query(url):
        if key == "password":
            env["PGPASSWORD"] = value
        elif key in LIBPQ_VARIABLES and value:
            env[LIBPQ_VARIABLES[key]] = value
    return env


def mask_password(url: str) -> str:
    """The URL as it may be shown: the password, in the userinfo or the query, is ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = parts.query
    if any(key in SECRET_PARAMETERS for key, _ in _query(url)):
        query = "&".join(
            f"{key}=***" if key in SECRET_PARAMETERS else f"{key}={quote(value, safe='/:,')}"
            for key, value in _query(url)
        )
    return parts._replace(netloc=netloc, query=query).geturl()


def scrub(text: str, url: str) -> str:
    """`text` without the URL's password (as written and decoded), for a log line."""
    env = libpq_environment(url)
    secrets = {env.get("PGPASSWORD", ""), urlsplit(url).password or ""}
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def same_database(first: str, second: str) -> bool:
    """Whether two URLs name the same database on the same server (host, port, name)."""

    def key(url: str) -> tuple[str, str, str]:
        env = libpq_environment(url)
        host = env["PGHOST"].lower()
        if host in ("localhost", "127.0.0.1", "::1"):
            host = "localhost"
        return host, env["PGPORT"], env["PGDATABASE"]

    return key(first) == key(second)


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database (e.g. the maintenance one)."""
    return urlsplit(url)._replace(path="/" + quote(database, safe="")).geturl()
