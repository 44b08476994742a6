"""The services bundle: resources opened once by bot/ and handed to every service call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from services import names
from services.containers import Runtime
from services.environments import Environment
from services.errors import UnknownEnvironment
from services.pgtools import PgTools
from services.run_store import RunStore, process_identity
from services.scrub import Scrubber

# The commit deployed in an environment now (a full sha), None when it cannot be known:
# recorded in each backup's provenance (services/provenance.py).
DeployedCommit = Callable[[Environment], Awaitable[str | None]]


@dataclass(frozen=True)
class Services:
    environments: Mapping[str, Environment]
    runtime: Runtime
    http: aiohttp.ClientSession
    tools: PgTools
    store: RunStore
    # This process, as the owner of the runs it executes (leases in the run store).
    owner: str = field(default_factory=process_identity)
    # Client tool sets to choose from per run (see pgtools.choose_tools); empty: `tools`.
    tool_sets: tuple[PgTools, ...] = ()
    # How the deployed commit is known (the git service's); None: recorded as unknown.
    deployed_commit: DeployedCommit | None = None
    # The bot's configured secrets (tokens, passwords): kept out of what it shows.
    scrubber: Scrubber = field(default_factory=Scrubber)

    @property
    def tool_candidates(self) -> tuple[PgTools, ...]:
        return self.tool_sets or (self.tools,)

    def environment(self, name: str) -> Environment:
        names.check_environment_name(name)  # a clear answer for a hostile name (issue 8)
        try:
            return self.environments[name]
        except KeyError:
            raise UnknownEnvironment(name, sorted(self.environments)) from None
