"""The sandbox workspace as a page in the browser, with the demo environment beside it."""

from sandbox.web.panel import EnvironmentPanel, rollback_running
from sandbox.web.server import Person, WorkspacePage

__all__ = ["EnvironmentPanel", "Person", "WorkspacePage", "rollback_running"]
