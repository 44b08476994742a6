"""The engine's fixtures live in tests/conftest.py, the git ones in tests/git_repos.py;
these names are re-exported for imports (and the git fixtures for the tests here)."""

from tests.conftest import (
    Stage,
    change_after_backup,
    container_states,
    make_environment,
    make_services,
    wait_for_state,
)
from tests.git_repos import git_http, upstream, version_endpoint

__all__ = [
    "Stage",
    "change_after_backup",
    "container_states",
    "git_http",
    "make_environment",
    "make_services",
    "upstream",
    "version_endpoint",
    "wait_for_state",
]
