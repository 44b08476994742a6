"""What the bot authenticates to the remote with, read from the process environment only,
and the libgit2 callbacks that hand it over, bound the transfer and report refusals."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pygit2
from pydantic import SecretStr
from pygit2.enums import CredentialType

from services.environments import GitTarget
from services.errors import ConfigError, GitAuthFailed, GitRemoteError


@dataclass(frozen=True)
class GitCredentials:
    """A token (HTTPS, sent as the password of `username`) or an SSH key; repr hides both.

    Build it with `credentials_from_environment`; `GitCredentials()` is "none" (a local or
    anonymous remote)."""

    username: str = "x-access-token"
    token: SecretStr | None = None
    token_env: str | None = None  # the variable's NAME, for messages
    ssh_key: Path | None = None
    ssh_passphrase: SecretStr | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret values, to scrub from any text libgit2 returns."""
        found = (self.token, self.ssh_passphrase)
        return tuple(s.get_secret_value() for s in found if s is not None)

    def describe(self) -> str:
        if self.token is not None:
            return f"the token in {self.token_env}" if self.token_env else "the token"
        if self.ssh_key is not None:
            return f"the SSH key {self.ssh_key}"
        return "no credentials"


def credentials_from_environment(
    target: GitTarget, environ: Mapping[str, str] | None = None
) -> GitCredentials:
    """The target's credentials from `environ` (default: the process environment)."""
    environ = os.environ if environ is None else environ
    problems = []
    token = passphrase = None
    if target.token_env:
        value = environ.get(target.token_env)
        if not value:
            problems.append(f"git.token_env: variable {target.token_env} is not set")
        else:
            token = SecretStr(value)
    if target.ssh_passphrase_env:
        value = environ.get(target.ssh_passphrase_env)
        if value is None:
            problems.append(
                f"git.ssh_passphrase_env: variable {target.ssh_passphrase_env} is not set"
            )
        else:
            passphrase = SecretStr(value)
    if problems:
        raise ConfigError(problems)
    return GitCredentials(
        username=target.username,
        token=token,
        token_env=target.token_env,
        ssh_key=target.ssh_key,
        ssh_passphrase=passphrase,
    )


class TransferCallbacks(pygit2.RemoteCallbacks):
    """One fetch or push: credentials asked once (asked again = refused), a deadline checked
    whenever data moves, and the remote's refusals of pushed references collected."""

    def __init__(
        self, credentials: GitCredentials, operation: str, remote: str, deadline: float
    ) -> None:
        super().__init__()
        self._given = credentials
        self.operation = operation
        self.remote_display = remote  # display URL
        self.deadline = deadline  # time.monotonic()
        self.seconds = max(0.0, deadline - time.monotonic())
        self.asked = 0
        self.rejected: list[tuple[str, str]] = []

    def credentials(
        self, url: str, username_from_url: str | None, allowed_types: CredentialType
    ) -> pygit2.UserPass | pygit2.Keypair:
        self.asked += 1
        given = self._given
        if self.asked > 1:  # libgit2 asks again when the remote said no
            raise GitAuthFailed(
                self.operation, self.remote_display, f"the remote refused {given.describe()}"
            )
        if given.token is not None and allowed_types & CredentialType.USERPASS_PLAINTEXT:
            return pygit2.UserPass(given.username, given.token.get_secret_value())
        if given.ssh_key is not None and allowed_types & CredentialType.SSH_KEY:
            passphrase = given.ssh_passphrase.get_secret_value() if given.ssh_passphrase else ""
            public = given.ssh_key.with_name(given.ssh_key.name + ".pub")
            return pygit2.Keypair(
                username_from_url or given.username,
                public if public.is_file() else None,
                given.ssh_key,
                passphrase,
            )
        raise GitAuthFailed(
            self.operation,
            self.remote_display,
            f"the remote asks for credentials of a kind the bot does not have (it has "
            f"{given.describe()}); set token_env for HTTPS or ssh_key for SSH",
        )

    def _in_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise GitRemoteError(
                self.operation, self.remote_display, f"timed out after {self.seconds:g} s"
            )

    def sideband_progress(self, string: str) -> None:
        self._in_time()

    def transfer_progress(self, stats: pygit2.remotes.TransferProgress) -> None:
        self._in_time()

    def push_transfer_progress(
        self, objects_pushed: int, total_objects: int, bytes_pushed: int
    ) -> None:
        self._in_time()

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.rejected.append((refname, message))
