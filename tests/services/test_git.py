"""Code rollback on real git (issue 9): a bare repository as the remote, the bot's own clone,
commits by other people pushed from a developers' clone, and one remote over smart HTTP
behind a token."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import aiohttp
import pygit2
import pytest
from hypothesis import given, settings
from pydantic import SecretStr

from sandbox.git_http import GitHttpServer
from services import names
from services.environments import DeployedSource, GitTarget
from services.errors import (
    BranchMoved,
    ConfigError,
    DeployedCommitUnknown,
    GitAuthFailed,
    GitError,
    GitRemoteError,
    InvalidCommit,
    NothingToRevert,
    NotOnBranch,
    RevertConflict,
    UnknownCommit,
    VersionNotReported,
)
from services.git import (
    CodePlan,
    GitCredentials,
    VersionProgress,
    credentials_from_environment,
    deployed_commit,
    display_url,
    execute_code_rollback,
    plan_code_rollback,
    wait_for_version,
)
from tests import hostile
from tests.git_repos import ALICE, BOB, GIT_TOKEN, Upstream, VersionEndpoint
from tests.hostile import HOSTILE

NONE = GitCredentials()
RUN = "run-7f3a"
REQUESTER = "U0ALICE"


def trailer(run: str = RUN, requester: str = REQUESTER) -> str:
    return f"\nRolled back by rollback-bot run {run}, requested by {requester}.\n"


def three_commits(upstream: Upstream) -> list[str]:
    return [
        upstream.commit({"app.py": "print('v1')\n", "README": "app\n"}, "Start the app"),
        upstream.commit({"app.py": "print('v2')\n"}, "Say v2", BOB),
        upstream.commit({"lib/util.py": "X = 1\n"}, "Add util\n\nWith a body.", ALICE),
    ]


async def test_without_a_commit_the_deployed_tip_is_reverted_and_pushed(
    upstream: Upstream, tmp_path: Path
) -> None:
    first, second, third = three_commits(upstream)
    target = upstream.target(tmp_path / "bot")

    plan = await plan_code_rollback(target, NONE)

    assert (plan.tip, plan.deployed, plan.target) == (third, third, second)
    assert [(c.sha, c.author_name, c.subject) for c in plan.reverts] == [
        (third, ALICE.name, "Add util")
    ]
    assert plan.messages == (f'Revert "Add util"\n\nThis reverts commit {third}.\n',)
    assert plan.conflicts == () and plan.tree_matches_target
    assert plan.remote == upstream.url and plan.branch == "main"
    # What the run store keeps reads back into the same plan, and the hash stays put.
    stored = json.loads(json.dumps(plan.summary()))
    assert CodePlan.from_summary(stored) == plan
    assert stored["fingerprint"] == plan.fingerprint

    result = await execute_code_rollback(target, NONE, plan, run_id=RUN, requester=REQUESTER)

    history = upstream.history()
    assert [str(c.id) for c in history] == [result.new_tip, third, second, first]
    revert = history[0]
    assert revert.message == plan.messages[0] + trailer()
    assert (revert.committer.name, revert.author.name) == ("rollback-bot", "rollback-bot")
    assert upstream.tree(result.new_tip) == upstream.tree(second)
    assert result.pushed == (result.new_tip,) and result.previous_tip == third
    assert not result.already_pushed


async def test_a_merge_commit_is_reverted_against_its_first_parent(
    upstream: Upstream, tmp_path: Path
) -> None:
    base = upstream.commit({"app.py": "v1\n"}, "Start")
    upstream.branch_from("feature", base)
    upstream.commit({"feature.py": "a\n"}, "Feature part 1", BOB, branch="feature", push=False)
    upstream.commit({"feature.py": "b\n", "app.py": "v1+f\n"}, "Part 2", BOB, branch="feature")
    main_before = upstream.commit({"docs.md": "docs\n"}, "Docs on main")
    merge = upstream.merge("feature", "Merge branch 'feature'")
    target = upstream.target(tmp_path / "bot")

    plan = await plan_code_rollback(target, NONE)

    assert [c.sha for c in plan.reverts] == [merge] and plan.reverts[0].is_merge
    assert plan.target == main_before and plan.tree_matches_target
    assert plan.messages[0] == (
        "Revert \"Merge branch 'feature'\"\n\n"
        f"This reverts commit {merge}, reversing\nchanges made to {main_before}.\n"
    )
    result = await execute_code_rollback(target, NONE, plan, run_id=RUN, requester=REQUESTER)
    assert upstream.tree(result.new_tip) == upstream.tree(main_before)
    assert upstream.read(result.new_tip, "feature.py") is None
    assert upstream.read(result.new_tip, "app.py") == "v1\n"


async def test_back_to_an_older_commit_reverts_each_later_commit_newest_first(
    upstream: Upstream, tmp_path: Path
) -> None:
    good = upstream.commit({"app.py": "good\n", "config.ini": "a=1\n"}, "Known good")
    upstream.branch_from("fix", good)
    upstream.commit({"fix.py": "fix\n"}, "Fix on a branch", BOB, branch="fix")
    second = upstream.commit({"app.py": "worse\n"}, "Worse", BOB)
    merge = upstream.merge("fix", "Merge fix")
    fourth = upstream.commit({"config.ini": None, "new.txt": "n\n"}, "Drop config")
    target = upstream.target(tmp_path / "bot")

    plan = await plan_code_rollback(target, NONE, good[:10].upper())

    assert plan.requested == good[:10].lower() and plan.deployed is None
    assert [c.sha for c in plan.reverts] == [fourth, merge, second]
    assert plan.target == good and plan.tree_matches_target and not plan.conflicts
    result = await execute_code_rollback(target, NONE, plan, run_id=RUN, requester=REQUESTER)

    history = upstream.history()
    made = history[:3]
    assert [str(c.id) for c in reversed(made)] == list(result.pushed)
    assert [c.message for c in reversed(made)] == [m + trailer() for m in plan.messages]
    assert [str(c.id) for c in history[3:]] == [fourth, merge, second, good]
    assert upstream.tree(result.new_tip) == upstream.tree(good)


async def test_a_conflicting_revert_pushes_nothing_and_names_the_files(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.commit({"app.py": "port = 80\nname = 'app'\n", "b.txt": "b\n"}, "Start")
    deployed = upstream.commit({"app.py": "port = 8080\nname = 'app'\n"}, "Port 8080")
    upstream.tag("deploy/production/2", deployed, when=time_now())
    later = upstream.commit({"app.py": "port = 9090\nname = 'app'\n"}, "Port 9090", BOB)
    target = upstream.target(
        tmp_path / "bot", deployed=DeployedSource.TAG, tag_pattern="deploy/production/*"
    )

    plan = await plan_code_rollback(target, NONE)

    assert plan.deployed == deployed and [c.sha for c in plan.pending] == [later]
    assert plan.conflicts == ("app.py",) and plan.conflict_commit == deployed
    assert plan.result_tree is None and not plan.tree_matches_target
    with pytest.raises(RevertConflict) as raised:
        await execute_code_rollback(target, NONE, plan, run_id=RUN, requester=REQUESTER)
    assert raised.value.files == ("app.py",)
    assert str(raised.value) == (
        f'Reverting {deployed[:7]} ("Port 8080") conflicts with later changes in app.py: '
        "nothing was pushed."
    )
    assert upstream.tip() == later


async def test_a_branch_moved_after_the_plan_is_refused_and_nothing_is_pushed(
    upstream: Upstream, tmp_path: Path
) -> None:
    three_commits(upstream)
    target = upstream.target(tmp_path / "bot")
    plan = await plan_code_rollback(target, NONE)
    hotfix = upstream.commit({"hotfix.py": "ok\n"}, "Hotfix", BOB)

    with pytest.raises(BranchMoved) as raised:
        await execute_code_rollback(target, NONE, plan, run_id=RUN, requester=REQUESTER)

    assert upstream.tip() == hotfix
    assert str(raised.value) == (
        f"Branch main moved since the plan was made (planned on {plan.tip[:7]}, now "
        f"{hotfix[:7]}): nothing was pushed. Make the plan again."
    )


async def test_executing_again_finds_the_runs_own_push(upstream: Upstream, tmp_path: Path) -> None:
    """A retry after the push (the bot died before recording it) does not push twice."""
    three_commits(upstream)
    target = upstream.target(tmp_path / "bot")
    plan = await plan_code_rollback(target, NONE)
    first = await execute_code_rollback(target, NONE, plan, run_id=RUN, requester=REQUESTER)

    again = await execute_code_rollback(target, NONE, plan, run_id=RUN, requester=REQUESTER)

    assert again.already_pushed and (again.new_tip, again.pushed) == (first.new_tip, first.pushed)
    assert upstream.tip() == first.new_tip
    with pytest.raises(BranchMoved):  # another run's plan on the same tip
        await execute_code_rollback(target, NONE, plan, run_id="run-other", requester=REQUESTER)


def time_now() -> int:
    return int(time.time())


async def test_the_deployed_commit_is_the_newest_tag_matching_the_pattern(
    upstream: Upstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    first, second, third = three_commits(upstream)
    target = upstream.target(
        tmp_path / "bot", deployed=DeployedSource.TAG, tag_pattern="deploy/production/*"
    )
    assert await deployed_commit(target, NONE, http) is None

    now = time_now()
    upstream.tag("deploy/production/20240101", first, when=now - 300)
    upstream.tag("deploy/production/20240102", second, when=now - 200)  # newest
    upstream.tag("deploy/staging/20240103", third, when=now - 100)  # another environment
    upstream.tag("v1.0", third, when=now, annotated=False)
    assert await deployed_commit(target, NONE, http) == second

    plan = await plan_code_rollback(target, NONE)
    assert [c.sha for c in plan.reverts] == [second] and [c.sha for c in plan.pending] == [third]
    assert plan.target == first and plan.conflicts == () and not plan.tree_matches_target
    result = await execute_code_rollback(target, NONE, plan, run_id=RUN, requester=REQUESTER)
    # Bob's v2 is reverted, the later util stays.
    assert upstream.read(result.new_tip, "app.py") == "print('v1')\n"
    assert upstream.read(result.new_tip, "lib/util.py") == "X = 1\n"


async def test_the_deployed_commit_from_the_version_endpoint(
    upstream: Upstream,
    tmp_path: Path,
    http: aiohttp.ClientSession,
    version_endpoint: VersionEndpoint,
) -> None:
    first, second, _third = three_commits(upstream)
    target = upstream.target(
        tmp_path / "bot",
        deployed=DeployedSource.ENDPOINT,
        version_url=version_endpoint.url,
        version_field="build.commit",
    )

    version_endpoint.report(second[:8].upper())
    assert await deployed_commit(target, NONE, http) == second
    plan = await plan_code_rollback(target, NONE, http=http)
    assert (plan.deployed, plan.target) == (second, first)

    version_endpoint.report(first)  # a full sha is taken as it is
    assert await deployed_commit(target, NONE, http) == first

    source = f"The deployed commit is not known from the version endpoint {version_endpoint.url}: "
    for document, status, reason in [
        (
            {"build": {"commit": "v1.2.3\n<!channel>"}},
            200,
            "build.commit is 'v1.2.3\\n<!channel>', not a commit sha (7 to 40 hex digits)",
        ),
        ({"build": {}}, 200, "its answer has no field build.commit"),
        ({"build": {"commit": first}}, 503, "it answered HTTP 503"),
        (
            {"build": {"commit": "abcdef0"}},
            200,
            f"it reports abcdef0, which is not a commit of {upstream.url}",
        ),
    ]:
        version_endpoint.document, version_endpoint.status = document, status
        with pytest.raises(DeployedCommitUnknown) as raised:
            await deployed_commit(target, NONE, http)
        assert str(raised.value) == source + reason + "."
    # A full sha is taken as reported; a plan looks it up in the branch's history.
    version_endpoint.status = 200
    version_endpoint.report("0" * 40)
    assert await deployed_commit(target, NONE, http) == "0" * 40
    with pytest.raises(DeployedCommitUnknown) as raised:
        await plan_code_rollback(target, NONE, http=http)
    assert (
        str(raised.value)
        == source + f"it reports {'0' * 40}, which is not a commit of {upstream.url}."
    )


async def test_waiting_for_the_version_ends_when_the_endpoint_reports_the_commit(
    tmp_path: Path, http: aiohttp.ClientSession, version_endpoint: VersionEndpoint
) -> None:
    old, new = "a" * 40, "b" * 40
    target = version_endpoint.target(tmp_path / "bot", version_poll_seconds=0.01)
    version_endpoint.report(old)
    seen: list[VersionProgress] = []

    async def progress(step: VersionProgress) -> None:
        seen.append(step)
        if len(seen) == 3:  # the deployment finishes while the bot watches
            version_endpoint.report(new[:12])

    done = await wait_for_version(target, http, new, time.monotonic() + 30, progress)

    assert [s.reported for s in seen] == [old, old, old, new[:12]]
    assert done == seen[-1] and done.attempts == 4 and done.problem is None


async def test_waiting_for_the_version_ends_at_the_deadline_with_what_it_last_saw(
    tmp_path: Path, http: aiohttp.ClientSession, version_endpoint: VersionEndpoint
) -> None:
    target = version_endpoint.target(tmp_path / "bot", version_poll_seconds=0.05)
    version_endpoint.report("c" * 40)
    with pytest.raises(VersionNotReported) as raised:
        await wait_for_version(target, http, "d" * 40, time.monotonic() + 0.4)
    assert str(raised.value).startswith("Timed out after 0.")
    assert str(raised.value).endswith(
        f"s: {version_endpoint.url} reporting ddddddd (last: {'c' * 40})"
    )

    version_endpoint.status = 500
    with pytest.raises(VersionNotReported, match=r"\(last: it answered HTTP 500\)"):
        await wait_for_version(target, http, "d" * 40, time.monotonic() + 0.2)


@pytest.mark.parametrize(
    ("commit", "words"),
    [
        ("--upload-pack=x", "starts with '-'"),
        ("../x", "is not a name git accepts"),
        ("HEAD~1", "is not a name git accepts"),
        ("main:app.py", "is not a name git accepts"),
        ("abc12", "too short for a commit sha"),
        ("v1 v2", "is not a name git accepts"),
        ("abc1234\n", "control character"),
        ("", "is empty"),
    ],
)
async def test_hostile_commits_are_refused_before_the_repository_is_touched(
    upstream: Upstream, tmp_path: Path, commit: str, words: str
) -> None:
    target = upstream.target(tmp_path / "bot")
    with pytest.raises(InvalidCommit) as raised:
        await plan_code_rollback(target, NONE, commit)
    message = str(raised.value)
    assert message.startswith("The commit ") and words in message
    assert (commit not in message or not commit) and message.isprintable()
    assert not target.workdir.exists()  # refused before the working copy was made


async def test_unknown_and_unreachable_commits_are_refused_with_what_to_do(
    upstream: Upstream, tmp_path: Path
) -> None:
    first, second, third = three_commits(upstream)
    upstream.branch_from("experiment", first)
    stray = upstream.commit({"x": "x\n"}, "Never merged", BOB, branch="experiment", push=False)
    upstream.tag("experiment-1", stray, when=time_now())
    target = upstream.target(tmp_path / "bot", max_revert_commits=1)

    cases: list[tuple[str, type[Exception], str]] = [
        (
            "deadbeef12",
            UnknownCommit,
            f"No commit or tag 'deadbeef12' in {upstream.url}: no such commit in main, nor a tag.",
        ),
        (
            "zzzzzzz",
            UnknownCommit,
            f"No commit or tag 'zzzzzzz' in {upstream.url}: no such commit in main, nor a tag.",
        ),
        (
            "experiment-1",
            NotOnBranch,
            f"Commit {stray[:7]} cannot be rolled back to on main: "
            "it is not in the history of main.",
        ),
        (third, NothingToRevert, f"Nothing to revert on main: main is at {third[:7]} already."),
        (
            first,
            NotOnBranch,
            f"Commit {first[:7]} cannot be rolled back to on main: it is more "
            "than 1 commits behind the tip (max_revert_commits).",
        ),
    ]
    for commit, kind, message in cases:
        with pytest.raises(kind) as raised:
            await plan_code_rollback(target, NONE, commit)
        assert str(raised.value) == message
    assert (await plan_code_rollback(target, NONE, second)).target == second


async def test_a_commit_inside_a_merged_branch_is_not_a_state_of_main(
    upstream: Upstream, tmp_path: Path
) -> None:
    base = upstream.commit({"a": "1\n"}, "Start")
    upstream.branch_from("feature", base)
    inside = upstream.commit({"f": "1\n"}, "Feature", BOB, branch="feature")
    upstream.commit({"a": "2\n"}, "Main moves on")
    upstream.merge("feature", "Merge feature")
    with pytest.raises(NotOnBranch, match="it came in through a merge; name the merge commit"):
        await plan_code_rollback(upstream.target(tmp_path / "bot"), NONE, inside)


@settings(HOSTILE, max_examples=300)
@given(hostile.anything)
def test_a_commit_is_refused_or_a_sha_or_a_ref_name_git_accepts(text: str) -> None:
    """issue 9: what reaches the repository is hex or a valid reference name, never an option."""
    try:
        checked = names.check_commitish(text)
    except InvalidCommit as error:
        assert str(error).startswith("The commit ") and str(error).isprintable()
        hostile.tried(touched=False)
        return
    hostile.tried(touched=False)
    assert not checked.startswith("-")
    assert names.is_sha_prefix(checked) or pygit2.reference_is_valid_name(f"refs/tags/{checked}")


def test_credentials_come_from_the_named_variable_and_never_show(tmp_path: Path) -> None:
    target = GitTarget(url="https://git.example.com/app.git", workdir=tmp_path, token_env="APP_GIT")
    credentials = credentials_from_environment(target, {"APP_GIT": GIT_TOKEN})
    assert credentials.token is not None and credentials.token.get_secret_value() == GIT_TOKEN
    assert GIT_TOKEN not in repr(credentials) and GIT_TOKEN not in str(credentials)
    with pytest.raises(ConfigError, match=r"git\.token_env: variable APP_GIT is not set"):
        credentials_from_environment(target, {})
    assert (
        display_url("https://bot:tok@git.example.com/app.git") == "https://git.example.com/app.git"
    )
    assert display_url("git@github.com:acme/app.git") == "github.com:acme/app.git"


async def test_push_through_an_authenticated_http_remote_never_shows_the_token(
    upstream: Upstream, git_http: GitHttpServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _first, second, third = three_commits(upstream)
    url = git_http.url("remote.git")
    target = GitTarget(url=url, workdir=tmp_path / "bot", token_env="APP_GIT_TOKEN")
    credentials = credentials_from_environment(target, {"APP_GIT_TOKEN": GIT_TOKEN})

    plan = await plan_code_rollback(target, credentials)
    result = await execute_code_rollback(target, credentials, plan, run_id=RUN, requester=REQUESTER)

    assert upstream.tip() == result.new_tip and upstream.tree(result.new_tip) == upstream.tree(
        second
    )
    assert upstream.history()[1].id == pygit2.Oid(hex=third)
    assert any(r.path.endswith("/git-receive-pack") and r.authorized for r in git_http.requests)

    # A wrong token and no token: refused, clearly, and nothing more reaches the remote.
    texts = []
    for wrong, words in [
        (
            GitCredentials(token=SecretStr("wrong-" + GIT_TOKEN[::-1]), token_env="APP_GIT_TOKEN"),
            "the remote refused the token in APP_GIT_TOKEN",
        ),
        (NONE, "the remote asks for credentials of a kind the bot does not have"),
    ]:
        before = len(git_http.requests)
        with pytest.raises(GitAuthFailed) as raised:
            await plan_code_rollback(
                target.model_copy(update={"workdir": tmp_path / "other"}), wrong
            )
        assert str(raised.value).startswith(f"Could not fetch from {url}: {words}")
        assert all(not r.authorized for r in git_http.requests[before:])
        texts.append(str(raised.value))
        texts.append(repr(wrong))
    assert upstream.tip() == result.new_tip

    seen = [
        caplog.text,
        repr(plan),
        json.dumps(plan.summary()),
        repr(result),
        json.dumps(result.summary()),
        repr(credentials),
        (tmp_path / "bot" / "config").read_text(),
        *texts,
    ]
    assert "fetched main from" in caplog.text and "pushed main to" in caplog.text
    assert not [text for text in seen if GIT_TOKEN in text or GIT_TOKEN[::-1] in text]


async def test_a_push_the_remote_refuses_says_why_and_pushes_nothing(
    upstream: Upstream, git_http: GitHttpServer, tmp_path: Path
) -> None:
    three_commits(upstream)
    upstream.hook("pre-receive", "echo 'main is protected' >&2\nexit 1")
    tip = upstream.tip()
    target = GitTarget(url=git_http.url("remote.git"), workdir=tmp_path / "bot", token_env="T")
    credentials = credentials_from_environment(target, {"T": GIT_TOKEN})
    plan = await plan_code_rollback(target, credentials)

    with pytest.raises(GitRemoteError) as raised:
        await execute_code_rollback(target, credentials, plan, run_id=RUN, requester=REQUESTER)

    assert not isinstance(raised.value, BranchMoved)
    assert str(raised.value).startswith(f"Could not push to {git_http.url('remote.git')}: ")
    assert "pre-receive hook declined" in str(raised.value)
    assert upstream.tip() == tip


async def test_a_remote_that_never_answers_is_abandoned_at_the_timeout(tmp_path: Path) -> None:
    """Every wait has a deadline: a remote that accepts and then says nothing."""

    async def hang(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    release = asyncio.Event()
    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/app.git"
    try:
        target = GitTarget(url=url, workdir=tmp_path / "bot", timeout_seconds=0.5)
        with pytest.raises(GitRemoteError) as raised:
            await plan_code_rollback(target, NONE)
        assert str(raised.value).startswith(f"Could not fetch from {url}: ")
        assert "timed out" in str(raised.value)
    finally:
        release.set()
        server.close()
        await server.wait_closed()

    missing = GitTarget(url=str(tmp_path / "gone.git"), workdir=tmp_path / "bot")
    with pytest.raises(GitRemoteError) as raised:
        await plan_code_rollback(missing, NONE)
    assert (
        str(raised.value)
        == f"Could not fetch from {tmp_path / 'gone.git'}: no repository at this path"
    )


async def test_the_working_copy_is_the_bots_own_and_used_one_operation_at_a_time(
    upstream: Upstream, tmp_path: Path
) -> None:
    three_commits(upstream)
    target = upstream.target(tmp_path / "bot")
    plans = await asyncio.gather(*(plan_code_rollback(target, NONE) for _ in range(4)))
    assert len({p.fingerprint for p in plans}) == 1
    assert pygit2.Repository(str(target.workdir)).is_bare

    checkout = tmp_path / "someones-checkout"
    pygit2.init_repository(str(checkout))
    with pytest.raises(GitError, match="is a checkout; workdir must be the bot's own"):
        await plan_code_rollback(upstream.target(checkout), NONE)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    with pytest.raises(GitError, match="is not empty and not a git repository"):
        await plan_code_rollback(upstream.target(tmp_path / "notes"), NONE)


async def test_a_push_that_loses_the_race_to_another_push_is_a_moved_branch(
    upstream: Upstream, git_http: GitHttpServer, tmp_path: Path
) -> None:
    """Someone's push lands while the bot's is in flight (after its fetch): refused, not
    forced, and said as a moved branch."""
    _first, second, _third = three_commits(upstream)
    upstream.branch_from("hotfix", second)
    theirs = upstream.commit({"hotfix.py": "ok\n"}, "Hotfix", BOB, branch="hotfix")
    target = GitTarget(url=git_http.url("remote.git"), workdir=tmp_path / "bot", token_env="T")
    credentials = credentials_from_environment(target, {"T": GIT_TOKEN})
    plan = await plan_code_rollback(target, credentials)
    # The remote takes their update first, while the bot's push is being received.
    upstream.hook(
        "pre-receive", f"env -u GIT_QUARANTINE_PATH git update-ref refs/heads/main {theirs}"
    )

    with pytest.raises(BranchMoved) as raised:
        await execute_code_rollback(target, credentials, plan, run_id=RUN, requester=REQUESTER)

    assert (raised.value.planned_tip, raised.value.current_tip) == (plan.tip, theirs)
    assert upstream.tip() == theirs
