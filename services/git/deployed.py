"""Which commit runs: the branch tip, the newest tag matching a pattern, or what the
application's version endpoint reports; and waiting until it reports a pushed commit."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pygit2

from services import names
from services.environments import DeployedSource, Environment, GitTarget
from services.errors import DeployedCommitUnknown, UnknownCommit, VersionNotReported
from services.git.credentials import GitCredentials, credentials_from_environment
from services.git.remote_url import display_url, scrub
from services.git.working_copy import WorkingCopy, open_working_copy

log = logging.getLogger(__name__)

MAX_VERSION_BYTES = 64 * 1024  # a version document, not a download


def _source(target: GitTarget) -> str:
    return f"version endpoint {display_url(target.version_url or '')}"


def _field(document: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(document, dict) or key not in document:
            return None
        document = document[key]
    return document


async def _read_bounded(answer: aiohttp.ClientResponse) -> bytes:
    """At most MAX_VERSION_BYTES + 1 bytes of the body (one more tells it is too large)."""
    body = b""
    while len(body) <= MAX_VERSION_BYTES:
        chunk = await answer.content.read(MAX_VERSION_BYTES + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return body


async def reported_version(target: GitTarget, http: aiohttp.ClientSession) -> str:
    """The commit sha (a prefix of 7+ hex digits, lowercased) the version endpoint reports."""
    if not target.version_url:
        raise DeployedCommitUnknown("version endpoint", "no version_url is configured")
    source = _source(target)
    timeout = aiohttp.ClientTimeout(total=target.version_timeout_seconds)
    try:
        async with http.get(target.version_url, timeout=timeout, allow_redirects=False) as answer:
            if answer.status != 200:
                raise DeployedCommitUnknown(source, f"it answered HTTP {answer.status}")
            body = await _read_bounded(answer)
    except TimeoutError:
        raise DeployedCommitUnknown(
            source, f"no answer within {target.version_timeout_seconds:g} s"
        ) from None
    except aiohttp.ClientError as error:
        reason = scrub(f"{type(error).__name__}: {error}", ())
        raise DeployedCommitUnknown(source, reason) from None
    if len(body) > MAX_VERSION_BYTES:
        raise DeployedCommitUnknown(source, f"its answer is larger than {MAX_VERSION_BYTES} bytes")
    try:
        value = _field(json.loads(body), target.version_field)
    except (ValueError, UnicodeDecodeError):
        raise DeployedCommitUnknown(source, "its answer is not JSON") from None
    if value is None:
        raise DeployedCommitUnknown(source, f"its answer has no field {target.version_field}")
    text = str(value).strip()
    if not names.is_sha_prefix(text):
        shown = names.visible(text[:50])
        raise DeployedCommitUnknown(
            source, f"{target.version_field} is '{shown}', not a commit sha (7 to 40 hex digits)"
        )
    return text.lower()


def find_deployed(copy: WorkingCopy, tip: pygit2.Commit, reported: str | None) -> pygit2.Commit:
    """The deployed commit in a fetched working copy; `reported`: the endpoint's answer."""
    target = copy.target
    if target.deployed is DeployedSource.BRANCH:
        return tip
    if target.deployed is DeployedSource.TAG:
        pattern = target.tag_pattern or ""
        found = copy.newest_tag(pattern)
        if found is None:
            raise DeployedCommitUnknown(f"tags {pattern}", "no tag matches")
        return found
    if reported is None:
        raise DeployedCommitUnknown(_source(target), "it was not asked")
    try:
        return copy.resolve(reported)
    except UnknownCommit:
        raise DeployedCommitUnknown(
            _source(target),
            f"it reports {reported}, which is not a commit of {copy.remote_display}",
        ) from None


async def deployed_commit(
    target: GitTarget, credentials: GitCredentials, http: aiohttp.ClientSession
) -> str | None:
    """The full sha of the deployed commit per `target.deployed`; None when the tag pattern
    matches no tag yet. The endpoint's full sha is taken as is; anything else is fetched."""
    reported = None
    if target.deployed is DeployedSource.ENDPOINT:
        reported = await reported_version(target, http)
        if len(reported) == 40:
            return reported

    def work() -> str | None:
        with open_working_copy(target, credentials) as copy:
            tip = copy.fetch()
            try:
                return str(find_deployed(copy, tip, reported).id)
            except DeployedCommitUnknown:
                if target.deployed is DeployedSource.TAG:
                    return None
                raise

    return await asyncio.to_thread(work)


@dataclass(frozen=True)
class VersionProgress:
    """One look at the version endpoint while waiting (for the live message)."""

    sha: str  # the commit waited for
    reported: str | None  # what the endpoint said, None when it failed
    problem: str | None  # why it failed
    attempts: int
    elapsed_seconds: float
    remaining_seconds: float


ProgressCallback = Callable[[VersionProgress], Awaitable[None]]
DeployedCommitOf = Callable[[Environment], Awaitable[str | None]]  # = bundle.DeployedCommit


def same_commit(reported: str, sha: str) -> bool:
    """One is a prefix of the other (an endpoint may report a short sha)."""
    shorter, longer = sorted((reported.lower(), sha.lower()), key=len)
    return len(shorter) >= names.SHORT_SHA and longer.startswith(shorter)


async def wait_for_version(
    target: GitTarget,
    http: aiohttp.ClientSession,
    sha: str,
    deadline: float | None = None,
    progress_callback: ProgressCallback | None = None,
) -> VersionProgress:
    """Poll the version endpoint until it reports `sha`; `VersionNotReported` at `deadline`
    (a time.monotonic() value; default: now + target.version_wait_seconds)."""
    began = time.monotonic()
    deadline = began + target.version_wait_seconds if deadline is None else deadline
    attempts = 0
    while True:
        attempts += 1
        reported = problem = None
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.5)):
                reported = await reported_version(target, http)
        except DeployedCommitUnknown as error:
            problem = error.reason
        except TimeoutError:
            problem = "no answer before the deadline"
        now = time.monotonic()
        seen = VersionProgress(
            sha, reported, problem, attempts, now - began, max(0.0, deadline - now)
        )
        if progress_callback is not None:
            await progress_callback(seen)
        if reported is not None and same_commit(reported, sha):
            log.info("version endpoint reports %s after %.1f s", sha[:7], now - began)
            return seen
        pause = min(target.version_poll_seconds, 0.05 * 2**attempts)
        if now + pause >= deadline:
            raise VersionNotReported(
                display_url(target.version_url or ""),
                sha,
                deadline - began,
                reported if reported is not None else problem or "nothing",
            )
        await asyncio.sleep(pause)


def deployed_commit_reader(http: aiohttp.ClientSession) -> DeployedCommitOf:
    """`Services.deployed_commit`: what an environment runs now, None without a git target."""

    async def read(environment: Environment) -> str | None:
        if environment.git is None:
            return None
        credentials = credentials_from_environment(environment.git)
        return await deployed_commit(environment.git, credentials, http)

    return read
