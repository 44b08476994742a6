"""A target's configuration in words (check-config, the plan's header); no secret in it."""

from __future__ import annotations

from services.environments import DeployedSource, GitTarget
from services.git.remote_url import display_url


def describe_target(target: GitTarget) -> str:
    if target.deployed is DeployedSource.TAG:
        deployed = f"the newest tag {target.tag_pattern}"
    elif target.deployed is DeployedSource.ENDPOINT:
        deployed = f"{target.version_field} of {display_url(target.version_url or '')}"
    else:
        deployed = "the branch tip"
    if target.token_env:
        credentials = f"token from {target.token_env}"
    elif target.ssh_key:
        credentials = f"SSH key {target.ssh_key}"
    else:
        credentials = "no credentials"
    text = (
        f"branch {target.branch} of {display_url(target.url)}, deployed: {deployed}, "
        f"{credentials}, clone in {target.workdir}"
    )
    if target.version_url and target.version_wait_seconds:
        text += f", waits up to {target.version_wait_seconds:g} s for the new version"
    return text
