"""The git fixtures (tests/git_repos.py), for the command line's code rollback tests."""

from tests.git_repos import upstream

__all__ = ["upstream"]
