"""The bot's own bare clone of a target: locked per operation, fetched, pushed. Blocking:
everything here runs in a worker thread (asyncio.to_thread), never on the event loop."""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pygit2
from pygit2.enums import FetchPrune, Option

from services import names
from services.environments import GitTarget
from services.errors import (
    BranchMoved,
    GitError,
    GitRemoteError,
    UnknownCommit,
)
from services.git.credentials import GitCredentials, TransferCallbacks
from services.git.remote_url import display_url, is_local_path, scrub

log = logging.getLogger(__name__)

LOCK_FILE = "rollback-bot.lock"
# What pygit2 raises for libgit2's error codes (not found: KeyError, invalid: ValueError).
LIBGIT2_ERRORS = (pygit2.GitError, KeyError, ValueError, OSError)
_LOCK_POLL_SECONDS = 0.05


@contextlib.contextmanager
def _locked(folder: Path, seconds: float) -> Iterator[None]:
    """One operation at a time on a working copy, across threads and bot processes."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK_FILE).open("a") as handle:
        deadline = time.monotonic() + seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise GitError(
                        f"The git working copy {folder} is busy: another fetch or push of it "
                        f"did not end within {seconds:g} s."
                    ) from None
                time.sleep(_LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_repository(folder: Path) -> pygit2.Repository:
    try:
        repository = pygit2.Repository(str(folder))
    except pygit2.GitError:
        if any(p.name != LOCK_FILE for p in folder.iterdir()):
            raise GitError(
                f"The git working copy {folder} is not empty and not a git repository; "
                "point workdir at a folder of the bot's own."
            ) from None
        return pygit2.init_repository(str(folder), bare=True)
    if not repository.is_bare:
        raise GitError(
            f"The git working copy {folder} is a checkout; workdir must be the bot's own "
            "(bare) clone, which it creates in an empty or missing folder."
        )
    return repository


class WorkingCopy:
    """One locked operation on the bot's clone of `target` (see `open_working_copy`)."""

    def __init__(
        self, target: GitTarget, credentials: GitCredentials, repository: pygit2.Repository
    ) -> None:
        self.target = target
        self.credentials = credentials
        self.repository = repository
        self.remote_display = display_url(target.url)
        if target.remote not in set(repository.remotes.names()):
            repository.remotes.create(target.remote, target.url)
        elif repository.remotes[target.remote].url != target.url:
            repository.remotes.set_url(target.remote, target.url)
        self.remote = repository.remotes[target.remote]

    @property
    def branch_ref(self) -> str:
        return f"refs/heads/{self.target.branch}"

    def _callbacks(self, operation: str) -> TransferCallbacks:
        seconds = self.target.timeout_seconds
        # libgit2's socket timeouts end a remote that stops answering mid-transfer.
        pygit2.option(Option.SET_SERVER_CONNECT_TIMEOUT, int(seconds * 1000))
        pygit2.option(Option.SET_SERVER_TIMEOUT, int(seconds * 1000))
        return TransferCallbacks(
            self.credentials, operation, self.remote_display, time.monotonic() + seconds
        )

    def _remote_error(self, operation: str, error: Exception) -> GitRemoteError:
        url = self.target.url
        if is_local_path(url) and not Path(url).is_dir():
            return GitRemoteError(operation, self.remote_display, "no repository at this path")
        detail = scrub(
            str(error).replace(self.target.url, self.remote_display), self.credentials.secrets
        )
        return GitRemoteError(operation, self.remote_display, detail or type(error).__name__)

    def _remote_tip(self, callbacks: TransferCallbacks, *, connect: bool) -> pygit2.Oid | None:
        heads = self.remote.list_heads(callbacks=callbacks, connect=connect)
        return next((h.oid for h in heads if h.name == self.branch_ref), None)

    def fetch(self) -> pygit2.Commit:
        """Fetch the branch and every tag; the branch's tip on the remote, now."""
        callbacks = self._callbacks("fetch from")
        branch = self.target.branch
        refspecs = [
            f"+{self.branch_ref}:refs/remotes/{self.target.remote}/{branch}",
            "+refs/tags/*:refs/tags/*",
        ]
        try:
            self.remote.fetch(refspecs, callbacks=callbacks, prune=FetchPrune.PRUNE)
            tip = self._remote_tip(callbacks, connect=False)
        except LIBGIT2_ERRORS as error:
            raise self._remote_error("fetch from", error) from None
        if tip is None:
            raise GitError(f"Branch {branch} does not exist in {self.remote_display}.")
        log.info("fetched %s from %s: tip %s", branch, self.remote_display, str(tip)[:7])
        return self.repository[tip].peel(pygit2.Commit)

    def resolve(self, requested: str) -> pygit2.Commit:
        """A commit-ish checked by names.check_commitish: a sha prefix, a tag, or a branch
        fetched here (the configured one)."""
        repository = self.repository
        if names.is_sha_prefix(requested):
            try:
                return repository[repository.expand_id(requested)].peel(pygit2.Commit)
            except ValueError as error:
                if "ambiguous" in str(error):
                    raise UnknownCommit(
                        requested,
                        self.remote_display,
                        "more than one object starts with it; give more digits",
                    ) from None
            except (KeyError, pygit2.GitError):
                pass  # maybe a tag whose name looks like hex
        for ref in (f"refs/tags/{requested}", f"refs/remotes/{self.target.remote}/{requested}"):
            found = repository.references.get(ref)
            if found is not None:
                return repository[found.target].peel(pygit2.Commit)
        raise UnknownCommit(
            requested, self.remote_display, f"no such commit in {self.target.branch}, nor a tag"
        )

    def newest_tag(self, pattern: str) -> pygit2.Commit | None:
        """The commit of the newest tag matching `pattern` (tagger time, else commit time)."""
        found: list[tuple[int, int, str, pygit2.Commit]] = []
        for name in self.repository.references:
            if not name.startswith("refs/tags/"):
                continue
            tag_name = name.removeprefix("refs/tags/")
            if not fnmatch.fnmatchcase(tag_name, pattern):
                continue
            obj = self.repository[self.repository.references[name].target]
            commit = obj.peel(pygit2.Commit)
            tagged = obj.tagger.time if isinstance(obj, pygit2.Tag) and obj.tagger else None
            when = tagged if tagged is not None else commit.commit_time
            found.append((when, commit.commit_time, tag_name, commit))
        return max(found, key=lambda entry: entry[:3])[3] if found else None

    def push(self, new_tip: pygit2.Oid, old_tip: pygit2.Oid) -> None:
        """A fast-forward push of the branch to `new_tip`; a moved branch is `BranchMoved`."""
        self.repository.references.create(self.branch_ref, new_tip, force=True)
        callbacks = self._callbacks("push to")
        spec = f"{self.branch_ref}:{self.branch_ref}"  # no '+': never a forced update
        failure = None
        try:
            self.remote.push([spec], callbacks=callbacks)
        except LIBGIT2_ERRORS as error:
            failure = self._remote_error("push to", error)
        if failure is None and not callbacks.rejected:
            log.info(
                "pushed %s to %s: %s..%s",
                self.target.branch,
                self.remote_display,
                str(old_tip)[:7],
                str(new_tip)[:7],
            )
            return
        if failure is None:
            reasons = "; ".join(message for _, message in callbacks.rejected)
            detail = scrub(f"refused: {reasons}", self.credentials.secrets)
            failure = GitRemoteError("push to", self.remote_display, detail)
        # Why it failed decides what to say: someone else moved the branch, or not.
        try:
            current = self._remote_tip(self._callbacks("look at"), connect=True)
        except LIBGIT2_ERRORS:
            raise failure from None
        if current != old_tip and current != new_tip:
            raise BranchMoved(self.target.branch, str(old_tip), str(current) if current else None)
        if current == new_tip:
            return  # it landed after all (the refusal was about something else)
        raise failure


@contextlib.contextmanager
def open_working_copy(target: GitTarget, credentials: GitCredentials) -> Iterator[WorkingCopy]:
    """The bot's bare clone of `target`, created on first use, locked while in use."""
    folder = target.workdir
    # An operation is a fetch and at most a push, each bounded by timeout_seconds.
    with _locked(folder, 2 * target.timeout_seconds):
        yield WorkingCopy(target, credentials, _open_repository(folder))
