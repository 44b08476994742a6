"""Where the PostgreSQL client programs are, and how to hand them a connection safely."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from services.errors import ConfigError


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


def libpq_environment(url: str) -> dict[str, str]:
    """PG* variables for a postgresql:// URL, so the password never appears in argv."""
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
    # Unix-socket URLs carry the directory as ?host=/path.
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if key == "host" and value:
            env["PGHOST"] = unquote(value)
    return env


def mask_password(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database (e.g. the maintenance one)."""
    return urlsplit(url)._replace(path="/" + quote(database, safe="")).geturl()
