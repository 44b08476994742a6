"""The services bundle: resources opened once by bot/ and handed to every service call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from services import names
from services.containers import Runtime
from services.environments import Environment
from services.errors import UnknownEnvironment
from services.pgtools import PgTools
from services.run_store import RunStore, process_identity


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

    @property
    def tool_candidates(self) -> tuple[PgTools, ...]:
        return self.tool_sets or (self.tools,)

    def environment(self, name: str) -> Environment:
        names.check_environment_name(name)  # a clear answer for a hostile name (issue 8)
        try:
            return self.environments[name]
        except KeyError:
            raise UnknownEnvironment(name, sorted(self.environments)) from None
