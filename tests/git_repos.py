"""Real git for the code rollback tests (issue 9): a bare repository as the remote, a
developers' clone where other people commit and push (pygit2), a version endpoint, and the
smart-HTTP remote behind a token (sandbox.git_http).

Fixtures are re-exported by the conftest of each test package that needs them.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
import pytest
from aiohttp import web

from sandbox.git_http import GitHttpServer
from services.environments import GitTarget

BRANCH = "main"
EPOCH = 1_700_000_000  # commit times: fixed and increasing, so order never depends on speed


@dataclass(frozen=True)
class Person:
    name: str
    email: str


ALICE = Person("Alice Liddell", "alice@example.com")
BOB = Person("Bob Builder", "bob@example.com")
_clock = itertools.count(EPOCH, 60)


def signature(person: Person) -> pygit2.Signature:
    return pygit2.Signature(person.name, person.email, next(_clock), 0)


class Upstream:
    """The remote (a bare repository) and a developers' clone that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.path = root / "remote.git"
        pygit2.init_repository(str(self.path), bare=True, initial_head=BRANCH)
        self.url = str(self.path)
        self.clone = pygit2.init_repository(str(root / "developers"), initial_head=BRANCH)
        self.clone.remotes.create("origin", self.url)

    @property
    def bare(self) -> pygit2.Repository:
        return pygit2.Repository(str(self.path))

    def tip(self, branch: str = BRANCH) -> str:
        return str(self.bare.references[f"refs/heads/{branch}"].target)

    def commit(
        self,
        files: Mapping[str, str | None],
        message: str,
        author: Person = ALICE,
        *,
        branch: str = BRANCH,
        push: bool = True,
    ) -> str:
        """Write (None: delete) files in the clone, commit them on `branch`, push."""
        repository = self.clone
        reference = f"refs/heads/{branch}"
        parent = repository.references.get(reference)
        index = pygit2.Index()
        if parent is not None:
            index.read_tree(repository[parent.target].peel(pygit2.Commit).tree)
        for name, text in files.items():
            if text is None:
                index.remove(name)
            else:
                blob = repository.create_blob(text.encode())
                index.add(pygit2.IndexEntry(name, blob, pygit2.enums.FileMode.BLOB))
        tree = index.write_tree(repository)
        parents = [parent.target] if parent is not None else []
        who = signature(author)
        oid = repository.create_commit(reference, who, who, message, tree, parents)
        if push:
            self.push(branch)
        return str(oid)

    def merge(self, feature: str, message: str, author: Person = BOB) -> str:
        """Merge branch `feature` into main with a merge commit (main first), push."""
        repository = self.clone
        main = repository.references[f"refs/heads/{BRANCH}"].target
        side = repository.references[f"refs/heads/{feature}"].target
        index = repository.merge_commits(main, side)
        assert index.conflicts is None
        who = signature(author)
        oid = repository.create_commit(
            f"refs/heads/{BRANCH}", who, who, message, index.write_tree(repository), [main, side]
        )
        self.push(BRANCH)
        return str(oid)

    def branch_from(self, name: str, sha: str) -> None:
        self.clone.references.create(f"refs/heads/{name}", pygit2.Oid(hex=sha), force=True)

    def tag(self, name: str, sha: str, *, when: int, annotated: bool = True) -> None:
        repository = self.clone
        if annotated:
            tagger = pygit2.Signature(ALICE.name, ALICE.email, when, 0)
            repository.create_tag(
                name, pygit2.Oid(hex=sha), pygit2.enums.ObjectType.COMMIT, tagger, "deployed"
            )
        else:
            repository.references.create(f"refs/tags/{name}", pygit2.Oid(hex=sha))
        self.clone.remotes["origin"].push([f"refs/tags/{name}:refs/tags/{name}"])

    def hook(self, name: str, script: str) -> None:
        """A server-side hook of the remote (run by `git receive-pack`, so over HTTP)."""
        path = self.path / "hooks" / name
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)

    def push(self, branch: str = BRANCH) -> None:
        self.clone.remotes["origin"].push([f"+refs/heads/{branch}:refs/heads/{branch}"])

    def tree(self, sha: str) -> str:
        return str(self.bare[sha].peel(pygit2.Commit).tree_id)

    def history(self, branch: str = BRANCH) -> list[pygit2.Commit]:
        """The branch on the remote, newest first (first parents)."""
        commit = self.bare.references[f"refs/heads/{branch}"].peel(pygit2.Commit)
        found = [commit]
        while commit.parents:
            commit = commit.parents[0]
            found.append(commit)
        return found

    def read(self, sha: str, name: str) -> str | None:
        tree = self.bare[sha].peel(pygit2.Commit).tree
        return tree[name].data.decode() if name in tree else None  # type: ignore[attr-defined]

    def target(self, workdir: Path, **settings: Any) -> GitTarget:
        return GitTarget(url=self.url, workdir=workdir, branch=BRANCH, **settings)


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "upstream")


class VersionEndpoint:
    """An application's /version, answering {"build": {"commit": …}} (or what a test sets)."""

    def __init__(self) -> None:
        self.document: Any = {"build": {"commit": None}}
        self.status = 200
        self.url = ""

    def report(self, sha: str | None) -> None:
        self.document = {"build": {"commit": sha}}

    def target(self, workdir: Path, **settings: Any) -> GitTarget:
        """A target whose application reports its version here (no repository needed)."""
        return GitTarget(
            url="/nowhere",
            workdir=workdir,
            version_url=self.url,
            version_field="build.commit",
            **settings,
        )

    async def handle(self, _request: web.Request) -> web.Response:
        return web.json_response(self.document, status=self.status)


@pytest.fixture
async def version_endpoint() -> AsyncIterator[VersionEndpoint]:
    endpoint = VersionEndpoint()
    app = web.Application()
    app.router.add_get("/version", endpoint.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    endpoint.url = f"http://127.0.0.1:{runner.addresses[0][1]}/version"
    try:
        yield endpoint
    finally:
        await runner.cleanup()


GIT_TOKEN = "gho_s3cr3tT0kenNeverShown_4f1d2c"


@pytest.fixture
async def git_http(upstream: Upstream) -> AsyncIterator[GitHttpServer]:
    """The upstream repository served over smart HTTP; Basic auth with GIT_TOKEN."""
    async with GitHttpServer(upstream.path.parent, token=GIT_TOKEN) as server:
        yield server
